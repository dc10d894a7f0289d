"""Small pretrained models of the procedural world, shipped as package data (safetensors).

`teacher-mci` and `teacher-vit` (an MCi and a ViT CLIP model, each >= 5x the student's FLOPs) are the teacher
ensemble; `captioner` is the LightCap captioner. Each was made by `edgevl world pretrain` (docs/demo.md gives the
recipe and its time).
"""

from __future__ import annotations

from pathlib import Path

from edgevl.errors import CheckpointError

ROOT = Path(__file__).resolve().parent
TEACHER_NAMES = ("teacher-mci", "teacher-vit")
NAMES = (*TEACHER_NAMES, "captioner")


def pretrained_dir(name: str) -> Path:
    """Folder of a shipped world model ('teacher-mci', 'teacher-vit' or 'captioner')."""
    if name not in NAMES:
        raise CheckpointError(f"unknown world model {name!r}; shipped: {', '.join(NAMES)}")
    folder = ROOT / name
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"world model {name!r} is not installed at {folder} (run `edgevl world pretrain`)")
    return folder


def load_teacher(name: str, folder: str | Path | None = None):
    """A shipped world teacher (or the one in `folder`/name) as an edgevl CLIP model in eval mode."""
    from edgevl.models.factory import create_model

    path = Path(folder) / name if folder is not None else pretrained_dir(name)
    return create_model(f"local-dir:{path}")


def load_captioner(folder: str | Path | None = None):
    """The shipped world LightCap captioner (or the one in `folder`/captioner), backbone folded, eval mode."""
    from edgevl.fast import optimize_captioner
    from edgevl.models.lightcap.model import create_lightcap

    path = Path(folder) / "captioner" if folder is not None else pretrained_dir("captioner")
    return optimize_captioner(create_lightcap(path))
