"""Nothing lost: `edgevl index` killed with SIGKILL mid-run, then run again, equals one uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgevl.app.catalog import Catalog
from edgevl.app.engine import Engine
from edgevl.app.indexer import index_folder


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as con:
            return con.execute("SELECT count(*) FROM images").fetchone()[0]
    except sqlite3.Error:
        return 0


def _content(db: Path) -> tuple[dict, dict, dict]:
    with sqlite3.connect(db) as con:
        images = {r[0]: r[1:] for r in con.execute(
            "SELECT path, size, mtime_ns, sha256, width, height, caption, tags, embedding FROM images")}
        skipped = {r[0]: r[1:] for r in con.execute("SELECT path, size, mtime_ns, kind, reason FROM skipped")}
        meta = dict(con.execute("SELECT key, value FROM meta WHERE key != 'generation'").fetchall())
    return images, skipped, meta


def test_kill_9_during_indexing_then_rerun_gives_the_same_database(tmp_path: Path, world_photos: Path,
                                                                   world_engine: Engine) -> None:
    folder = tmp_path / "photos"
    for album in sorted((world_photos / "2019").iterdir()) + sorted((world_photos / "2020").iterdir()):
        shutil.copytree(album, folder / album.relative_to(world_photos))
    total = len([p for p in folder.rglob("IMG_*")])
    killed_db, reference_db = tmp_path / "killed" / "photos.db", tmp_path / "reference" / "photos.db"
    command = [sys.executable, "-m", "edgevl", "index", str(folder), "--db", str(killed_db), "--batch-size", "4",
               "--workers", "1", "--threads", "1", "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _count(killed_db) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _count(killed_db)
    assert 0 < partial < total, f"the run was not killed mid-way ({partial} of {total} rows)"

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"indexed {total - partial} new" in rerun.stdout
    catalog = Catalog(reference_db)
    index_folder(catalog, world_engine, folder, batch_size=4, progress=False)
    catalog.close()

    images, skipped, meta = _content(killed_db)
    ref_images, ref_skipped, ref_meta = _content(reference_db)
    assert skipped == ref_skipped and meta == ref_meta and images.keys() == ref_images.keys()
    assert len(images) == total
    for path, row in images.items():
        ref = ref_images[path]
        assert row[:6] == ref[:6], path  # size, mtime, hash, dimensions, caption
        assert [t[0] for t in json.loads(row[6])] == [t[0] for t in json.loads(ref[6])]
        np.testing.assert_allclose(np.frombuffer(row[7], np.float32), np.frombuffer(ref[7], np.float32),
                                   atol=2e-5)
