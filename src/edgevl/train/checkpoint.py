"""Training checkpoints: `runs/<name>/checkpoints/step_<k>/{model.safetensors, ema.safetensors, state.pt}`.

Weights are safetensors; `state.pt` holds the optimizer, step, RNG states and data positions of every rank as
plain tensors/dicts, read back with `torch.load(weights_only=True)`. A checkpoint is written into a temporary
folder next to the final one and renamed into place, so a crash or a full disk mid-write leaves the previous
checkpoints untouched; after a successful save only the newest `keep_last` are kept. Extra text `files` (a
model's `open_clip_config.json`) written along make each checkpoint a model folder; `save_model_folder` writes
the run's final model folder the same way.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from edgevl.errors import CheckpointError
from edgevl.io import fsync_path
from edgevl.run_layout import CHECKPOINT_DIR, list_checkpoints
from edgevl.tensor_files import read_safetensors, read_torch

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous, unshared CPU tensors
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _write_folder(final: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary sibling of `final` with `fill(tmp)`, fsync it and rename it onto `final`."""
    root = final.parent
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        fill(tmp)
        fsync_path(tmp)
        if final.exists():  # re-saving (e.g. a step after a NaN stop): swap the old folder out first
            old = root / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_path(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_text_files(folder: Path, files: Mapping[str, str] | None) -> None:
    for name, text in (files or {}).items():
        with open(folder / name, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model_state: dict[str, torch.Tensor],
    state: dict[str, Any],
    ema_state: dict[str, torch.Tensor] | None = None,
    keep_last: int = 3,
    files: Mapping[str, str] | None = None,
) -> Path:
    """Atomically write checkpoint `step_<step>` (plus text `files`, name -> content) and prune older ones."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"

    def fill(tmp: Path) -> None:
        save_file(_tensors(model_state), str(tmp / MODEL_FILE))
        if ema_state is not None:
            save_file(_tensors(ema_state), str(tmp / EMA_FILE))
        _write_text_files(tmp, files)
        with open(tmp / STATE_FILE, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())

    try:
        _write_folder(final, fill)
    except Exception as exc:  # a full disk shows up as OSError, SafetensorError or RuntimeError
        previous = [p.name for p in list_checkpoints(run_dir)]
        kept = f"; kept {previous[-1]}" if previous else ""
        raise CheckpointError(f"could not write checkpoint step_{step} in {root} ({exc}){kept}") from exc
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_model_folder(folder: str | os.PathLike, model_state: dict[str, torch.Tensor],
                      files: Mapping[str, str]) -> Path:
    """Atomically (re)write a model folder: `model.safetensors` plus text `files` such as `open_clip_config.json`."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)

    def fill(tmp: Path) -> None:
        save_file(_tensors(model_state), str(tmp / MODEL_FILE), metadata={"format": "pt"})
        _write_text_files(tmp, files)

    try:
        _write_folder(folder, fill)
    except Exception as exc:
        raise CheckpointError(f"could not write the model folder {folder} ({exc})") from exc
    return folder


def resolve_resume(resume: str, run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint folder for `--resume`: 'latest' (None if the run has none yet) or a folder path."""
    if resume == "latest":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if path.is_dir() and not (path / STATE_FILE).is_file():
        found = list_checkpoints(path)  # a run folder
        if found:
            return found[-1]
    if not (path / MODEL_FILE).is_file() or not (path / STATE_FILE).is_file():
        raise CheckpointError(f"--resume {resume!r} is not a checkpoint folder (needs {MODEL_FILE} and {STATE_FILE})")
    return path


def load_training_checkpoint(path: str | os.PathLike) -> tuple[dict, dict | None, dict]:
    """(model state, EMA state or None, training state) of a checkpoint folder."""
    path = Path(path)
    try:
        model_state = read_safetensors(path / MODEL_FILE)
        ema_state = read_safetensors(path / EMA_FILE) if (path / EMA_FILE).is_file() else None
        state = read_torch(path / STATE_FILE)
    except CheckpointError as exc:
        raise CheckpointError(f"cannot resume from checkpoint {str(path)!r}: {exc}") from exc
    if not isinstance(state, dict) or not {"step", "optimizer"} <= set(state):
        raise CheckpointError(f"cannot resume from checkpoint {str(path)!r}: {STATE_FILE} is not a training state")
    return model_state, ema_state, state


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states as plain, weights_only-loadable values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
