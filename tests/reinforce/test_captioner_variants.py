"""`reinforce run` with teachers only (no captioner) and with two captioners side by side: the stored layout,
`verify`, the reader and `edgevl train --mode reinforced` on each; the first captioner's output is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_generate import samples_of
from tiny_models import NUM_AUGS, NUM_SYN, reinforce_config

from edgevl.cli import main
from edgevl.data.readers import open_dataset
from edgevl.errors import ConfigError
from edgevl.models.lightcap.config import get_lightcap_config
from edgevl.models.lightcap.model import LightCap
from edgevl.models.registry import add_model_config
from edgevl.reinforce.config import ReinforceConfig
from edgevl.reinforce.generate import reinforce
from edgevl.reinforce.verify import verify
from edgevl.train.losses import DistillConfig, distill_terms, reinforced_loss
from edgevl.train.manifest import check_reinforced_data
from tiny_configs import TINY_MCI


@pytest.fixture(scope="module")
def first_shard(tiny) -> str:
    return str(Path(tiny.data).parent / "00000.tar")


@pytest.fixture(scope="module")
def teacher_only(tiny, first_shard) -> tuple[Path, dict]:
    out = tiny.root / "teacher-only"
    return out, reinforce(reinforce_config(tiny, out, data=first_shard, captioner=None, num_syn_captions=None))


@pytest.fixture(scope="module")
def second_captioner(tiny) -> str:
    """Another random LightCap (other weights, 6-token captions)."""
    torch.manual_seed(7)
    cfg = get_lightcap_config("lightcap-tiny").replace(
        name="lightcap-test-b", image_size=32, hidden=16, layers=1, heads=2, ffn=32, max_caption_tokens=6,
        num_concepts=8, concept_top_k=2, concept_joint_dim=16, concept_hidden=16,
        backbone={"type": "clip_resnet", "layers": [1, 1, 1, 1], "width": 8})
    LightCap(cfg).eval().save_pretrained(tiny.root / "captioner-b")
    return str(tiny.root / "captioner-b")


@pytest.fixture(scope="module")
def two_captioners(tiny, first_shard, second_captioner) -> tuple[Path, dict]:
    out = tiny.root / "two-captioners"
    captioners = f"{tiny.captioner},{second_captioner}"
    return out, reinforce(reinforce_config(tiny, out, data=first_shard, captioner=captioners))


# -------------------------------------------------------------------------------------------- teacher-only
def test_teacher_only_layout_verifies_and_keeps_the_teacher_embeddings(tiny, reference, teacher_only):
    out, manifest = teacher_only
    assert manifest["captioners"] == [] and manifest["num_syn_captions"] == 0
    assert manifest["embeddings"]["text_emb"] == [1, 40]
    assert "teacher-only" in manifest["embeddings"]["text_rows"]
    assert manifest["settings"]["captioner"] is None and manifest["settings"]["num_syn_captions"] == 0
    assert verify(out).ok
    ref_dir, _ = reference
    stored, with_captions = samples_of(out / "00000000.tar"), samples_of(ref_dir / "00000000.tar")
    assert stored.keys() == with_captions.keys()
    for key, members in stored.items():
        assert json.loads(members["syn.json"]) == {"syn_text": []}
        assert members["paug.json"] == with_captions[key]["paug.json"]
        emb, ref = (open_dataset_embeddings(m) for m in (members, with_captions[key]))
        assert emb["text_emb"].shape == (1, 40)
        assert torch.equal(emb["image_emb"], ref["image_emb"]) and torch.equal(emb["text_emb"], ref["text_emb"][:1])


def open_dataset_embeddings(members: dict[str, bytes]) -> dict[str, torch.Tensor]:
    from edgevl.data.readers.reinforced import load_embeddings

    return load_embeddings({"__key__": "k", "npz": members["npz"]})


def test_teacher_only_samples_have_no_synthetic_caption(teacher_only):
    out, _ = teacher_only
    spec = f"reinforced:{out}/00000000.tar?size=32"
    teachers, _ = check_reinforced_data(spec, None)
    assert [t.embed_dim for t in teachers] == [24, 16]
    samples = list(open_dataset(spec))
    assert len(samples) == 8
    assert all(s.caption and s.syn_caption is None and s.syn_text_emb is None for s in samples)
    assert all(s.image_emb.shape == s.text_emb.shape == (40,) for s in samples)


def test_syn_json_without_captions_is_still_skipped_when_the_manifest_promises_some(teacher_only, tmp_path):
    import shutil

    out, _ = teacher_only
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "num_syn_captions": 2}))
    ds = open_dataset(f"reinforced:{copy}/00000000.tar?size=32")
    assert list(ds) == [] and ds.skip_log.counts == {"missing_caption": 8}
    assert verify(copy).problems[0] == "manifest: 2 synthetic captions per image for the captioner keys []"


def test_reinforced_loss_without_synthetic_captions_is_the_real_caption_term():
    g = torch.Generator().manual_seed(0)
    unit = [torch.nn.functional.normalize(torch.randn(4, d, generator=g), dim=-1) for d in (6, 6, 5, 5)]
    cfg = DistillConfig((3, 2), (100.0, 50.0), lam=0.7, real_weight=0.8, syn_weight=1.0)
    scale = torch.tensor(20.0)
    parts = reinforced_loss(unit[0], unit[1], None, scale, unit[2], unit[3], None, cfg)
    clip, kd = distill_terms(unit[0], unit[1], scale, unit[2], unit[3], cfg)
    assert set(parts) == {"loss", "clip_real", "kd_real"}
    assert parts["loss"].item() == pytest.approx(0.8 * (0.3 * clip.item() + 0.7 * kd.item()))
    full = reinforced_loss(unit[0], unit[1], unit[1], scale, unit[2], unit[3], unit[3], cfg)
    assert full["loss"].item() == pytest.approx(parts["loss"].item() + (0.3 * clip.item() + 0.7 * kd.item()))


def test_train_reinforced_on_teacher_only_data(teacher_only, two_captioners, tmp_path):
    config = tmp_path / "tiny-mci-teacher-only.json"
    config.write_text(json.dumps(TINY_MCI))
    add_model_config(config)
    for name, (out, _) in (("teachers", teacher_only), ("captions", two_captioners)):
        args = ["train", "--model", "tiny-mci-teacher-only", "--train-data", f"reinforced:{out}/00000000.tar",
                "--mode", "reinforced", "--batch-size", "4", "--steps", "2", "--warmup", "1", "--log-every", "1",
                "--logs", str(tmp_path / "runs"), "--name", name, "--distill-lambda", "0.5"]
        assert main(args) == 0
    metrics = {name: [json.loads(line) for line in (tmp_path / "runs" / name / "metrics.jsonl").open()]
               for name in ("teachers", "captions")}
    assert [m["step"] for m in metrics["teachers"]] == [1, 2]
    assert all("train/kd_real" in m and "train/clip_syn" not in m for m in metrics["teachers"])
    assert all({"train/kd_real", "train/kd_syn", "train/clip_syn"} <= set(m) for m in metrics["captions"])
    first = metrics["teachers"][0]
    assert first["train/loss"] == pytest.approx(0.5 * first["train/clip_real"] + 0.5 * first["train/kd_real"], rel=1e-5)


def test_caption_count_flags_must_agree_with_the_captioner(tiny, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--num-syn-captions 2 needs --captioner"):
        ReinforceConfig(data=tiny.data, out=str(tmp_path), teachers=tiny.teachers, num_syn_captions=2).check()
    with pytest.raises(ConfigError, match="--num-syn-captions must be >= 1 with --captioner, got 0"):
        ReinforceConfig(data=tiny.data, out=str(tmp_path), teachers=tiny.teachers, captioner=tiny.captioner,
                        num_syn_captions=0).check()
    settings = ReinforceConfig(data=tiny.data, out=str(tmp_path), teachers=tiny.teachers).settings()
    assert settings["num_syn_captions"] == 0 and settings["captioner"] is None
    args = ["reinforce", "run", "--data", tiny.data, "--out", str(tmp_path / "x"), "--teachers",
            ",".join(tiny.teachers), "--num-syn-captions", "3", "--no-progress"]
    assert main(args) == 2
    assert "--num-syn-captions 3 needs --captioner" in capsys.readouterr().err


def test_cli_without_captioner_writes_teacher_only_data(tiny, first_shard, teacher_only, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["reinforce", "run", "--data", first_shard, "--out", str(out), "--teachers", ",".join(tiny.teachers),
            "--num-augs", str(NUM_AUGS), "--batch-size", "4", "--no-progress"]
    assert main(args) == 0
    assert "wrote 8 samples in 1 shards" in capsys.readouterr().out
    assert (out / "00000000.tar").read_bytes() == (teacher_only[0] / "00000000.tar").read_bytes()
    assert main(["reinforce", "verify", str(out)]) == 0


# ------------------------------------------------------------------------------------------ two captioners
def test_two_captioners_stored_side_by_side(tiny, reference, two_captioners, second_captioner):
    out, manifest = two_captioners
    assert [(c["key"], c["name"]) for c in manifest["captioners"]] == [("syn_text", tiny.captioner),
                                                                       ("syn_text_1", second_captioner)]
    assert manifest["num_syn_captions"] == NUM_SYN
    assert [c["backbone_trained"] for c in manifest["captioners"]] == [False, False]  # random test captioners
    assert manifest["embeddings"]["text_emb"] == [1 + 2 * NUM_SYN, 40]
    assert manifest["embeddings"]["text_rows"] == ("row 0: real caption (txt); rows 1..2: syn.json syn_text[s]; "
                                                   "rows 3..4: syn.json syn_text_1[s]")
    assert verify(out).ok
    ref_dir, _ = reference
    stored, one = samples_of(out / "00000000.tar"), samples_of(ref_dir / "00000000.tar")
    for key, members in stored.items():
        syn = json.loads(members["syn.json"])
        assert list(syn) == ["syn_text", "syn_text_1"] and len(syn["syn_text_1"]) == NUM_SYN
        assert syn["syn_text"] == json.loads(one[key]["syn.json"])["syn_text"]  # the first captioner is unchanged
        emb, ref = open_dataset_embeddings(members), open_dataset_embeddings(one[key])
        assert torch.equal(emb["text_emb"][: 1 + NUM_SYN], ref["text_emb"])
    assert {json.loads(m["syn.json"])["syn_text_1"][0] for m in stored.values()} != {
        json.loads(m["syn.json"])["syn_text"][0] for m in stored.values()}


def test_reader_draws_from_every_captioner_with_the_matching_embedding_row(two_captioners):
    out, _ = two_captioners
    stored = samples_of(out / "00000000.tar")
    drawn = set()
    for seed in range(4):
        for s in open_dataset(f"reinforced:{out}/00000000.tar?size=32&seed={seed}"):
            syn = json.loads(stored[s.key]["syn.json"])
            key = "syn_text" if s.syn_caption in syn["syn_text"] else "syn_text_1"
            row = 1 + syn[key].index(s.syn_caption) + (NUM_SYN if key == "syn_text_1" else 0)
            table = open_dataset_embeddings(stored[s.key])["text_emb"]
            assert torch.equal(s.syn_text_emb, table[row].float())
            drawn.add(key)
    assert drawn == {"syn_text", "syn_text_1"}
    only_second = list(open_dataset(f"reinforced:{out}/00000000.tar?size=32&syn_key=^syn_text_1$"))
    assert all(s.syn_caption in json.loads(stored[s.key]["syn.json"])["syn_text_1"] for s in only_second)


def test_a_captioner_with_an_untrained_backbone_is_warned_about(tiny, capsys):
    from edgevl.reinforce.captioner import load_captioner
    from edgevl.world_models import pretrained_dir

    assert load_captioner(tiny.captioner, torch.device("cpu")).backbone_trained is False
    assert f"captioner {tiny.captioner!r} has an UNTRAINED frozen backbone" in capsys.readouterr().err
    assert load_captioner(str(pretrained_dir("captioner")), torch.device("cpu")).describe()["backbone_trained"] is True
    assert "UNTRAINED" not in capsys.readouterr().err
