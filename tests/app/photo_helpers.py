"""Helpers of the photo-app tests (a module of its own: `conftest` is an ambiguous name to import)."""

from __future__ import annotations

import json
from pathlib import Path


def world_labels(folder: Path) -> dict[str, dict]:
    """Absolute path -> world labels of every good image of a photos folder."""
    rows = [json.loads(line) for line in (folder / "photos.jsonl").read_text().splitlines()]
    return {str(folder.resolve() / r["path"]): r["labels"] for r in rows}


def has_object(labels: dict, color: str, shape: str) -> bool:
    return any(o["color"] == color and o["shape"] == shape for o in labels["objects"])


def tree(folder: Path) -> dict[str, tuple]:
    """Path -> (size, mtime, mode) of everything under `folder`."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode) for p in sorted(folder.rglob("*"))}
