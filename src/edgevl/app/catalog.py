"""The photo database: one SQLite file (WAL mode) with the indexed folders, one row per image and one per skipped
file, and the fingerprint of the models that made the embeddings.

SQLite is the source of truth; the vector index beside it (`vectors.py`) is a cache rebuilt from it. Every batch of
images is written in one transaction that also bumps `generation`, so a process killed at any moment leaves a
consistent database that lacks at most the batch in flight, and the next run picks up where it stopped.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevl.app.scan import Decoded, FileStat, Skip
from edgevl.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, root_id INTEGER NOT NULL REFERENCES roots(id),
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, width INTEGER NOT NULL,
    height INTEGER NOT NULL, embedding BLOB NOT NULL, caption TEXT NOT NULL, tags TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY, root_id INTEGER NOT NULL REFERENCES roots(id), size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, kind TEXT NOT NULL, reason TEXT NOT NULL);
"""
IMAGE_COLUMNS = "id, path, root_id, size, mtime_ns, sha256, width, height, caption, tags"


@dataclass
class Plan:
    """What an index run has to do under one folder: files to decode (with their stored hash when they were
    indexed before), rows to drop, and how many files are unchanged or still skipped."""

    todo: list[tuple[FileStat, str | None]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    still_skipped: list[Skip] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return sum(1 for _, known in self.todo if known is not None)


@dataclass(frozen=True)
class Row:
    """One indexed image as search results and the web app show it."""

    id: int
    path: str
    root_id: int
    size: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    caption: str
    tags: list[tuple[str, float]]


def _row(values: tuple) -> Row:
    return Row(*values[:9], [tuple(t) for t in json.loads(values[9])])  # type: ignore[misc]


def _under(prefix: str) -> tuple[str, tuple[int, str]]:
    """SQL condition (and its parameters) for paths at or below folder `prefix`."""
    slash = prefix.rstrip("/") + "/"
    return "substr(path, 1, ?) = ?", (len(slash), slash)


class Catalog:
    """An open photo database. `readonly=True` (search, serve) never writes to it."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise ConfigError(f"no photo database at {self.path}; run `edgevl index FOLDER --db {self.path}` first")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path.resolve()}{'?mode=ro' if readonly else ''}"
        try:
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            if not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")  # with WAL: safe against a killed process
                self.db.executescript(_SCHEMA)
            self.db.execute("SELECT count(*) FROM meta").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path} is not an edgevl photo database ({exc})") from None

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> _Transaction:
        """A write transaction: `with catalog.transaction(): ...` commits at the end, rolls back on errors."""
        return _Transaction(self.db, "BEGIN IMMEDIATE")

    def snapshot(self) -> _Transaction:
        """A read transaction: every query inside sees the same committed state, even while `index` writes."""
        return _Transaction(self.db, "BEGIN")

    # ---------------------------------------------------------------------------------------------- meta
    def meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, json.dumps(value, sort_keys=True)))

    @property
    def generation(self) -> int:
        """Bumped by every write that changes the embeddings; the vector cache is valid for one generation."""
        return int(self.meta("generation") or 0)

    def _bump(self) -> None:
        self._set_meta("generation", self.generation + 1)

    def mismatch(self, fingerprint: dict[str, Any]) -> str | None:
        """Why this database cannot take embeddings with `fingerprint` (another model or edgevl version), or None."""
        stored = self.meta("fingerprint")
        if stored is None:
            has_rows = self.db.execute("SELECT EXISTS(SELECT 1 FROM images)").fetchone()[0]
            return "it has images but no model record (an older edgevl)" if has_rows else None
        diffs = [f"{k} {stored.get(k)!r} -> {v!r}" for k, v in fingerprint.items() if stored.get(k) != v]
        return "; ".join(diffs) or None

    def reset(self, fingerprint: dict[str, Any], spec_json: str) -> None:
        """Start over for new models: drop every image and skip (the folders are kept), record the models."""
        with self.transaction():
            self.db.execute("DELETE FROM images")
            self.db.execute("DELETE FROM skipped")
            self._set_meta("fingerprint", fingerprint)
            self._set_meta("spec", json.loads(spec_json))
            self._set_meta("labels", None)
            self._bump()

    # --------------------------------------------------------------------------------------------- roots
    def add_root(self, folder: Path) -> int:
        """Id of the indexed folder holding `folder` (added when new; folders inside it are merged into it)."""
        path = str(folder)
        for root_id, root in self.roots().items():
            if path == root or path.startswith(root.rstrip("/") + "/"):
                return root_id
        with self.transaction():
            root_id = self.db.execute("INSERT INTO roots(path) VALUES (?)", (path,)).lastrowid
            cond, params = _under(path)
            for table in ("images", "skipped"):
                self.db.execute(f"UPDATE {table} SET root_id = ? WHERE {cond}", (root_id, *params))
            self.db.execute("DELETE FROM roots WHERE id != ? AND substr(path, 1, ?) = ?",
                            (root_id, len(path) + 1, path.rstrip("/") + "/"))
        return int(root_id)

    def roots(self) -> dict[int, str]:
        return dict(self.db.execute("SELECT id, path FROM roots ORDER BY id").fetchall())

    # ------------------------------------------------------------------------------------------- planning
    def plan(self, folder: Path, files: list[FileStat], refused: list[Skip]) -> Plan:
        """Compare a fresh walk of `folder` with the stored rows: new/changed files, deleted rows, unchanged."""
        cond, params = _under(str(folder))
        known = {p: (s, m, h) for p, s, m, h in self.db.execute(
            f"SELECT path, size, mtime_ns, sha256 FROM images WHERE {cond}", params)}
        skipped = {r[0]: Skip(*r) for r in self.db.execute(
            f"SELECT path, size, mtime_ns, kind, reason FROM skipped WHERE {cond}", params)}
        plan = Plan(still_skipped=list(refused))
        for f in files:
            stored, skip = known.get(f.path), skipped.get(f.path)
            if stored is not None and stored[:2] == (f.size, f.mtime_ns):
                plan.unchanged += 1
            elif skip is not None and (skip.size, skip.mtime_ns) == (f.size, f.mtime_ns):
                plan.still_skipped.append(skip)
            else:
                plan.todo.append((f, stored[2] if stored else None))
        present = {f.path for f in files} | {s.path for s in refused}
        plan.deleted = sorted(p for p in [*known, *skipped] if p not in present)
        return plan

    def apply_refused_and_deleted(self, root_id: int, plan: Plan, refused: list[Skip]) -> None:
        """Drop rows of files that are gone, and record files refused by the walk, in one transaction."""
        with self.transaction():
            for path in plan.deleted:
                self.db.execute("DELETE FROM images WHERE path = ?", (path,))
                self.db.execute("DELETE FROM skipped WHERE path = ?", (path,))
            self._write_skips(root_id, refused)
            self._bump()

    # --------------------------------------------------------------------------------------------- writing
    def _write_skips(self, root_id: int, skips: Iterable[Skip]) -> None:
        for s in skips:
            self.db.execute("DELETE FROM images WHERE path = ?", (s.path,))
            self.db.execute("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?, ?, ?)",
                            (s.path, root_id, s.size, s.mtime_ns, s.kind, s.reason))

    def write_batch(self, root_id: int, items: list[Decoded], vectors: np.ndarray | None,
                    captions: list[str], tags: list[list[tuple[str, float]]], skips: list[Skip]) -> None:
        """Store one batch in one transaction: embedded images (`vectors`/`captions`/`tags` row i is
        `items[i]`), touched-but-unchanged files (no pixels: only size and mtime change), and skips."""
        with self.transaction():
            fresh = [d for d in items if d.pixels is not None]
            for d in items:
                if d.pixels is None:
                    self.db.execute("UPDATE images SET size = ?, mtime_ns = ? WHERE path = ?",
                                    (d.size, d.mtime_ns, d.path))
            for i, d in enumerate(fresh):
                assert vectors is not None
                self.db.execute(
                    "INSERT INTO images(path, root_id, size, mtime_ns, sha256, width, height, embedding, caption, tags)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET root_id = excluded.root_id,"
                    " size = excluded.size, mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256,"
                    " width = excluded.width, height = excluded.height, embedding = excluded.embedding,"
                    " caption = excluded.caption, tags = excluded.tags",
                    (d.path, root_id, d.size, d.mtime_ns, d.sha256, d.width, d.height,
                     np.ascontiguousarray(vectors[i], dtype=np.float32).tobytes(), captions[i], json.dumps(tags[i])))
            for d in items:
                self.db.execute("DELETE FROM skipped WHERE path = ?", (d.path,))
            self._write_skips(root_id, skips)
            if fresh:
                self._bump()

    def retag(self, labels_key: str, tagger, chunk: int = 4096) -> int:
        """Recompute every image's tags from its stored embedding when the label list changed; returns how many."""
        if self.meta("labels") == labels_key:
            return 0
        ids = [r[0] for r in self.db.execute("SELECT id FROM images ORDER BY id")]
        for start in range(0, len(ids), chunk):
            part = ids[start:start + chunk]
            rows = self.db.execute(f"SELECT id, embedding FROM images WHERE id IN ({','.join('?' * len(part))})",
                                   part).fetchall()
            with self.transaction():
                for (image_id, _), tags in zip(rows, tagger(_matrix(b for _, b in rows))):
                    self.db.execute("UPDATE images SET tags = ? WHERE id = ?", (json.dumps(tags), image_id))
        with self.transaction():
            self._set_meta("labels", labels_key)
        return len(ids)

    # --------------------------------------------------------------------------------------------- reading
    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM images").fetchone()[0])

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids [n] int64, embeddings [n, dim] float32) of every image, by id."""
        rows = self.db.execute("SELECT id, embedding FROM images ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return ids, _matrix(r[1] for r in rows)

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, content digests) of every image by id, int64 each: what the vector cache diffs against."""
        rows = self.db.execute("SELECT id, substr(sha256, 1, 15) FROM images ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return ids, np.fromiter((int(r[1], 16) for r in rows), dtype=np.int64, count=len(rows))

    def embeddings(self, ids: Iterable[int]) -> np.ndarray:
        """[len(ids), dim] embeddings of the given image ids, in that order."""
        ids = [int(i) for i in ids]
        found: dict[int, bytes] = {}
        for start in range(0, len(ids), 900):  # SQLite's limit on bound parameters
            part = ids[start:start + 900]
            found.update(self.db.execute(
                f"SELECT id, embedding FROM images WHERE id IN ({','.join('?' * len(part))})", part).fetchall())
        return _matrix(found[i] for i in ids)

    def embedding(self, image_id: int) -> np.ndarray | None:
        row = self.db.execute("SELECT embedding FROM images WHERE id = ?", (image_id,)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype=np.float32)

    def rows(self, ids: Iterable[int]) -> dict[int, Row]:
        ids = list(ids)
        if not ids:
            return {}
        sql = f"SELECT {IMAGE_COLUMNS} FROM images WHERE id IN ({','.join('?' * len(ids))})"
        return {r[0]: _row(r) for r in self.db.execute(sql, ids)}

    def find(self, path: str) -> Row | None:
        row = self.db.execute(f"SELECT {IMAGE_COLUMNS} FROM images WHERE path = ?", (path,)).fetchone()
        return None if row is None else _row(row)

    def skipped(self) -> list[Skip]:
        return [Skip(*r) for r in self.db.execute(
            "SELECT path, size, mtime_ns, kind, reason FROM skipped ORDER BY path")]


def _matrix(blobs: Iterable[bytes]) -> np.ndarray:
    arrays = [np.frombuffer(b, dtype=np.float32) for b in blobs]
    return np.stack(arrays) if arrays else np.zeros((0, 0), dtype=np.float32)


class _Transaction:
    """BEGIN ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, db: sqlite3.Connection, begin: str) -> None:
        self.db, self.begin = db, begin

    def __enter__(self) -> None:
        self.db.execute(self.begin)

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
