"""A shard in the published DataCompDR layout, written by hand, is read correctly: no image or caption in the
shard (joined from a companion image-caption webdataset by key or by uid), `paug.json` in the string form,
float32 `npz` (DataCompDR-12M) or bfloat16 `pth.gz` (DataCompDR-12M-bf16) with a 6-row `text_emb`."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgevl.data.augment import replay
from edgevl.data.readers import open_dataset
from edgevl.data.transforms import load_image
from edgevl.train.manifest import check_reinforced_data

N_AUG, DIM = 3, 8
RECORDS = [
    [[14, 3, 30, 41], [[0, 0.0], [6, 0.27]]],
    [[0, 0, 48, 40], [[9, -0.27], [3, -12.0]]],
    [[5, 7, 20, 20], [[13, 0.0], [1, 0.09]]],
]


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 56, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def embeddings(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    image, text = rng.normal(size=(N_AUG, DIM)), rng.normal(size=(6, DIM))
    for block in (slice(0, 4), slice(4, 8)):  # two teachers of 4 dims, each block unit-norm
        image[:, block] /= np.linalg.norm(image[:, block], axis=1, keepdims=True)
        text[:, block] /= np.linalg.norm(text[:, block], axis=1, keepdims=True)
    return {"image_emb": image.astype(np.float32), "text_emb": text.astype(np.float32)}


def embedding_member(arrays: dict[str, np.ndarray], layout: str) -> dict[str, bytes]:
    if layout == "npz":
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return {"npz": buf.getvalue()}
    buf = io.BytesIO()
    torch.save({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in arrays.items()}, buf)
    return {"pth.gz": gzip.compress(buf.getvalue())}


def write_datacompdr(root: Path, layout: str, companion_keys: list[str]) -> dict:
    """Two DataCompDR samples and their companion DataComp samples; returns what each sample holds."""
    truth, dr, dc = {}, [], []
    for i, dc_key in enumerate(companion_keys):
        key, uid = f"{i:012d}", f"{i:02d}" + "ab" * 15
        syn = [f"synthetic caption {i} number {s}" for s in range(5)]
        arrays = embeddings(i)
        dr.append((key, {
            "url.txt": f"https://example.com/{i}.jpg".encode(),
            "syn.json": json.dumps({"syn_text": syn}).encode(),
            "paug.json": json.dumps({"param_aug": json.dumps(RECORDS)}).encode(),
            **embedding_member(arrays, layout),
            "json": json.dumps({"uid": uid, "sha256": "0" * 64}).encode(),
        }))
        image = jpeg(i)
        uid_json = json.dumps({"uid": uid}).encode()
        dc.append((dc_key, {"jpg": image, "txt": f"real caption {i}".encode(), "json": uid_json}))
        truth[key] = {"image": image, "syn": syn, "arrays": arrays, "caption": f"real caption {i}"}
    write_tar(root / "dr" / "00000000.tar", dr)
    write_tar(root / "dc" / "00000000.tar", dc)
    manifest = {"teachers": [{"name": "ViT-L-14:openai", "embed_dim": 4, "logit_scale": 100.0},
                             {"name": "ViT-L-14:datacomp_xl_s13b_b90k", "embed_dim": 4, "logit_scale": 100.0}]}
    (root / "dr" / "manifest.json").write_text(json.dumps(manifest))
    return truth


@pytest.mark.parametrize("layout, join", [("npz", "key"), ("pth.gz", "key"), ("npz", "uid")])
def test_datacompdr_shard_joined_with_companion_images(tmp_path, layout, join):
    companion_keys = [f"{i:012d}" for i in range(2)] if join == "key" else ["img-a", "img-b"]
    truth = write_datacompdr(tmp_path, layout, companion_keys)
    spec = (f"reinforced:{tmp_path}/dr/00000000.tar?images=wds:{tmp_path}/dc/00000000.tar"
            f"&size=24&join={join}&seed=3")
    samples = list(open_dataset(spec))
    assert sorted(s.key for s in samples) == sorted(truth)
    tol = 0 if layout == "npz" else 1e-2
    for sample in samples:
        want = truth[sample.key]
        j = sample.aug_index
        expected = replay(load_image(want["image"]), RECORDS[j], size=24, interpolation="bicubic")
        assert np.array_equal(np.asarray(sample.image), np.asarray(expected))
        assert sample.caption == want["caption"]
        s = want["syn"].index(sample.syn_caption)
        arrays = want["arrays"]
        torch.testing.assert_close(sample.image_emb, torch.from_numpy(arrays["image_emb"][j]), atol=tol, rtol=0)
        torch.testing.assert_close(sample.text_emb, torch.from_numpy(arrays["text_emb"][0]), atol=tol, rtol=0)
        torch.testing.assert_close(sample.syn_text_emb, torch.from_numpy(arrays["text_emb"][1 + s]), atol=tol, rtol=0)
        assert sample.meta["source_url"].startswith("https://example.com/")
    teachers, scales = check_reinforced_data(spec, None)
    assert [t.embed_dim for t in teachers] == [4, 4] and scales == (100.0, 100.0)
