"""Reading tensor files: the one place where a weights or checkpoint file with any kind of damage becomes one error.

Every reader of `.safetensors` and of pickled torch files (`.pt`, `.pth`, `.bin`, training `state.pt`, the
`pth.gz` members of reinforced shards) goes through here. Pickles are read with `torch.load(weights_only=True)`,
so a payload that would run code is refused unexecuted. Whatever goes wrong — a truncated or garbled file, a
lying header, a refused payload, NaN or infinite values — the caller gets a one-line `CheckpointError` that
names the file, never a library's own exception.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from edgevl.errors import CheckpointError

Source = str | os.PathLike | bytes


def _name(source: Source, name: str | None) -> str:
    return name or ("<bytes>" if isinstance(source, bytes) else str(source))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__


def read_safetensors(source: Source, name: str | None = None, finite: bool = True) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (or its bytes), on CPU; damage or non-finite values raise `CheckpointError`."""
    from safetensors.torch import load, load_file

    what = _name(source, name)
    try:
        tensors = load(source) if isinstance(source, bytes) else load_file(os.fspath(source))
    except Exception as exc:  # SafetensorError, OSError, MemoryError, ...: all mean "damaged"
        raise CheckpointError(f"cannot read {what!r}: damaged or not a safetensors file ({_one_line(exc)})") from exc
    if finite:
        check_finite(tensors, what)
    return tensors


def read_torch(source: Source, name: str | None = None, finite: bool = True) -> Any:
    """A pickled torch file (or its bytes) read with `weights_only=True`; anything wrong raises `CheckpointError`."""
    import pickle

    what = _name(source, name)
    try:
        obj = torch.load(io.BytesIO(source) if isinstance(source, bytes) else Path(source), map_location="cpu",
                         weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"refusing to load {what!r}: not a plain tensor file ({_one_line(exc)})") from exc
    except Exception as exc:  # truncation, zip damage, garbage: every kind is one error
        raise CheckpointError(f"cannot read {what!r}: damaged or not a torch file ({_one_line(exc)})") from exc
    if finite:
        check_finite(obj, what)
    return obj


def _float_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _float_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _float_tensors(value, f"{prefix}[{i}]")


def check_finite(obj: Any, name: str) -> None:
    """Raise `CheckpointError` naming the first tensor (in dicts/lists, recursively) that holds NaN or infinity."""
    for key, tensor in _float_tensors(obj):
        if tensor.numel() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{name!r} holds non-finite values (NaN or infinity) in {key or 'its tensor'}; "
                                  "the weights are unusable")
