"""Generator for reinforced (DataCompDR-layout) shards with damaged embeddings, augmentation records, syn captions."""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path

import numpy as np

from .common import Case, Verdicts, image_bytes, pickle_payload, random_bytes, tar_bytes

SIZE = 8  # image side and replay size
RECORDS = [[[0, 0, SIZE, SIZE], [[0, 0.0], [6, 0.3]]], [None, None]]  # two valid augmentations


def _arrays(rng: random.Random, n_syn: int) -> dict[str, np.ndarray]:
    image = np.array([[rng.gauss(0, 1) for _ in range(2)] for _ in RECORDS], dtype=np.float32)
    text = np.array([[rng.gauss(0, 1) for _ in range(2)] for _ in range(1 + n_syn)], dtype=np.float32)
    return {"image_emb": image, "text_emb": text}


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _pth_gz(arrays: dict, dtype: str = "bfloat16") -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({k: torch.from_numpy(np.asarray(v)).to(getattr(torch, dtype)) for k, v in arrays.items()}, buf)
    return gzip.compress(buf.getvalue())


def _embedding_damage(rng: random.Random, members: dict, arrays: dict, marker: Path) -> tuple[str, str]:
    """Replace the embedding member with a damaged one; returns (verdict, note)."""
    members.pop("npz", None)
    members.pop("pth.gz", None)
    kind = rng.choice(["pth_garbage", "gz_garbage", "pickle", "pickle", "npz_garbage", "npz_shape", "npz_shape",
                       "npz_missing", "npz_object", "npz_str", "pth_list", "none", "npz_int", "npz_3d"])
    if kind == "pth_garbage":
        members["pth.gz"] = gzip.compress(random_bytes(rng, 1, 300))
    elif kind == "gz_garbage":
        members["pth.gz"] = random_bytes(rng, 1, 300)
    elif kind == "pickle":
        payload = pickle_payload(rng, marker)
        members["pth.gz"] = gzip.compress(payload) if rng.random() < 0.8 else payload
    elif kind == "npz_garbage":
        members["npz"] = random_bytes(rng, 1, 300)
    elif kind == "npz_shape":
        image, text = arrays["image_emb"], arrays["text_emb"]
        members["npz"] = _npz(rng.choice([
            {"image_emb": image[0], "text_emb": text},  # 1-D image embeddings
            {"image_emb": np.concatenate([image, image]), "text_emb": text},  # 4 rows for 2 augmentations
            {"image_emb": image, "text_emb": text[:1]},  # no rows for the synthetic captions
            {"image_emb": image[:0], "text_emb": text},  # zero rows
        ]))
    elif kind == "npz_missing":
        members["npz"] = _npz({"image_emb": arrays["image_emb"]})
    elif kind == "npz_object":
        buf = io.BytesIO()
        np.savez(buf, image_emb=np.array([object(), 1], dtype=object), text_emb=arrays["text_emb"])
        members["npz"] = buf.getvalue()
    elif kind == "npz_str":
        members["npz"] = _npz({"image_emb": np.array([["a", "b"], ["c", "d"]]), "text_emb": arrays["text_emb"]})
    elif kind == "npz_3d":
        members["npz"] = _npz({"image_emb": arrays["image_emb"][None], "text_emb": arrays["text_emb"]})
    elif kind == "pth_list":
        import torch

        buf = io.BytesIO()
        torch.save(rng.choice([[torch.zeros(2)], {"image_emb": 3}, torch.zeros(2, 2)]), buf)
        members["pth.gz"] = gzip.compress(buf.getvalue())
    elif kind == "npz_int":  # integer embeddings: odd, but usable once converted to float
        members["npz"] = _npz({k: (v * 10).astype(np.int32) for k, v in arrays.items()})
        return "optional", "integer embeddings"
    return "bad", f"embeddings {kind}"


def _metadata_damage(rng: random.Random, members: dict) -> tuple[str, str]:
    """Damage paug.json, syn.json, json, txt or the image; returns (verdict, note)."""
    kind = rng.choice(["paug_notjson", "paug_list", "paug_str", "paug_box", "paug_op", "paug_empty", "paug_types",
                       "paug_nan", "paug_latin1", "paug_missing", "syn_list", "syn_str", "syn_empty", "syn_ints",
                       "syn_mixed", "syn_notjson", "syn_nested", "syn_missing", "syn_many", "json_bad", "txt_empty",
                       "txt_missing", "image_missing", "image_garbage", "url_latin1"])
    paug = {
        "paug_notjson": b'{"param_aug": [', "paug_list": json.dumps(RECORDS).encode(),
        "paug_str": b'{"param_aug": "not json at all"}',
        "paug_box": json.dumps({"param_aug": [[[0, 0, 99, 99], None]] * 2}).encode(),
        "paug_op": json.dumps({"param_aug": [[None, [[99, 0.5]]]] * 2}).encode(),
        "paug_empty": b'{"param_aug": []}',
        "paug_types": json.dumps({"param_aug": [[["a", "b", "c", "d"], {"x": 1}]] * 2}).encode(),
        "paug_nan": b'{"param_aug": [[null, [[0, NaN]]], [null, [[0, Infinity]]]]}',
        "paug_latin1": '{"param_aug": "café"}'.encode("latin-1"),
    }
    syn = {
        "syn_list": b'["syn a", "syn b"]', "syn_str": b'{"syn_text": "just a string"}',
        "syn_empty": b'{"syn_text": []}', "syn_ints": b'{"syn_text": [1, 2]}',
        "syn_notjson": b"{syn", "syn_nested": b'{"syn_text": [["a"], ["b"]]}',
    }
    if kind in paug:
        members["paug.json"] = paug[kind]
    elif kind in syn:
        members["syn.json"] = syn[kind]
    elif kind.endswith("_missing"):
        members.pop({"paug": "paug.json", "syn": "syn.json", "txt": "txt", "image": "png"}[kind.split("_")[0]])
    elif kind == "syn_mixed":  # one usable synthetic caption among unusable ones
        members["syn.json"] = b'{"syn_text": ["fine", 5]}'
        return "optional", "mixed syn_text"
    elif kind == "syn_many":  # more synthetic captions than embedding rows
        members["syn.json"] = json.dumps({"syn_text": [f"s{i}" for i in range(12)]}).encode()
        return "optional", "syn_text longer than text_emb"
    elif kind == "json_bad":
        members["json"] = rng.choice([b"{bad", b"[1, 2]", b"\xff\xfe"])
        return "optional", "bad json member"
    elif kind == "txt_empty":
        members["txt"] = b"  "
    elif kind == "image_garbage":
        members["png"] = random_bytes(rng, 0, 200)
    elif kind == "url_latin1":
        members["url.txt"] = "http://x/café".encode("latin-1")
        return "good", "latin-1 url.txt"
    return "bad", kind.replace("_", " ")


def reinforced_case(rng: random.Random, tmp: Path) -> Case:
    """1-2 reinforced shards (image and caption inside, no companion) of 3-12 samples, some damaged."""
    root = tmp / "dr"
    root.mkdir(parents=True, exist_ok=True)
    marker = tmp / "PICKLE_EXECUTED"
    verdicts = Verdicts()
    count = rng.randint(1, 2)
    for s in range(count):
        entries = []
        for n in range(rng.randint(3, 12)):
            key = f"{s}{n:011d}"
            syn = [f"synthetic {key} {i}" for i in range(2)]
            arrays = _arrays(rng, len(syn))
            members = {
                "png": image_bytes(rng, size=(SIZE, SIZE)), "txt": f"real caption {key}".encode(),
                "paug.json": json.dumps({"param_aug": json.dumps(RECORDS) if rng.random() < 0.5 else RECORDS}).encode(),
                "syn.json": json.dumps({"syn_text": syn}).encode(),
                "json": json.dumps({"uid": key}).encode(), "url.txt": b"https://example.com/x.jpg",
            }
            if rng.random() < 0.5:
                members["npz"] = _npz(arrays)
            else:
                members["pth.gz"] = _pth_gz(arrays, rng.choice(["bfloat16", "float32"]))
            roll = rng.random()
            if roll < 0.45:
                verdict, note = "good", "good"
            elif roll < 0.75:
                verdict, note = _embedding_damage(rng, members, arrays, marker)
            else:
                verdict, note = _metadata_damage(rng, members)
            verdicts.add(key, verdict, f"{s}/{n} {note}")
            entries += [(f"{key}.{suffix}", data, "file") for suffix, data in members.items()]
        (root / f"{s}.tar").write_bytes(tar_bytes(entries)[0])
    shards = f"{{0..{count - 1}}}" if count > 1 else "0"
    spec = f"reinforced:{root}/{shards}.tar?size={SIZE}"
    return Case("dataset", spec, verdicts.good, verdicts.describe(f"reinforced x{count}"),
                optional_keys=verdicts.optional, min_skips=verdicts.bad, marker=str(marker))
