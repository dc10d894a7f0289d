"""The run folder both trainers write (`params.json`, `metrics.jsonl`, `checkpoints/`, `model/`), and the rules for
reusing one.

A run folder belongs to one run. Resuming it with other output-defining options (model, data, learning rate,
seed, ...) is refused before anything is written, naming the options that differ; options that only change
how long the run goes, how it is watched or where it computes (`RESUMABLE_OPTIONS`) may differ. As a model
(`--pretrained RUN`) a run folder stands for its final `model/` folder, or its newest checkpoint when that is newer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgevl.errors import CheckpointError, ConfigError
from edgevl.io import atomic_write_text
from edgevl.models.checkpoint import EDGEVL_KEY, read_folder_config
from edgevl.train.checkpoint import CHECKPOINT_DIR, list_checkpoints

PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.jsonl"
MODEL_DIR = "model"  # the run's result: a model folder written when a run reaches its last step
# Options a resumed run may change: they decide how long it runs, how it is logged and where it computes.
RESUMABLE_OPTIONS = frozenset({"resume", "steps", "log_every", "eval_every", "eval_samples", "save_every",
                               "keep_last", "workers", "device", "progress", "threads", "strict"})


def check_resume_settings(run_dir: str | os.PathLike, params: dict[str, Any]) -> None:
    """Refuse to resume the run in `run_dir` with settings `params` that differ from its `params.json`."""
    run_dir = Path(run_dir)
    if not list_checkpoints(run_dir):
        return
    path = run_dir / PARAMS_FILE
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot resume {run_dir}: its {PARAMS_FILE} is unreadable ({exc})") from None
    changed = sorted(k for k in set(old) | set(params)
                     if k not in RESUMABLE_OPTIONS and _plain(old.get(k)) != _plain(params.get(k)))
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {params.get(k)!r}" for k in changed[:4])
        raise ConfigError(f"cannot resume {run_dir} with different settings ({detail}); use the run's own "
                          f"settings (in {path}) or another folder")


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples and lists compare equal, as they do once saved


def start_run_folder(run_dir: str | os.PathLike, params_json: str, step: int) -> None:
    """Create `run_dir`, write `params.json`, and drop metric lines a killed run logged after checkpoint `step`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / PARAMS_FILE, params_json)
    metrics = run_dir / METRICS_FILE
    if metrics.exists():
        keep = [line for line in metrics.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_text(metrics, "".join(line + "\n" for line in keep))


def _recorded_step(folder: Path) -> int | None:
    """The training step a model folder's `open_clip_config.json` records (`edgevl.step`), if any."""
    step = ((read_folder_config(folder) or {}).get(EDGEVL_KEY) or {}).get("step")
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
    step = _recorded_step(final)
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
