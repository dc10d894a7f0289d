"""The photo app's speed and size: indexing images/s, query latency, the vector-library choice, memory and disk.

Measures (docs/benchmarks.md has the numbers, docs/app.md the product):
  indexing   `index_folder` images/s for MobileCLIP-S0 and ViT-B/16 (random weights, optimize_for_inference, no
             captioner) on 256x256 and 4000x3000 JPEGs, same run, median of --repeats; decode threads vs processes;
             decoding a 4000x3000 JPEG with and without draft mode
  libraries  build time, query p50/p95 and recall@10 against exact search for numpy (exact), usearch, faiss HNSW,
             hnswlib and sqlite-vec on synthetic 512-d vectors at 10k and 100k (--quick: 10k and 20k)
  query      `edgevl search` latency in a warm process (1 torch thread): MobileCLIP-S0 text encode + the app's
             vector index (exact below 20k, usearch above)
  size       database and cache bytes per 10k images, vector memory per 10k, peak RSS of indexing

    python benchmarks/app.py            # everything (about 15 min on 2 busy cores)
    python benchmarks/app.py --quick    # small sizes, one repeat (about 3 min)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

DIM = 512


# ------------------------------------------------------------------------------------------------- data
def photo_jpeg(index: int, size: tuple[int, int]) -> bytes:
    """A photo-like JPEG: a world scene scaled up, with sensor-like noise so it compresses like a camera photo."""
    from edgevl.data.world import generate

    rng = np.random.default_rng(index)
    img = generate(index, "val", size=128).image.resize(size, Image.Resampling.BICUBIC)
    noisy = np.clip(np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (size[1], size[0], 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(noisy.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_photos(folder: Path, n: int, size: tuple[int, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"IMG_{i:05d}.jpg").write_bytes(photo_jpeg(i, size))
    return folder


def clip_like_vectors(n: int, seed: int) -> np.ndarray:
    """Unit vectors with the low intrinsic dimension of real embeddings: 1000 topics in a 64-d latent space,
    mapped into 512-d, plus a little isotropic noise."""
    rng = np.random.default_rng(0)
    centres, mixing = rng.standard_normal((1000, 64)), rng.standard_normal((64, DIM)) / 8
    rng = np.random.default_rng(seed)
    latent = centres[rng.integers(0, 1000, n)] + 0.6 * rng.standard_normal((n, 64))
    x = (latent @ mixing + 0.05 * rng.standard_normal((n, DIM))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


# --------------------------------------------------------------------------------------------- indexing
def model_folder(name: str, root: Path) -> Path:
    """A model folder with random weights for `name` (what --pretrained takes), written once."""
    import edgevl

    folder = root / name
    if not (folder / "model.safetensors").is_file():
        model, _, _ = edgevl.create_model_and_transforms(name)
        edgevl.save_pretrained(model, folder)
    return folder


def index_speed(engine, photos: Path, repeats: int, workers: int, processes: bool = False) -> float:
    """Median images/s of a full `index_folder` run of `photos` into a fresh database."""
    from edgevl.app.catalog import Catalog
    from edgevl.app.indexer import index_folder

    rates = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            catalog = Catalog(Path(tmp) / "photos.db")
            start = time.perf_counter()
            report = index_folder(catalog, engine, photos, workers=workers, processes=processes, progress=False)
            rates.append(report.added / (time.perf_counter() - start))
            catalog.close()
    return round(statistics.median(rates), 2)


def bench_indexing(root: Path, quick: bool, repeats: int) -> dict:
    from edgevl.app.engine import Engine, ModelSpec
    from edgevl.app.scan import open_photo

    sets = {"256x256": write_photos(root / "p256", 32 if quick else 128, (256, 256)),
            "4000x3000": write_photos(root / "p4000", 8 if quick else 32, (4000, 3000))}
    big = (sets["4000x3000"] / "IMG_00000.jpg").read_bytes()
    draft = {}
    for label, side in (("draft (short side >= 256)", 256), ("full decode", 10**6)):
        times = []
        for _ in range(5):
            start = time.perf_counter()
            open_photo(big, "big.jpg", side)
            times.append(time.perf_counter() - start)
        draft[label] = round(1000 * statistics.median(times), 1)
    out: dict = {"jpeg_bytes_4000x3000": len(big), "decode_ms_4000x3000": draft, "images_per_s": {}}
    for name in ("MobileCLIP-S0", "ViT-B-16"):
        engine = Engine(ModelSpec(model=name, pretrained=str(model_folder(name, root / "models")), captioner="none"))
        engine.label_matrix()  # the tag classifier is built once per process, not per run
        out["images_per_s"][name] = {label: index_speed(engine, folder, repeats, workers=2)
                                     for label, folder in sets.items()}
        if name == "MobileCLIP-S0":
            out["decode_workers_4000x3000_S0"] = {
                "2 threads": out["images_per_s"][name]["4000x3000"],
                "2 processes": index_speed(engine, sets["4000x3000"], repeats, workers=2, processes=True),
                "1 thread": index_speed(engine, sets["4000x3000"], repeats, workers=1)}
    s0, vit = out["images_per_s"]["MobileCLIP-S0"], out["images_per_s"]["ViT-B-16"]
    out["ratio_S0_over_ViT-B-16"] = {k: round(s0[k] / vit[k], 2) for k in s0}
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


# -------------------------------------------------------------------------------------------- libraries
def _usearch(x: np.ndarray):
    from usearch.index import Index

    index = Index(ndim=DIM, metric="ip", dtype="f32", connectivity=16, expansion_add=128, expansion_search=64)
    index.add(np.arange(len(x)), x, threads=0)
    return index, lambda q: index.search(q, 10).keys


def _faiss(x: np.ndarray):
    import faiss

    index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction, index.hnsw.efSearch = 128, 64
    index.add(x)
    return index, lambda q: index.search(q[None], 10)[1][0]


def _hnswlib(x: np.ndarray):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(len(x), M=16, ef_construction=128)
    index.add_items(x, np.arange(len(x)))
    index.set_ef(64)
    return index, lambda q: index.knn_query(q, 10)[0][0]


def _sqlite_vec(x: np.ndarray):
    import sqlite_vec

    db = sqlite3.connect(":memory:")
    if not hasattr(db, "enable_load_extension"):
        raise ImportError("this Python's sqlite3 module cannot load extensions (built without them)")
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{DIM}] distance_metric=cosine)")
    db.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)", ((i, row.tobytes()) for i, row in enumerate(x)))
    sql = "SELECT rowid FROM v WHERE embedding MATCH ? AND k = 10 ORDER BY distance"
    return db, lambda q: [r[0] for r in db.execute(sql, (q.tobytes(),))]


def _exact(x: np.ndarray):
    from edgevl.app.vectors import build

    index = build(np.arange(len(x)), x, threshold=len(x) + 1)  # exact at every size
    return index, lambda q: index.search(q, 10)[0]


LIBRARIES: dict[str, Callable] = {"exact (numpy)": _exact, "usearch": _usearch, "faiss HNSW": _faiss,
                                  "hnswlib": _hnswlib, "sqlite-vec": _sqlite_vec}


def bench_libraries(sizes: list[int], queries: int) -> dict:
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    out: dict = {}
    for n in sizes:
        x, q = clip_like_vectors(n, seed=1), clip_like_vectors(queries, seed=2)
        truth = [set(np.argsort(-(x @ v))[:10].tolist()) for v in q]
        for name, make in LIBRARIES.items():
            try:
                start = time.perf_counter()
                _, search = make(x)
                built = time.perf_counter() - start
            except ImportError as exc:
                out[f"{name} @ {n}"] = {"missing": str(exc)}
                print(f"  {name} @ {n}: not measured: {exc}", flush=True)
                continue
            ms, recall = [], []
            for v, t in zip(q, truth):
                start = time.perf_counter()
                found = search(v)
                ms.append(1000 * (time.perf_counter() - start))
                recall.append(len(t & {int(i) for i in found}) / 10)
            out[f"{name} @ {n}"] = {"build_s": round(built, 2), **percentiles(ms),
                                    "recall@10": round(float(np.mean(recall)), 3)}
            print(f"  {name} @ {n}: {out[f'{name} @ {n}']}", flush=True)
    return out


# ---------------------------------------------------------------------------------------- query and size
def bench_query(root: Path, sizes: list[int], queries: int) -> dict:
    """Text encode (MobileCLIP-S0) + the app's vector index (`vectors.build`), in a warm process."""
    import torch

    from edgevl.app.engine import Engine, ModelSpec
    from edgevl.app.vectors import build

    torch.set_num_threads(1)  # one short query: a second thread only waits for the first on a busy CPU
    engine = Engine(ModelSpec(model="MobileCLIP-S0", pretrained=str(model_folder("MobileCLIP-S0", root / "models")),
                              captioner="none"), captions=False)
    words = ["a dog on a beach", "red car at night", "birthday cake", "mountain lake", "my cat asleep",
             "snowy street", "a plate of pasta", "children playing football"]
    out: dict = {}
    for n in sizes:
        index = build(np.arange(n), clip_like_vectors(n, seed=3))
        encode, total = [], []
        for i in range(queries):
            start = time.perf_counter()
            vector = engine.encode_texts([f"{words[i % len(words)]} {i}"])[0].numpy()
            middle = time.perf_counter()
            index.search(vector, 10)
            encode.append(1000 * (middle - start))
            total.append(1000 * (time.perf_counter() - start))
        out[f"{n}"] = {"index": "exact" if index.exact else "usearch", "text_encode": percentiles(encode),
                       "encode+search": percentiles(total)}
        print(f"  query @ {n}: {out[str(n)]}", flush=True)
    return out


def bench_size(root: Path) -> dict:
    """Bytes per 10k images: an indexed database of 10k synthetic rows, its vector cache, and thumbnails."""
    from edgevl.app.catalog import Catalog
    from edgevl.app.vectors import ANN_THRESHOLD, build, cache_dir, load

    db = root / "size" / "photos.db"
    catalog = Catalog(db)
    vectors = clip_like_vectors(10_000, seed=4)
    with catalog.transaction():
        catalog.db.execute("INSERT INTO roots(path) VALUES ('/home/me/Pictures')")
        catalog.db.executemany(
            "INSERT INTO images(path, root_id, size, mtime_ns, sha256, width, height, embedding, caption, tags) "
            "VALUES (?, 1, 3500000, 1700000000000000000, ?, 4000, 3000, ?, ?, ?)",
            ((f"/home/me/Pictures/2024/{i // 500:02d}-trip/IMG_{i:05d}.jpg", f"{i:064x}", v.tobytes(),
              "a dog running on the beach next to the sea", json.dumps([["dog", 0.61], ["beach", 0.2], ["sea", 0.1]]))
             for i, v in enumerate(vectors)))
    catalog.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    load(catalog)
    cache = cache_dir(db) / "vectors"
    graph = build(np.arange(len(vectors)), vectors, threshold=0).graph
    graph_file = root / "size" / "graph.usearch"
    graph.save(str(graph_file))  # type: ignore[attr-defined]
    thumb = Image.open(io.BytesIO(photo_jpeg(0, (4000, 3000))))
    thumb.thumbnail((320, 320))
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=82)
    catalog.close()
    return {"sqlite_bytes": db.stat().st_size, "exact_cache_bytes": sum(f.stat().st_size for f in cache.iterdir()),
            "usearch_graph_bytes": graph_file.stat().st_size, "thumbnails_bytes": 10_000 * len(buf.getvalue()),
            "ann_threshold": ANN_THRESHOLD}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and one repeat (a smoke run)")
    parser.add_argument("--only", choices=("indexing", "libraries", "query", "size"), action="append",
                        help="run only these parts (repeatable); default all")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", default=None, help="also write the results as JSON to this file")
    args = parser.parse_args()
    parts = args.only or ["indexing", "libraries", "query", "size"]
    sizes = [10_000, 20_000] if args.quick else [10_000, 100_000]
    queries = 50 if args.quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.work or tmp)
        results: dict = {"quick": args.quick}
        if "indexing" in parts:
            results["indexing"] = bench_indexing(root, args.quick, repeats=1 if args.quick else 3)
            print(json.dumps(results["indexing"], indent=1), flush=True)
        if "libraries" in parts:
            results["libraries"] = bench_libraries(sizes, queries)
        if "query" in parts:
            results["query"] = bench_query(root, sizes, queries)
        if "size" in parts:
            results["size_per_10k"] = bench_size(root)
            print(json.dumps(results["size_per_10k"], indent=1), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
