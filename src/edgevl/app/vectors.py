"""Nearest-neighbour search over the stored embeddings, behind one small interface.

Below `ANN_THRESHOLD` vectors an exact matrix product is both fast enough and exact; from there on a usearch
HNSW graph answers (the library was picked by measurement: docs/benchmarks.md). Either form is a cache of the
SQLite database, persisted atomically in `<db>.cache/vectors/` with the database generation it was built from,
and rebuilt from SQLite whenever that generation moved on (or the cache is missing or damaged).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from edgevl.app.catalog import Catalog
from edgevl.errors import ConfigError
from edgevl.io import atomic_write, atomic_write_text

ANN_THRESHOLD = 50_000
_STAMP, _IDS, _VECTORS, _GRAPH = "stamp.json", "ids.npy", "vectors.npy", "graph.usearch"


def cache_dir(db: str | os.PathLike) -> Path:
    """The folder beside the database for the vector cache and thumbnails (never inside a photo folder)."""
    db = Path(db)
    return db.with_name(db.name + ".cache")


def _usearch():
    try:
        from usearch.index import Index
    except ImportError:
        raise ConfigError("searching more than 50k images needs usearch: pip install 'edgevl[app]'") from None
    return Index


class VectorIndex:
    """Inner-product top-k over L2-normalised rows: `ids[i]` is the image id of row `vectors[i]`."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, graph: object | None = None) -> None:
        self.ids, self.vectors, self.graph = ids, vectors, graph

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def exact(self) -> bool:
        return self.graph is None

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(image ids, cosine scores) of the `k` best rows for one normalised query, best first."""
        k = min(k, len(self.ids))
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        query = np.ascontiguousarray(query, dtype=np.float32)
        if self.graph is not None:
            found = self.graph.search(query, k)  # type: ignore[attr-defined]
            return found.keys.astype(np.int64), (1.0 - found.distances).astype(np.float32)
        scores = self.vectors @ query
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.lexsort((self.ids[top], -scores[top]))]  # best first; ties by id, so results are stable
        return self.ids[top], scores[top]


def build(ids: np.ndarray, vectors: np.ndarray, threshold: int = ANN_THRESHOLD, threads: int = 0) -> VectorIndex:
    """An exact index below `threshold` rows, else an HNSW graph over the same rows."""
    if len(ids) < threshold:
        return VectorIndex(ids, vectors)
    graph = _usearch()(ndim=vectors.shape[1], metric="ip", dtype="f32")
    graph.add(ids, vectors, threads=threads)
    return VectorIndex(ids, vectors, graph)


def _read_cache(folder: Path, stamp: dict) -> VectorIndex | None:
    try:
        if json.loads((folder / _STAMP).read_text()) != stamp:
            return None
        ids = np.load(folder / _IDS)
        vectors = np.load(folder / _VECTORS, mmap_mode="r")
        graph = None
        if stamp["graph"]:
            graph = _usearch().restore(str(folder / _GRAPH), view=True)
            if graph is None or len(graph) != len(ids):
                return None
        return VectorIndex(ids, vectors, graph)
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(folder: Path, index: VectorIndex, stamp: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _STAMP).unlink(missing_ok=True)  # stamp last: a half-written cache is never taken for valid

    def save_array(array: np.ndarray):
        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, array)
        return write

    atomic_write(folder / _IDS, save_array(index.ids))
    atomic_write(folder / _VECTORS, save_array(np.asarray(index.vectors)))
    if index.graph is not None:
        atomic_write(folder / _GRAPH, lambda tmp: index.graph.save(tmp))  # type: ignore[attr-defined]
    atomic_write_text(folder / _STAMP, json.dumps(stamp, sort_keys=True))


def load(catalog: Catalog, threshold: int = ANN_THRESHOLD, persist: bool = True) -> VectorIndex:
    """The vector index of `catalog`'s current generation: from the cache when valid, else rebuilt from SQLite
    (and written back to the cache when `persist` and the folder is writable)."""
    with catalog.snapshot():
        n = catalog.count()
        stamp = {"generation": catalog.generation, "count": n, "graph": n >= threshold,
                 "fingerprint": catalog.meta("fingerprint")}
        folder = cache_dir(catalog.path) / "vectors"
        cached = _read_cache(folder, stamp)
        if cached is not None:
            return cached
        ids, vectors = catalog.vectors()
    index = build(ids, vectors, threshold)
    if persist:
        try:
            _write_cache(folder, index, stamp)
        except OSError:
            pass  # a read-only cache folder: search still works, it just rebuilds next time
    return index
