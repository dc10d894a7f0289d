"""End-to-end: reinforce a small world dataset with two tiny teachers and a tiny captioner, then read it back."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import NUM_AUGS, NUM_SYN, reinforce_config

import edgevl
from edgevl.cli import main
from edgevl.data.augment import decode_paug, replay, to_float_batch, to_uint8_tensor
from edgevl.data.readers import open_dataset
from edgevl.data.readers.reinforced import load_embeddings
from edgevl.data.transforms import load_image
from edgevl.errors import ConfigError
from edgevl.reinforce.generate import reinforce
from edgevl.reinforce.verify import verify
from edgevl.train.manifest import check_reinforced_data


def run(tiny, out: Path, **kw) -> dict:
    return reinforce(reinforce_config(tiny, out, **kw))


@pytest.fixture(scope="module")
def fp16_run(reference):
    return reference


def samples_of(path: Path) -> dict[str, dict[str, bytes]]:
    """Members of a tar grouped by sample key (webdataset's first-dot rule)."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            base = m.name.rsplit("/", 1)[-1]
            key, ext = base.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def test_manifest_records_sources_teachers_and_shards(tiny, fp16_run):
    out, manifest = fp16_run
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert [t["embed_dim"] for t in manifest["teachers"]] == [24, 16]
    assert [t["image_size"] for t in manifest["teachers"]] == [32, 48]
    vit_weights = Path(tiny.teachers[0]) / "model.safetensors"
    assert manifest["teachers"][0]["weights_sha256"] == hashlib.sha256(vit_weights.read_bytes()).hexdigest()
    assert manifest["embeddings"]["image_emb"] == [NUM_AUGS, 40]
    assert manifest["embeddings"]["text_emb"] == [1 + NUM_SYN, 40]
    assert [s["samples"] for s in manifest["shards"]] == [8, 8, 8]
    assert manifest["shards"][1]["skipped"] == {"bad_image": 1}
    assert manifest["totals"] == {"samples": 24, "skipped": 1, "input": 25, "skipped_by_kind": {"bad_image": 1}}
    for stats in manifest["shards"]:
        assert stats["sha256"] == hashlib.sha256((out / stats["name"]).read_bytes()).hexdigest()
    assert json.loads((out / "sizes.json").read_text()) == {s["name"]: 8 for s in manifest["shards"]}
    assert verify(out).ok


def test_trainer_manifest_check_and_reader_accept_the_output(fp16_run):
    out, _ = fp16_run
    spec = f"reinforced:{out}/{{00000000..00000002}}.tar?size=40"
    teachers, scales = check_reinforced_data(spec, None)
    assert [t.embed_dim for t in teachers] == [24, 16]
    samples = list(open_dataset(spec))
    assert len(samples) == 24
    s = samples[0]
    assert s.image.size == (40, 40)
    assert s.image_emb.shape == s.text_emb.shape == s.syn_text_emb.shape == (40,)
    assert s.caption and s.syn_caption


def _teacher(folder_spec: str):
    """An independently loaded teacher: model, its preprocess config and tokenizer."""
    folder = folder_spec.removeprefix("local-dir:")
    model = edgevl.create_model(f"local-dir:{folder}").eval()
    pp = model.preprocess_cfg
    return model, pp, edgevl.get_tokenizer(context_length=model.context_length)


def test_embeddings_recomputed_from_stored_augmentations_match(tiny, fp16_run):
    out, _ = fp16_run
    shard = samples_of(out / "00000001.tar")
    teachers = [_teacher(spec) for spec in tiny.teachers]
    checked = 0
    for members in list(shard.values())[:3]:
        image = load_image(members["png"])
        records = decode_paug(members["paug.json"])
        syn = json.loads(members["syn.json"])["syn_text"]
        emb = np.load(io.BytesIO(members["npz"]))
        assert emb["image_emb"].dtype == np.float16 and emb["image_emb"].shape == (NUM_AUGS, 40)
        assert len(records) == NUM_AUGS and len(syn) == NUM_SYN
        texts = [members["txt"].decode(), *syn]
        image_cols, text_cols = [], []
        with torch.no_grad():
            for model, pp, tokenizer in teachers:
                pixels = torch.stack([to_uint8_tensor(replay(image, r, pp["size"], pp["interpolation"]))
                                      for r in records])
                x = to_float_batch(pixels, pp["mean"], pp["std"])
                image_cols.append(F.normalize(model.encode_image(x), dim=-1))
                text_cols.append(F.normalize(model.encode_text(tokenizer(texts)), dim=-1))
        expect_img, expect_txt = torch.cat(image_cols, 1), torch.cat(text_cols, 1)
        stored_img = torch.from_numpy(emb["image_emb"].astype(np.float32))
        stored_txt = torch.from_numpy(emb["text_emb"].astype(np.float32))
        torch.testing.assert_close(stored_img, expect_img, atol=2e-3, rtol=0)
        torch.testing.assert_close(stored_txt, expect_txt, atol=2e-3, rtol=0)
        checked += 1
    assert checked == 3


def test_augmentations_and_captions_vary_per_sample(fp16_run):
    out, _ = fp16_run
    shard = samples_of(out / "00000000.tar")
    records = [json.loads(m["paug.json"])["param_aug"] for m in shard.values()]
    captions = [tuple(json.loads(m["syn.json"])["syn_text"]) for m in shard.values()]
    assert all(isinstance(r, str) for r in records)  # DataCompDR's string form
    assert len(set(records)) == len(records)
    assert len(set(captions)) == len(captions)
    assert all(c and "." not in c for row in captions for c in row)


@pytest.mark.parametrize("dtype, fmt, torch_dtype", [("bf16", None, torch.bfloat16), ("fp32", "npz", torch.float32),
                                                     ("fp16", "pth.gz", torch.float16)])
def test_storage_dtypes_and_formats(tiny, tmp_path, dtype, fmt, torch_dtype):
    data = str(Path(tiny.data).parent / "00000.tar")
    manifest = run(tiny, tmp_path, data=data, dtype=dtype, fmt=fmt)
    member = manifest["embeddings"]["member"]
    assert member == (fmt or "pth.gz")
    raw = {"__key__": "k", **{member: samples_of(tmp_path / "00000000.tar").popitem()[1][member]}}
    assert load_embeddings(raw)["image_emb"].dtype == torch_dtype
    assert verify(tmp_path).ok
    assert len(list(open_dataset(f"reinforced:{tmp_path}/00000000.tar?size=32"))) == 8


def test_table_input_is_split_into_virtual_shards_with_skips_counted(tiny, tmp_path):
    from edgevl.data.world import make

    make(tmp_path / "table", 7, fmt="csv", size=64)
    table = next((tmp_path / "table").glob("*.csv"))
    rows = table.read_text().splitlines()
    header = rows[0].split(",")
    broken = dict(zip(header, rows[1].split(",")))
    broken[header[0]] = "images/missing.png"
    table.write_text("\n".join([*rows, ",".join(broken[h] for h in header)]) + "\n")
    manifest = run(tiny, tmp_path / "out", data=f"csv:{table}", shard_size=3)
    assert [s["samples"] for s in manifest["shards"]] == [3, 3, 1]
    assert manifest["shards"][2]["skipped"] == {"missing_file": 1}
    assert manifest["totals"]["input"] == 8 and manifest["totals"]["samples"] == 7
    keys = [k for s in manifest["shards"] for k in samples_of(tmp_path / "out" / s["name"])]
    assert all("." not in k for k in keys) and len(set(keys)) == 7
    assert verify(tmp_path / "out").ok


def test_verify_reports_damage(tiny, fp16_run, tmp_path):
    import shutil

    out, _ = fp16_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    blob = bytearray((copy / "00000001.tar").read_bytes())
    blob[700] ^= 0xFF
    (copy / "00000001.tar").write_bytes(bytes(blob))
    (copy / "00000009.tar").write_bytes(b"")
    report = verify(copy)
    assert not report.ok
    text = "\n".join(report.problems)
    assert "00000001.tar: size or SHA-256 differs" in text and "00000009.tar: shard not in the manifest" in text
    assert main(["reinforce", "verify", str(out)]) == 0
    assert main(["reinforce", "verify", str(copy)]) == 1
    assert main(["reinforce", "verify", str(tmp_path)]) == 2  # no manifest: a one-line error


def test_bad_settings_are_config_errors(tiny, fp16_run, tmp_path):
    out, _ = fp16_run
    with pytest.raises(ConfigError, match="npz cannot hold bfloat16"):
        run(tiny, tmp_path, dtype="bf16", fmt="npz")
    with pytest.raises(ConfigError, match="different settings.*num_augs"):
        run(tiny, out, num_augs=4)
    with pytest.raises(ConfigError, match="needs weights"):
        run(tiny, tmp_path / "x", teachers=("world-teacher-vit",))


def test_resume_refuses_replaced_teacher_weights(tiny, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    data = str(Path(tiny.data).parent / "00000.tar")
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny.teachers[0], teacher)
    teachers = (str(teacher), tiny.teachers[1])
    out = tmp_path / "out"
    run(tiny, out, data=data, teachers=teachers)
    settings = json.loads((out / "_state" / "settings.json").read_text())
    assert set(settings["weights_sha256"]) == {*teachers, tiny.captioner}
    state = load_file(teacher / "model.safetensors")
    first = next(iter(state))
    save_file({**state, first: state[first] + 1.0}, teacher / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError, match=r"different settings \(weights_sha256: "):
        run(tiny, out, data=data, teachers=teachers)
    del settings["weights_sha256"]  # a run started before edgevl recorded the hashes resumes unchecked
    (out / "_state" / "settings.json").write_text(json.dumps(settings))
    assert run(tiny, out, data=data, teachers=teachers)["teachers"][0]["name"] == str(teacher)


def test_corrected_rerun_after_a_failed_start_is_accepted(tiny, tmp_path):
    data = str(Path(tiny.data).parent / "00000.tar")
    with pytest.raises(ConfigError, match="needs weights"):
        run(tiny, tmp_path, data=data, teachers=("world-teacher-vit",))
    manifest = run(tiny, tmp_path, data=data)  # same --out, now with valid teachers
    assert [t["name"] for t in manifest["teachers"]] == list(tiny.teachers)
    assert verify(tmp_path).ok
    with pytest.raises(ConfigError, match="different settings.*num_augs"):  # a finished shard still pins them
        run(tiny, tmp_path, data=data, num_augs=NUM_AUGS + 1)


def test_no_images_output_is_joined_back_with_the_input_shards(tiny, reference, tmp_path):
    ref_dir, _ = reference
    data = str(Path(tiny.data).parent / "00001.tar")  # the shard with the broken sample
    manifest = run(tiny, tmp_path, data=data, images=False)
    assert manifest["members"] == ["json", "paug.json", "syn.json", "npz"]
    assert verify(tmp_path).ok
    joined = list(open_dataset(f"reinforced:{tmp_path}/00000000.tar?images=wds:{data}&size=32"))
    included = list(open_dataset(f"reinforced:{ref_dir}/00000001.tar?size=32"))
    assert len(joined) == len(included) == 8
    for a, b in zip(joined, included):
        assert (a.key, a.caption, a.syn_caption, a.aug_index) == (b.key, b.caption, b.syn_caption, b.aug_index)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert torch.equal(a.image_emb, b.image_emb) and torch.equal(a.syn_text_emb, b.syn_text_emb)

    from edgevl.data.world import make

    make(tmp_path / "table", 2, fmt="csv", size=64)
    with pytest.raises(ConfigError, match="--no-images needs webdataset input"):
        run(tiny, tmp_path / "t", data=f"csv:{next((tmp_path / 'table').glob('*.csv'))}", images=False)
