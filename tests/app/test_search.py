"""Search on a small world photo library: text, example image, query arithmetic, precision@10."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from photo_helpers import has_object, world_labels

from edgevl.app.catalog import Catalog
from edgevl.app.engine import Engine
from edgevl.app.indexer import index_folder
from edgevl.app.search import query_vector, ranked, similar
from edgevl.app.vectors import build, load
from edgevl.data.world import make


def _primary_colour(labels: dict) -> str:
    return labels["objects"][0]["color"]


def precision_at_10(catalog: Catalog, engine: Engine, labels: dict[str, dict], color: str, shape: str) -> float:
    hits = ranked(catalog, load(catalog, persist=False), query_vector(engine, catalog, f"a {color} {shape}"), 10)
    return sum(has_object(labels[h.row.path], color, shape) for h in hits) / 10


def test_text_image_and_arithmetic_queries(world_db: Path, world_photos: Path, world_engine: Engine) -> None:
    catalog = Catalog(world_db, readonly=True)
    labels, index = world_labels(world_photos), load(catalog)
    hits = ranked(catalog, index, query_vector(world_engine, catalog, "a red star"), 10)
    assert len(hits) == 10 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    dominant = {p for p, lab in labels.items() if lab["objects"][0]["color"] == "red"
                and lab["objects"][0]["shape"] == "star"}
    assert dominant and {h.row.path for h in hits[:len(dominant)]} == dominant  # the clear answers rank first
    assert sum(_primary_colour(labels[h.row.path]) == "red" for h in hits) >= 6  # near misses: mostly red

    red = next(p for p, lab in sorted(labels.items()) if _primary_colour(lab) == "red" and lab["n_objects"] == 1)
    same = ranked(catalog, index, query_vector(world_engine, catalog, image=red), 5)
    assert same[0].row.path == red and same[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.row.id for h in similar(catalog, index, same[0].row.id, 5)] == [h.row.id for h in same]
    assert sum(_primary_colour(labels[h.row.path]) == "red" for h in same) >= 4

    # "this photo, but blue instead of red"
    query = query_vector(world_engine, catalog, image=red, plus=["blue"], minus=["red"])
    parts = [catalog.embedding(same[0].row.id), *world_engine.encode_texts(["blue", "red"]).numpy()]
    expected = parts[0] + parts[1] - parts[2]
    np.testing.assert_allclose(query, expected / np.linalg.norm(expected), atol=1e-5)
    shifted = ranked(catalog, index, query, 5)
    assert sum(_primary_colour(labels[h.row.path]) == "blue" for h in shifted) >= 3
    catalog.close()


def test_query_image_outside_the_library_is_embedded(world_db: Path, world_engine: Engine, tmp_path: Path) -> None:
    make(tmp_path, 1, split="test", seed=5, fmt="photos")
    outside = next(tmp_path.rglob("IMG_*"))
    catalog = Catalog(world_db, readonly=True)
    hits = ranked(catalog, load(catalog), query_vector(world_engine, catalog, image=str(outside)), 3)
    assert len(hits) == 3 and hits[0].score < 0.9999
    catalog.close()


def test_exact_and_graph_indexes_agree_on_clear_neighbours() -> None:
    pytest.importorskip("usearch", reason="the app extra (usearch) is not installed")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(100, 3100, dtype=np.int64)
    exact, graph = build(ids, vectors), build(ids, vectors, threshold=1000)
    assert exact.exact and not graph.exact
    for row in (0, 17, 2999):
        e_ids, e_scores = exact.search(vectors[row], 5)
        g_ids, g_scores = graph.search(vectors[row], 5)
        assert e_ids[0] == g_ids[0] == ids[row] and e_scores[0] == pytest.approx(1.0, abs=1e-5)
        assert g_scores[0] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_precision_at_10_on_3000_world_photos(tmp_path: Path, world_engine: Engine) -> None:
    """The number docs/app.md reports: `edgevl search "a red star"` on `world make --format photos --n 3000`."""
    make(tmp_path / "photos", 3000, split="val", seed=0, fmt="photos")
    catalog = Catalog(tmp_path / "photos.db")
    index_folder(catalog, world_engine, tmp_path / "photos", progress=False)
    labels = world_labels(tmp_path / "photos")
    p10 = precision_at_10(catalog, world_engine, labels, "red", "star")
    print(f"precision@10 of 'a red star' on 3000 world photos: {p10:.2f}")
    catalog.close()
    assert p10 >= 0.9


def test_precision_at_10_small_library(world_db: Path, world_photos: Path, world_engine: Engine) -> None:
    catalog = Catalog(world_db, readonly=True)
    labels = world_labels(world_photos)
    relevant = sum(has_object(lab, "red", "star") for lab in labels.values())
    p10 = precision_at_10(catalog, world_engine, labels, "red", "star")
    catalog.close()
    assert p10 >= 3 * relevant / len(labels)  # far above chance even on 240 images


def test_graph_cache_follows_the_database_in_place(tmp_path: Path, world_engine: Engine, monkeypatch) -> None:
    pytest.importorskip("usearch", reason="the app extra (usearch) is not installed")
    import edgevl.app.vectors as vectors

    make(tmp_path / "photos", 24, split="test", seed=1, fmt="photos")
    catalog = Catalog(tmp_path / "photos.db")
    index_folder(catalog, world_engine, tmp_path / "photos", progress=False)
    first = vectors.load(catalog, threshold=8)
    assert not first.exact and len(first) == 24
    images = sorted((tmp_path / "photos").rglob("IMG_*"))
    images[0].unlink()
    images[1].write_bytes(images[2].read_bytes())  # changed content
    index_folder(catalog, world_engine, tmp_path / "photos", progress=False)
    monkeypatch.setattr(vectors, "build", lambda *a, **k: pytest.fail("rebuilt instead of updating in place"))
    updated = vectors.load(catalog, threshold=8)
    ids, stored = catalog.vectors()
    assert len(updated) == len(updated.graph) == len(ids) == 23
    for image_id, vector in zip(ids, stored):
        found, scores = updated.search(vector, 1)
        assert scores[0] == pytest.approx(1.0, abs=1e-4)
        assert found[0] == image_id or np.allclose(catalog.embedding(int(found[0])), vector)  # the duplicate
    assert vectors.load(catalog, threshold=8).graph is not None  # now straight from the cache
    catalog.close()
