"""A Hugging Face hub cache written by hand in huggingface_hub's on-disk layout, for offline tests."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch
from safetensors.torch import save


def tensor_bytes(state_dict: dict[str, torch.Tensor], suffix: str) -> bytes:
    """A state dict as the bytes of a `.safetensors` or pickled torch file."""
    tensors = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    if suffix == ".safetensors":
        return save(tensors)
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def add_snapshot(root: Path, repo: str, files: dict[str, bytes], commit: str, ref: str | None = "main") -> Path:
    """Write `files` as blobs named by their sha256, link them from `snapshots/<commit>/` with relative symlinks
    and point `refs/<ref>` at the commit, as huggingface_hub does; returns the snapshot folder."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    for name, data in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref is not None:
        (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)
    return snapshot
