"""Damaged weight files (`load_state_dict`) and training checkpoint folders (`load_training_checkpoint`)."""

from __future__ import annotations

import io
import json
import random
import struct
from pathlib import Path
from typing import Any

import torch

from .common import Case, pickle_payload, random_bytes


def _state_dict(rng: random.Random) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(rng.getrandbits(32))
    dtype = rng.choice([torch.float32, torch.float32, torch.float16, torch.bfloat16])
    rows, cols = rng.randint(1, 4), rng.randint(1, 4)
    return {
        "layer.weight": torch.randn(rows, cols, generator=gen).to(dtype),
        "layer.bias": torch.randn(cols, generator=gen).to(dtype),
        "scale": torch.tensor(rng.uniform(0.5, 2.0)),
        "steps": torch.tensor(rng.randint(0, 100), dtype=torch.int64),
    }


def _safetensors(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _lying_header(rng: random.Random, blob: bytes) -> tuple[bytes, str]:
    """A safetensors file whose header length or data offsets lie."""
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    choice = rng.choice(["longer", "shorter", "huge", "zero", "offsets", "dtype", "notjson"])
    if choice in ("longer", "shorter", "huge", "zero"):
        claimed = {"longer": length + rng.randint(1, 64), "shorter": max(0, length - rng.randint(1, length)),
                   "huge": rng.choice([1 << 40, (1 << 64) - 1, len(blob)]), "zero": 0}[choice]
        return struct.pack("<Q", claimed) + blob[8:], f"header length {choice}"
    name = rng.choice([k for k in header if k != "__metadata__"])
    if choice == "offsets":
        begin, end = header[name]["data_offsets"]
        header[name]["data_offsets"] = rng.choice([[begin, end + 4096], [end, begin], [begin, 1 << 62]])
    elif choice == "dtype":
        sizes = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I8": 1}
        # a dtype of another element size (or no dtype at all): a same-size lie would be a well-formed file
        wrong = [d for d, n in sizes.items() if n != sizes.get(header[name]["dtype"])] + ["Q9"]
        header[name]["dtype"] = rng.choice(wrong)
    else:
        text = b"{not json" + b" " * max(0, length - 9)
        return blob[:8] + text[:length] + blob[8 + length :], "header not JSON"
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + length :], f"header {choice} lies"


def _damage(rng: random.Random, blob: bytes, fmt: str, marker: Path, tensors: dict[str, torch.Tensor],
            weights: bool = True) -> tuple[bytes | None, str]:
    """(damaged bytes or None for a missing file, note) of a blob of format `fmt` ('safetensors' or 'pt').

    `weights=False` (a training state file) leaves out the damages that only make sense for weights.
    """
    kinds = ["truncated", "truncated", "random", "zero", "missing", "wrong_format"]
    kinds += ["nonfinite"] if weights else []
    kinds += ["lying_header", "lying_header"] if fmt == "safetensors" else ["pickle", "pickle"]
    kinds += ["not_tensors"] if weights and fmt == "pt" else []
    kind = rng.choice(kinds)
    if kind == "truncated":
        cut = rng.randrange(len(blob))
        return blob[:cut], f"truncated at {cut}/{len(blob)}"
    if kind == "random":
        return random_bytes(rng, 1, 2000), "random bytes"
    if kind == "zero":
        return b"", "zero bytes"
    if kind == "missing":
        return None, "missing file"
    if kind == "nonfinite":
        bad = {k: v.clone() for k, v in tensors.items()}
        flat = bad["layer.weight"].view(-1)
        flat[rng.randrange(flat.numel())] = rng.choice([float("nan"), float("inf"), float("-inf")])
        return (_safetensors(bad) if fmt == "safetensors" else _torch_bytes(bad)), "non-finite weight"
    if kind == "wrong_format":
        return (_torch_bytes(tensors) if fmt == "safetensors" else _safetensors(tensors)), "other format inside"
    if kind == "lying_header":
        return _lying_header(rng, blob)
    if kind == "pickle":
        return pickle_payload(rng, marker, tensors), "pickle payload"
    obj = rng.choice([[1, 2], {"layer.weight": 3}, {}, 7, {"state_dict": {"a": "b"}}, "text"])
    return _torch_bytes(obj), f"holds {type(obj).__name__} not tensors"


def weights_case(rng: random.Random, tmp: Path) -> Case:
    """A `.safetensors` or `.pt` weights file, intact (half the time) or damaged."""
    tmp.mkdir(parents=True, exist_ok=True)
    tensors = _state_dict(rng)
    fmt = rng.choice(["safetensors", "pt"])
    wrapped = fmt == "pt" and rng.random() < 0.3
    payload = {"state_dict": tensors} if wrapped else tensors
    blob = _safetensors(tensors) if fmt == "safetensors" else _torch_bytes(payload)
    path = tmp / f"weights.{fmt}"
    marker = tmp / "PICKLE_EXECUTED"
    if rng.random() < 0.35:
        path.write_bytes(blob)
        return Case("weights", str(path), set(), f"intact .{fmt}{' (wrapped)' if wrapped else ''}", expected=tensors,
                    error_path=str(path), marker=str(marker))
    data, note = _damage(rng, blob, fmt, marker, tensors)
    if data is not None:
        path.write_bytes(data)
    return Case("weights", str(path), set(), f".{fmt}: {note}", error_path=str(path), marker=str(marker))


def training_case(rng: random.Random, tmp: Path) -> Case:
    """A training checkpoint folder written by `save_checkpoint`, intact or with one damaged file."""
    from edgevl.train.checkpoint import save_checkpoint

    tensors = _state_dict(rng)
    ema = _state_dict(rng) if rng.random() < 0.4 else None
    state = {"step": rng.randint(0, 1000), "lr": rng.random(), "positions": [rng.randint(0, 9) for _ in range(3)],
             "optimizer": {"exp_avg": {k: torch.zeros_like(v) for k, v in tensors.items()}}}
    folder = save_checkpoint(tmp / "run", 5, tensors, state, ema_state=ema)
    marker = tmp / "PICKLE_EXECUTED"
    if rng.random() < 0.35:
        return Case("training", str(folder), set(), "intact training checkpoint", expected=(tensors, ema, state),
                    error_path=str(folder), marker=str(marker))
    names = ["model.safetensors", "state.pt"] + (["ema.safetensors"] if ema is not None else [])
    name = rng.choice(names)
    target = folder / name
    fmt = "pt" if name.endswith(".pt") else "safetensors"
    source = {"model.safetensors": tensors, "ema.safetensors": ema, "state.pt": tensors}[name]
    data, note = _damage(rng, target.read_bytes(), fmt, marker, source, weights=fmt == "safetensors")
    if data is None and name == "ema.safetensors":  # the EMA weights are optional: a folder without them is fine
        target.unlink()
        return Case("training", str(folder), set(), "no ema.safetensors", expected=(tensors, None, state),
                    error_path=str(folder), marker=str(marker))
    if data is None:
        target.unlink()
    else:
        target.write_bytes(data)
    return Case("training", str(folder), set(), f"{name}: {note}", error_path=str(folder), marker=str(marker))
