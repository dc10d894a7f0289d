"""SCST reward speed: vectorised `CiderD` vs the straightforward per-caption dict formula (same document
frequencies, same run), and pycocoevalcap's Cider on the same batch when it is installed.

A batch is `--samples` sampled captions for each of `--images` images, scored against that image's references
(the same list object per image, as a captioner's SCST step passes them).

    python benchmarks/cider.py [--corpus-images 20000] [--images 64] [--samples 5] [--repeats 30]
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import statistics
import time

import numpy as np

from edgevl.eval.captioning.cider import CiderD, _similarity, _tfidf, document_frequencies
from edgevl.eval.captioning.ngrams import ngram_counts

WORDS = (
    "a an the of with on in at near two three small large red blue green yellow black white brown dog cat car "
    "person people man woman child tree house street beach mountain sky city table chair food plate bowl cup "
    "phone laptop book bicycle bus train airplane boat horse bird flower garden is are sitting standing holding "
    "playing walking looking parked flying wooden old next to top front some group field grass water snow"
).split()


def caption(rng: random.Random) -> str:
    weights = [1.0 / (i + 1) ** 0.8 for i in range(len(WORDS))]
    return " ".join(rng.choices(WORDS, weights, k=rng.randint(7, 16)))


def straightforward(corpus_df: dict, num_docs: int, hyps: list[str], refs: list[list[str]]) -> list[float]:
    """Per hypothesis and reference: dict n-gram counts, tf-idf dicts, clipped cosine (what most SCST code does)."""
    log_docs = math.log(num_docs)
    out = []
    for hyp, image_refs in zip(hyps, refs):
        hv = _tfidf(ngram_counts(hyp.split()), corpus_df, log_docs, 4)
        rvs = [_tfidf(ngram_counts(r.split()), corpus_df, log_docs, 4) for r in image_refs]
        total = sum(sum(_similarity(hv, rv, 6.0)) for rv in rvs)
        out.append(total / 4 / len(image_refs) * 10.0)
    return out


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus-images", type=int, default=20000, help="images in the reference corpus")
    parser.add_argument("--images", type=int, default=64, help="images per batch")
    parser.add_argument("--samples", type=int, default=5, help="sampled captions per image")
    parser.add_argument("--repeats", type=int, default=30, help="timed repetitions (median reported)")
    args = parser.parse_args()

    rng = random.Random(0)
    corpus = [[caption(rng) for _ in range(5)] for _ in range(args.corpus_images)]
    start = time.perf_counter()
    scorer = CiderD(corpus)
    build_s = time.perf_counter() - start
    corpus_df, num_docs = document_frequencies([ngram_counts(r.split()) for r in refs] for refs in corpus)
    picked = rng.sample(range(len(corpus)), args.images)
    refs = [corpus[i] for i in picked for _ in range(args.samples)]
    hyps = [caption(rng) for _ in refs]

    fast = scorer(hyps, refs)
    slow = straightforward(corpus_df, num_docs, hyps, refs)
    assert np.allclose(fast, slow, atol=1e-9), "CiderD and the straightforward formula disagree"

    print(f"python {platform.python_version()}  numpy {np.__version__}  {platform.machine()}")
    print(f"corpus: {args.corpus_images} images x 5 captions, CiderD build {build_s:.2f} s")
    print(f"batch: {args.images} images x {args.samples} samples = {len(hyps)} captions")
    fast_ms = timed(lambda: scorer(hyps, refs), args.repeats)
    slow_ms = timed(lambda: straightforward(corpus_df, num_docs, hyps, refs), max(3, args.repeats // 5))
    print(f"straightforward dict formula: {slow_ms:8.2f} ms/batch  1.0x")
    print(f"CiderD (vectorised):          {fast_ms:8.2f} ms/batch  {slow_ms / fast_ms:.1f}x")
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        return
    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    coco_ms = timed(lambda: Cider().compute_score(gts, res), 3)
    print(f"pycocoevalcap Cider (df from the batch): {coco_ms:8.2f} ms/batch")


if __name__ == "__main__":
    main()
