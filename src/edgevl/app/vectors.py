"""Nearest-neighbour search over the stored embeddings, behind one small interface.

Below `ANN_THRESHOLD` vectors an exact matrix product is fast enough and exact; from there on a usearch HNSW
graph answers (picked by measurement, docs/benchmarks.md: every graph library answered in under a millisecond at
the same recall, and usearch can remove and re-add rows in place and memory-map a saved graph). Either form is a
cache of the SQLite database, persisted atomically in `<db>.cache/vectors/` with the database generation it
matches. When the generation moved on, the graph is updated in place from the rows that changed (a re-build
only when most of them did); the exact matrix is simply re-read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgevl.app.catalog import Catalog
from edgevl.errors import ConfigError
from edgevl.io import atomic_write, atomic_write_text

ANN_THRESHOLD = 20_000
REBUILD_SHARE = 0.25  # update the graph in place while fewer than this share of its rows changed
_STAMP, _IDS, _DIGESTS, _VECTORS, _GRAPH = "stamp.json", "ids.npy", "digests.npy", "vectors.npy", "graph.usearch"


def cache_dir(db: str | os.PathLike) -> Path:
    """The folder beside the database for the vector cache and thumbnails (never inside a photo folder)."""
    db = Path(db)
    return db.with_name(db.name + ".cache")


def _usearch() -> Any:
    try:
        from usearch.index import Index
    except ImportError:
        raise ConfigError(f"searching {ANN_THRESHOLD:,}+ images needs usearch: pip install 'edgevl[app]'") from None
    return Index


class VectorIndex:
    """Inner-product top-k over L2-normalised rows: exact over `vectors` (row i is image `ids[i]`), or `graph`."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray | None, graph: Any = None) -> None:
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
            found = self.graph.search(query, k)
            return found.keys.astype(np.int64), (1.0 - found.distances).astype(np.float32)
        assert self.vectors is not None
        scores = self.vectors @ query
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.lexsort((self.ids[top], -scores[top]))]  # best first; ties by id, so results are stable
        return self.ids[top], scores[top]


def new_graph(dim: int) -> Any:
    """An empty usearch HNSW graph for normalised `dim`-d rows (inner product)."""
    return _usearch()(ndim=dim, metric="ip", dtype="f32", connectivity=16, expansion_add=128, expansion_search=64)


def build(ids: np.ndarray, vectors: np.ndarray, threshold: int = ANN_THRESHOLD) -> VectorIndex:
    """An exact index below `threshold` rows, else an HNSW graph over the same rows."""
    if len(ids) < threshold:
        return VectorIndex(ids, vectors)
    graph = new_graph(vectors.shape[1])
    graph.add(ids, vectors, threads=0)
    return VectorIndex(ids, None, graph)


def _save_array(array: np.ndarray):
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
    return write


class _Cache:
    """The persisted index of one database: arrays, graph and the stamp that says which state they match."""

    def __init__(self, db: Path) -> None:
        self.folder = cache_dir(db) / "vectors"

    def stamp(self) -> dict | None:
        try:
            return json.loads((self.folder / _STAMP).read_text())
        except (OSError, ValueError):
            return None

    def read(self, stamp: dict, view: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Any] | None:
        """(ids, digests, vectors or None, graph or None) when the cache is complete; None if anything is off."""
        try:
            ids, digests = np.load(self.folder / _IDS), np.load(self.folder / _DIGESTS)
            vectors, graph = None, None
            if stamp["graph"]:
                graph = _usearch().restore(str(self.folder / _GRAPH), view=view)
                if graph is None or len(graph) != len(ids):
                    return None
            else:
                vectors = np.load(self.folder / _VECTORS, mmap_mode="r")
            return ids, digests, vectors, graph
        except (OSError, ValueError, KeyError, RuntimeError):
            return None

    def write(self, index: VectorIndex, digests: np.ndarray, stamp: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / _STAMP).unlink(missing_ok=True)  # stamp last: a half-written cache never looks valid
        atomic_write(self.folder / _IDS, _save_array(index.ids))
        atomic_write(self.folder / _DIGESTS, _save_array(digests))
        if index.graph is not None:
            atomic_write(self.folder / _GRAPH, lambda tmp: index.graph.save(tmp))
        else:
            atomic_write(self.folder / _VECTORS, _save_array(np.asarray(index.vectors)))
        atomic_write_text(self.folder / _STAMP, json.dumps(stamp, sort_keys=True))


def _updated_graph(cache: _Cache, catalog: Catalog, ids: np.ndarray, digests: np.ndarray) -> Any | None:
    """The cached graph brought up to date with the rows that changed since, or None when a build is better."""
    old = cache.stamp()
    if not old or not old.get("graph") or old.get("fingerprint") != catalog.meta("fingerprint"):
        return None
    cached = cache.read(old, view=False)
    if cached is None:
        return None
    old_ids, old_digests, _, graph = cached
    before, now = set(zip(old_ids.tolist(), old_digests.tolist())), set(zip(ids.tolist(), digests.tolist()))
    gone, new = before - now, now - before
    if len(gone) + len(new) > REBUILD_SHARE * max(len(ids), 1):
        return None
    if gone:
        graph.remove(np.array(sorted(i for i, _ in gone), dtype=np.int64))
    if new:
        added = np.array(sorted(i for i, _ in new), dtype=np.int64)
        graph.add(added, catalog.embeddings(added), threads=0)
    return graph


def load(catalog: Catalog, threshold: int = ANN_THRESHOLD, persist: bool = True) -> VectorIndex:
    """The vector index of `catalog`'s current state: the cache when it matches, else the cached graph updated
    with the changed rows, else built from SQLite; written back when `persist` and the cache folder is writable."""
    cache = _Cache(catalog.path)
    with catalog.snapshot():
        ids, digests = catalog.keys()
        stamp = {"generation": catalog.generation, "count": len(ids), "graph": len(ids) >= threshold,
                 "fingerprint": catalog.meta("fingerprint")}
        if cache.stamp() == stamp:
            cached = cache.read(stamp, view=True)
            if cached is not None:
                return VectorIndex(cached[0], cached[2], cached[3])
        graph = _updated_graph(cache, catalog, ids, digests) if stamp["graph"] else None
        if graph is not None:
            index = VectorIndex(ids, None, graph)
        else:
            index = build(*catalog.vectors(), threshold=threshold)
    if persist:
        try:
            cache.write(index, digests, stamp)
        except OSError:
            pass  # a read-only cache folder: search still works, it just rebuilds next time
    return index
