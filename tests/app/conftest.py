"""Shared fixtures of the photo-app tests: the shipped world models, and a small world photo folder indexed once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgevl.app.catalog import Catalog
from edgevl.app.engine import Engine, ModelSpec
from edgevl.app.indexer import index_folder
from edgevl.data.world import make

WORLD_N = 240


@pytest.fixture(scope="session")
def world_engine() -> Engine:
    """The default app models: the shipped world teacher, its captioner and the colour+shape tags."""
    return Engine(ModelSpec())


@pytest.fixture(scope="session")
def world_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`edgevl world make --format photos` with 240 val images (plus 4 broken files)."""
    folder = tmp_path_factory.mktemp("photos") / "library"
    make(folder, WORLD_N, split="val", seed=0, fmt="photos")
    return folder


@pytest.fixture(scope="session")
def world_db(world_photos: Path, world_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`world_photos` indexed with the world models (do not write to it; copy it first)."""
    db = tmp_path_factory.mktemp("db") / "photos.db"
    catalog = Catalog(db)
    index_folder(catalog, world_engine, world_photos, progress=False)
    catalog.close()
    return db


def world_labels(folder: Path) -> dict[str, dict]:
    """Absolute path -> world labels of every good image of a photos folder."""
    rows = [json.loads(line) for line in (folder / "photos.jsonl").read_text().splitlines()]
    return {str(folder.resolve() / r["path"]): r["labels"] for r in rows}


def has_object(labels: dict, color: str, shape: str) -> bool:
    return any(o["color"] == color and o["shape"] == shape for o in labels["objects"])
