"""Shared fixtures of the photo-app tests: the shipped world models, and a small world photo folder indexed once."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from photo_helpers import tree

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


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory, world_photos: Path, world_engine: Engine) -> dict:
    """A small library with a secret file beside it and a symbolic link inside it that points at the secret."""
    base = tmp_path_factory.mktemp("served")
    folder = base / "photos"
    shutil.copytree(world_photos / "2019" / "00-beach", folder / "beach")
    secret = base / "secret.png"
    shutil.copy(next(folder.rglob("*.png")), secret)
    (folder / "beach" / "escape.png").symlink_to(secret)
    (folder / "notes.txt").write_text("private")
    before = tree(folder)
    db = base / "db" / "photos.db"
    catalog = Catalog(db)
    index_folder(catalog, world_engine, folder, progress=False)
    catalog.close()
    from fastapi.testclient import TestClient

    from edgevl.app.server import create_app

    app = create_app(db)
    app.state.photos.engine = world_engine  # reuse the loaded models
    return {"folder": folder, "db": db, "client": TestClient(app), "before": before, "secret": secret}


@pytest.fixture(scope="session")
def live(library: dict) -> Iterator[str]:
    """'HOST:PORT' of a real uvicorn server for the library, started as `edgevl serve` would (default --host)."""
    import uvicorn

    from edgevl.app.server import create_app
    from edgevl.cli import build_parser

    args = build_parser().parse_args(["serve", "--db", str(library["db"]), "--port", "0"])
    app = create_app(args.db)
    app.state.photos.engine = library["client"].app.state.photos.engine
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    (address,) = {s.getsockname()[:2] for srv in server.servers for s in srv.sockets}
    yield f"{address[0]}:{address[1]}"
    server.should_exit = True
    thread.join(10)
