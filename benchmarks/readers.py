"""Reading speed of webdataset shards: raw tar grouping (`read_shard`) and full decoding (`open_dataset`).

Prints samples/s for each, the median of `--repeats` passes over the shard. To compare two versions of edgevl,
run it with each one's `src/` first on PYTHONPATH in the same session (docs/benchmarks.md has the numbers):

    python benchmarks/readers.py --shard world/00000.tar
"""

from __future__ import annotations

import argparse
import statistics
import time


def timed(fn, repeats: int) -> tuple[float, int]:
    """(median seconds, items) of `fn()` over `repeats` calls; `fn` returns the number of items it read."""
    times, count = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", required=True, help="a webdataset .tar shard (e.g. from `edgevl world make`)")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the shard; the median is printed")
    args = parser.parse_args()

    from edgevl.data.readers import SkipLog, open_dataset
    from edgevl.data.readers.webdataset import read_shard

    raw_s, n = timed(lambda: sum(1 for _ in read_shard(args.shard, SkipLog())), args.repeats)
    dec_s, m = timed(lambda: sum(1 for _ in open_dataset(f"wds:{args.shard}")), args.repeats)
    print(f"read_shard: {n} samples, {n / raw_s:,.0f} samples/s (median of {args.repeats})")
    print(f"open_dataset (decode): {m} samples, {m / dec_s:,.0f} samples/s (median of {args.repeats})")


if __name__ == "__main__":
    main()
