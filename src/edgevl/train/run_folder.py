"""Starting a run folder (`edgevl.run_layout`) and the rules for reusing one.

A run folder belongs to one run. Resuming it with other output-defining options (model, data, learning rate,
seed, ...) is refused before anything is written, naming the options that differ; options that only change
how long the run goes, how it is watched or where it computes (`RESUMABLE_OPTIONS`) may differ.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgevl.errors import ConfigError
from edgevl.io import atomic_write_text
from edgevl.run_layout import METRICS_FILE, PARAMS_FILE, changed_settings, list_checkpoints

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
    changed = changed_settings(old, params, ignore=RESUMABLE_OPTIONS)
    if changed:
        detail = ", ".join(changed[:4])
        raise ConfigError(f"cannot resume {run_dir} with different settings ({detail}); use the run's own "
                          f"settings (in {path}) or another folder")


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
