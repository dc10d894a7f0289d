"""CPU latency of image+text towers: PyTorch eager / reparameterized (+channels_last) / ORT fp32 / ORT int8.

For each model and batch size every path encodes one image batch and one text batch; the figure is the median
of `--repeats` runs after `--warmup` runs, with `--threads` threads for torch and ORT alike, and ratios are
against eager in the same run. The ONNX graphs come from `edgevl.export` (parity-checked at export).

    python benchmarks/export.py --models world-student-mci,MobileCLIP-S0 --batches 1,16 --repeats 20 \
        --append docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import edgevl
from edgevl.export.onnx import export_clip
from edgevl.export.runners import OnnxCLIP

SECTION = "## Export and ONNX Runtime"


def _median_ms(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs) * 1000


def _paths(eager, fast, ort: dict, image: torch.Tensor, text: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Path name -> a call encoding the image batch and the text batch."""
    image_cl = image.contiguous(memory_format=torch.channels_last)
    return {
        "torch eager": lambda: (eager.encode_image(image), eager.encode_text(text)),
        "torch reparam+channels_last": lambda: (fast.encode_image(image_cl), fast.encode_text(text)),
        "ORT fp32": lambda: (ort["fp32"].encode_image(image), ort["fp32"].encode_text(text)),
        "ORT int8": lambda: (ort["int8"].encode_image(image), ort["int8"].encode_text(text)),
    }


def bench_model(name: str, batches: list[int], args: argparse.Namespace, workdir: Path) -> list[dict]:
    """Rows {model, batch, path, ms, ratio} for every path at every batch size."""
    torch.manual_seed(0)
    eager = edgevl.create_model(name)
    fast = edgevl.reparameterize(eager).to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    manifest = export_clip(eager, workdir / name, model_name=name, exporter=args.exporter, quantize="int8")
    export_s = time.perf_counter() - t0
    ort = {p: OnnxCLIP(workdir / name, p, threads=args.threads) for p in ("fp32", "int8")}
    size = manifest["preprocess"]["size"]
    tokenizer = edgevl.get_tokenizer(name)
    rows = []
    for batch in batches:
        image = torch.randn(batch, 3, size, size)
        text = tokenizer([f"a photo of object number {i}." for i in range(batch)])
        paths = _paths(eager, fast, ort, image, text)
        with torch.inference_mode():
            times = {p: _median_ms(fn, args.warmup, args.repeats) for p, fn in paths.items()}
            torch.set_num_threads(1)  # oversubscribed shared CPUs make torch's OpenMP barriers very slow
            times["torch reparam+channels_last, 1 thread"] = _median_ms(
                paths["torch reparam+channels_last"], args.warmup, args.repeats)
            torch.set_num_threads(args.threads)
        for path, ms in times.items():
            rows.append({"model": name, "batch": batch, "path": path, "ms": ms, "ratio": times["torch eager"] / ms})
            print(f"{name:20s} b={batch:<3d} {path:28s} {ms:9.2f} ms  x{times['torch eager'] / ms:.2f}", flush=True)
    cos = {g: manifest["graphs"][g]["int8"]["cosine_min"] for g in ("image", "text")}
    parity = {g: manifest["graphs"][g]["parity_worst"]["max_abs_error"] for g in ("image", "text")}
    rows.append({"model": name, "export_s": export_s, "int8_cosine_min": cos, "parity_max_abs_error": parity})
    return rows


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    """A dated section body: the command, the machine, one table row per (model, batch, path)."""
    today = datetime.date.today().isoformat()
    lines = [
        f"\n{SECTION}\n",
        f"`{' '.join(['python', *sys.argv])}` — {today}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} runs after {args.warmup} "
        f"warm-up, random weights, {args.exporter} exporter. One image batch + one text batch per run; ratio = "
        "eager time / path time. The extra 1-thread torch row shows how much torch's 2-thread OpenMP loses on a "
        "shared, oversubscribed CPU.\n",
        "| model | batch | path | ms | ratio vs eager |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if "path" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r['path']} | {r['ms']:.2f} | {r['ratio']:.2f}x |")
    lines.append("")
    for r in rows:
        if "export_s" in r:
            lines.append(f"- {r['model']}: export + parity + int8 took {r['export_s']:.0f} s; int8 cosine vs fp32 "
                         f"(min) image {r['int8_cosine_min']['image']:.4f}, text {r['int8_cosine_min']['text']:.4f}; "
                         f"parity max abs error image {r['parity_max_abs_error']['image']:.2e}, "
                         f"text {r['parity_max_abs_error']['text']:.2e}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="world-student-mci,MobileCLIP-S0", help="comma-separated model names")
    parser.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per path (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    parser.add_argument("--threads", type=int, default=2, help="torch and ORT intra-op threads")
    parser.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo", help="torch.onnx exporter")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--append", default=None, help="append a markdown section to this file (docs/benchmarks.md)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgevl-bench-export-") as tmp:
        for name in args.models.split(","):
            rows += bench_model(name, batches, args, Path(tmp))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    text = markdown(rows, args)
    print(text)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
