"""Turning a query into a vector and the vector into ranked photos.

A query is a sum of terms on the unit sphere: the text and/or the example image, plus every `--and` term, minus
every `--minus` term, each embedded and L2-normalised first, the sum normalised again ("this photo, but at night"
is the photo's embedding plus that of "at night"). A term that names an existing image file is an image term.
An image already in the database uses its stored embedding, so nothing is decoded again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgevl.app.catalog import Catalog, Row
from edgevl.app.engine import Engine
from edgevl.app.scan import PHOTO_SUFFIXES, Skip, decode_image
from edgevl.app.vectors import VectorIndex
from edgevl.errors import ConfigError


@dataclass(frozen=True)
class Hit:
    """One ranked result: the catalogued image and its cosine similarity to the query."""

    score: float
    row: Row

    def to_json(self) -> dict:
        return {"score": round(self.score, 5), **asdict(self.row)}


def _normalised(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm == 0.0 or not np.isfinite(norm):
        raise ConfigError("the query terms cancel out (their sum is zero); drop a --minus term")
    return (v / norm).astype(np.float32)


def is_image_term(term: str) -> bool:
    """Whether a query term names an image file (then it is embedded as an image, else as text)."""
    path = Path(term)
    return path.suffix.lower() in PHOTO_SUFFIXES and path.is_file()


def image_vector(engine: Engine, catalog: Catalog, path: str) -> np.ndarray:
    """Embedding of an image file: the stored one when the file is catalogued and unchanged, else computed now."""
    resolved = Path(path).resolve()
    row = catalog.find(str(resolved))
    if row is not None:
        st = resolved.stat()
        if (row.size, row.mtime_ns) == (st.st_size, st.st_mtime_ns):
            stored = catalog.embedding(row.id)
            assert stored is not None
            return stored
    decoded = decode_image(str(resolved), engine.preprocess_cfg)
    if isinstance(decoded, Skip):
        raise ConfigError(f"cannot use {path} as a query: {decoded.reason} ({decoded.kind})")
    return engine.encode_images(decoded.pixels[None])[0].numpy()  # type: ignore[index]


def query_vector(engine: Engine, catalog: Catalog, text: str | None = None, image: str | None = None,
                 plus: Sequence[str] = (), minus: Sequence[str] = ()) -> np.ndarray:
    """The normalised query: text + image + each `plus` term - each `minus` term (image or text terms)."""
    terms = [(text, False)] if text else []
    terms += [(image, True)] if image else []
    terms += [(t, False) for t in plus]
    if not terms:
        raise ConfigError("give a text query, --image FILE, or --and terms")

    def embed(term: str, as_image: bool) -> np.ndarray:
        if as_image or is_image_term(term):
            return _normalised(image_vector(engine, catalog, term))
        return engine.encode_texts([term])[0].numpy()

    total = np.zeros(engine.dim, dtype=np.float32)
    for term, as_image in terms:
        total = total + embed(term, as_image)
    for term in minus:
        total = total - embed(term, False)
    return _normalised(total)


def ranked(catalog: Catalog, index: VectorIndex, query: np.ndarray, k: int) -> list[Hit]:
    """The `k` catalogued images closest to `query`, best first (rows deleted since the index was built dropped)."""
    ids, scores = index.search(query, k)
    rows = catalog.rows(int(i) for i in ids)
    return [Hit(float(s), rows[int(i)]) for i, s in zip(ids, scores) if int(i) in rows]


def similar(catalog: Catalog, index: VectorIndex, image_id: int, k: int) -> list[Hit]:
    """The `k` images closest to catalogued image `image_id` (itself first)."""
    vector = catalog.embedding(image_id)
    if vector is None:
        raise ConfigError(f"no image with id {image_id} in the database")
    return ranked(catalog, index, vector, k)
