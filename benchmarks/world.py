"""Procedural world generation speed, single process: images/s with and without PNG encoding, and `make`.

Usage: python benchmarks/world.py [--n 5000] [--size 64] [--repeats 3]
Prints a markdown table for docs/benchmarks.md: images per CPU second of the process (the per-core rate, which
a busy shared machine disturbs less) and per wall second, each the best of `repeats` runs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from collections.abc import Callable

from edgevl.data.world import encode_png, generate, make


def _best_rates(n: int, repeats: int, run: Callable[[], None]) -> tuple[float, float]:
    """Best (images per CPU second of this process, images per wall second) over `repeats` runs of `run`."""
    cpu = wall = float("inf")
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        run()
        cpu, wall = min(cpu, time.process_time() - c0), min(wall, time.perf_counter() - w0)
    return n / cpu, n / wall


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="images per timed run")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row; the best is reported")
    args = parser.parse_args()
    n, size = args.n, args.size

    def gen_only() -> None:
        for i in range(n):
            generate(i, size=size)

    def gen_png() -> None:
        for i in range(n):
            encode_png(generate(i, size=size).image)

    with tempfile.TemporaryDirectory() as tmp:
        generate(0, size=size)  # build the cached tiles and backgrounds outside the timing
        rows = [
            ("generate (scene + captions + render)", _best_rates(n, args.repeats, gen_only)),
            ("generate + PNG encode", _best_rates(n, args.repeats, gen_png)),
            ("`make --format wds` (PNG + json + tar, 1 process)",
             _best_rates(n, args.repeats, lambda: make(tmp, n, size=size, shard_size=1000))),
        ]
    machine = f"{_cpu_name()}, {os.cpu_count()} CPUs, python {platform.python_version()}"
    print(f"{datetime.date.today()} | {machine} | n={n} size={size} best of {args.repeats}")
    print("| step | images/s per core (CPU time) | images/s (wall) |\n|---|---|---|")
    for name, (per_core, wall) in rows:
        print(f"| {name} | {per_core:,.0f} | {wall:,.0f} |")


if __name__ == "__main__":
    main()
