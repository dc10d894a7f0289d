"""The names of edgevl's folders, shared by the trainers that write them and the loaders that read them.

A *model folder* is open_clip's local-dir layout, `open_clip_config.json` + weights; edgevl adds an `edgevl`
block to the config (`{"model": NAME, "step": K, "ema": bool}`). A *run folder* is what `edgevl train` and
`train-captioner` write: `params.json`, `metrics.jsonl`, `checkpoints/step_<k>/` (each a model folder with the
training state beside it) and, once the run is finished, `model/`. As a model (`--pretrained RUN`), a run folder
stands for `model/`, or for its newest checkpoint when that is newer. A *reinforced dataset* folder holds its shards
and `manifest.json`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from edgevl.errors import CheckpointError

CONFIG_NAME = "open_clip_config.json"
EDGEVL_KEY = "edgevl"  # edgevl's block in open_clip_config.json
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
MODEL_DIR = "model"  # the run's result: a model folder written when a run reaches its last step
REINFORCED_MANIFEST = "manifest.json"  # beside the shards of a reinforced dataset (`reinforce run`)
_STEP_RE = re.compile(r"^step_(\d+)$")


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Completed checkpoint folders of a run, oldest first (temporary folders are ignored)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def recorded_step(folder: str | os.PathLike) -> int | None:
    """The training step a model folder's config records (`edgevl.step`), if any."""
    try:
        config = json.loads((Path(folder) / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    step = ((config if isinstance(config, dict) else {}).get(EDGEVL_KEY) or {}).get("step")
    return step if isinstance(step, int) else None


def run_model_folder(path: str | os.PathLike) -> Path | None:
    """The model folder a run folder stands for (None if `path` has no `params.json`): `model/`, unless a
    checkpoint is newer than the step it records, else the newest checkpoint."""
    path = Path(path)
    if not (path / PARAMS_FILE).is_file():
        return None
    checkpoints, final = list_checkpoints(path), path / MODEL_DIR
    if not checkpoints and not final.is_dir():
        raise CheckpointError(f"run folder {str(path)!r} has no {MODEL_DIR}/ folder and no checkpoint in "
                              f"{CHECKPOINT_DIR}/ yet")
    if not checkpoints:
        return final
    if not final.is_dir():
        return checkpoints[-1]
    step = recorded_step(final)
    newest = int(checkpoints[-1].name.split("_")[-1])
    return final if step is None or step >= newest else checkpoints[-1]


def run_params_model(folder: str | os.PathLike) -> tuple[str, Path] | None:
    """(the `model` option, the `params.json` path) of the run that checkpoint folder `folder` belongs to."""
    folder = Path(folder)
    if folder.parent.name != CHECKPOINT_DIR:
        return None
    params = folder.parent.parent / PARAMS_FILE
    try:
        model = json.loads(params.read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        return None
    return (model, params) if isinstance(model, str) and model else None


def changed_settings(old: Mapping[str, Any], new: Mapping[str, Any], ignore: Collection[str] = ()) -> list[str]:
    """`"key: old -> new"` for every setting that differs between a saved run and a resume, sorted by key.

    Values compare as saved JSON (tuples equal lists); keys in `ignore` are not compared.
    """
    def plain(value: Any) -> Any:
        return json.loads(json.dumps(value))
    keys = sorted(k for k in set(old) | set(new) if k not in ignore and plain(old.get(k)) != plain(new.get(k)))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys]
