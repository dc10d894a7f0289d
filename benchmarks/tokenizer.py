"""Tokenizer throughput: edgevl's cached CLIP BPE vs the straightforward uncached pure-Python BPE.

Both run in the same process on the same caption corpus (alt-text-like captions with a realistic vocabulary
mix and the fixture's unicode cases); reports the median tokens/s over repeated passes and the speed-up.

    python benchmarks/tokenizer.py [--captions 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from edgevl.tokenizer import SimpleTokenizer

WORDS = (
    "a an the photo picture image of with on in at near two three small large red blue green yellow black white "
    "dog cat car person people man woman child tree house street beach mountain sky sunset city table chair food "
    "plate bowl coffee cup phone laptop computer book bicycle bus train airplane boat horse bird flower garden "
    "running sitting standing holding playing walking looking parked flying wooden old new beautiful vintage "
    "download free stock hd 4k wallpaper jpg png best price sale"
).split()


def make_corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    fixture = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tokenizer" / "cases.jsonl"
    extra = [json.loads(line)["text"] for line in fixture.read_text(encoding="utf-8").split("\n") if line]
    corpus = []
    for i in range(n):
        if i % 20 == 0:
            corpus.append(rng.choice(extra))
            continue
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 18))]
        if rng.random() < 0.3:
            words.append(f"IMG_{rng.randint(0, 9999)}.jpg")
        if rng.random() < 0.2:
            words[0] = words[0].capitalize()
        corpus.append(" ".join(words))
    return corpus


def tokens_per_second(tok: SimpleTokenizer, corpus: list[str], batch: int = 256) -> tuple[float, int]:
    start = time.perf_counter()
    n_tokens = 0
    for i in range(0, len(corpus), batch):
        ids = tok(corpus[i : i + batch])
        n_tokens += int((ids != 0).sum())
    return n_tokens / (time.perf_counter() - start), n_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, default=20000, help="number of captions in the corpus")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per tokenizer (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    corpus = make_corpus(args.captions)
    results = {}
    variants = [("uncached (baseline)", lambda: SimpleTokenizer(cache=False)), ("edgevl cached", SimpleTokenizer)]
    for name, make in variants:
        runs = []
        for _ in range(args.repeats):
            tok = make()  # fresh tokenizer each pass: the cache is rebuilt, cold-start included
            runs.append(tokens_per_second(tok, corpus)[0])
        results[name] = statistics.median(runs)
        print(f"{name:22s} median {results[name]:>12,.0f} tokens/s  (runs: {', '.join(f'{r:,.0f}' for r in runs)})")
    speedup = results["edgevl cached"] / results["uncached (baseline)"]
    print(f"speed-up: {speedup:.1f}x  ({len(corpus)} captions, 1 thread, {platform.processor() or platform.machine()})")


if __name__ == "__main__":
    main()
