"""One latency table for deployment: every runtime that runs here, for MobileCLIP-S0, S2, B and LightCap-MCi0, at
batch 1 and 8, with the model file size and each runtime's peak memory; BLIP-base (transformers) as the
captioning baseline.

Each (model, runtime) runs in a worker process of its own (`deploy_runtimes.py`), so its peak resident memory
(`getrusage`) is its own; packages (AOTInductor per batch size, ONNX) are written first into `--work` by separate
processes and reused on the next run. The workers then take turns, round by round, so the runtimes of a model
share the machine's state alike; the median of all timed calls is reported with its ratio to eager (and, for CLIP
models, to `reparameterize`, the official code's structure) from the same run. ExecuTorch/XNNPACK, LiteRT and
OpenVINO rows run `edgevl export --format F` packages through `edgevl.export.runners.load_package`, written into
`--work` first (or taken from `--packages`).

CLIP rows time one preprocessed image batch + one tokenized text batch. Captioner rows time image files to text:
decode, preprocess, backbone, 20 greedy tokens (EOS blocked), words; BLIP is
`BlipForConditionalGeneration(BlipConfig())` (BLIP-base sizes, 384 px, random weights) with
`generate(num_beams=1, do_sample=False, max_new_tokens=min_new_tokens=20)`.

    python benchmarks/deploy.py --models MobileCLIP-S0,lightcap-mci0 --batches 1,8 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deploy_runtimes import BLIP  # transformers' BLIP-base: timed among the captioner's runtimes, interleaved

HERE = Path(__file__).resolve().parent
WORKER = HERE / "deploy_runtimes.py"
CLIP_RUNTIMES = ("eager", "reparameterize", "optimize_for_inference", "aot", "onnx", "executorch", "litert",
                 "openvino")
CAPTIONER_RUNTIMES = ("eager", "optimize_for_inference", "optimize_for_inference+int8", "aot", "onnx", "executorch",
                      "litert", "openvino", BLIP)
NOT_EXACT = {"optimize_for_inference+int8": "int8 decoder: not exact"}


def runtimes_of(model: str, wanted: list[str] | None) -> list[str]:
    """The runtimes timed for `model` (those of `wanted` that apply, when given)."""
    every = CAPTIONER_RUNTIMES if model.startswith("lightcap") else CLIP_RUNTIMES
    return [r for r in every if wanted is None or r in wanted]


def _worker_args(mode: str, model: str, runtime: str, args: argparse.Namespace) -> list[str]:
    packages = args.packages or "-"
    return [sys.executable, str(WORKER), mode, model, runtime, str(args.threads), args.batches, packages, args.work]


class Worker:
    """One runtime's process: loads the model, then times calls on request."""

    def __init__(self, model: str, runtime: str, args: argparse.Namespace) -> None:
        self.model, self.runtime = model, runtime
        self.proc = subprocess.Popen(_worker_args("serve", model, runtime, args), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        first = self._read()
        self.unavailable: str | None = first.get("unavailable")
        self.bytes: int | None = first.get("bytes")
        self.times: dict[int, list[float]] = {}

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.model}/{self.runtime} died (exit {self.proc.wait()})")
        return json.loads(line)

    def time(self, batch: int, runs: int) -> None:
        self.proc.stdin.write(f"{batch} {runs}\n")
        self.times.setdefault(batch, []).extend(self._read()["times"])

    def close(self) -> int | None:
        """Stop the worker; its peak resident memory in bytes (None when it never ran)."""
        if self.unavailable is not None:
            self.proc.wait()
            return None
        self.proc.stdin.write("quit\n")
        peak = self._read()["peak_rss"]
        self.proc.wait()
        return peak


def bench_model(model: str, args: argparse.Namespace, batches: list[int], wanted: list[str] | None) -> list[dict]:
    """Rows {model, runtime, batch, ms, bytes, peak, note} for one model: prepare, then interleaved rounds."""
    runtimes = runtimes_of(model, wanted)
    for runtime in runtimes:
        if runtime in ("aot", "onnx", "executorch", "litert", "openvino") and not args.packages:
            start = time.perf_counter()
            subprocess.run(_worker_args("prepare", model, runtime, args), check=True)
            print(f"# {model} {runtime}: package ready ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    workers = [Worker(model, runtime, args) for runtime in runtimes]
    live = [w for w in workers if w.unavailable is None]
    for _ in range(args.rounds):
        for batch in batches:
            for worker in live:
                worker.time(batch, args.runs)
    rows = []
    for worker in workers:
        peak = worker.close()
        for batch in batches:
            times = worker.times.get(batch)
            rows.append({"model": model, "runtime": worker.runtime, "batch": batch, "bytes": worker.bytes,
                         "peak": peak, "ms": statistics.median(times) * 1e3 if times else None,
                         "note": worker.unavailable or NOT_EXACT.get(worker.runtime, "")})
    return rows


def _ratio(ms: float | None, base: float | None) -> str:
    return f"{ms / base:.2f}×" if ms and base else "–"


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    """The table: one row per (model, batch, runtime); time ratios = runtime ms / reference ms in the same run (the
    issue's targets are time ratios: S0's fastest path ≤ 0.5× reparameterize)."""
    lines = ["| model | batch | runtime | median ms | × eager time | × reparameterize time | file MB | peak RSS MB "
             "| note |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = {(r["model"], r["batch"], r["runtime"]): r["ms"] for r in rows}
    for r in rows:
        if r["runtime"] == BLIP:
            r = {**r, "model": "BLIP-base", "runtime": "transformers"}
        eager = base.get((r["model"], r["batch"], "eager"))
        reparam = base.get((r["model"], r["batch"], "reparameterize"))
        ms = f"{r['ms']:.1f}" if r["ms"] is not None else "–"
        size = f"{r['bytes'] / 1e6:.1f}" if r["bytes"] else "–"
        peak = f"{r['peak'] / 1e6:.0f}" if r["peak"] else "–"
        lines.append(f"| {r['model']} | {r['batch']} | {r['runtime']} | {ms} | {_ratio(r['ms'], eager)} | "
                     f"{_ratio(r['ms'], reparam)} | {size} | {peak} | {r['note']} |")
    blip = {(r["model"], r["batch"]): r["ms"] for r in rows if r["runtime"] == BLIP and r["ms"]}
    speedups = []
    for r in rows:
        if r["runtime"] != BLIP and r["ms"] and (r["model"], r["batch"]) in blip:
            times = blip[r["model"], r["batch"]] / r["ms"]
            speedups.append(f"- {r['model']} {r['runtime']}, batch {r['batch']}: {times:.1f}× faster than "
                            "transformers' BLIP-base in this run")
    return "\n".join(lines + ([""] + speedups if speedups else []))


def header(args: argparse.Namespace) -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    return (f"`python benchmarks/deploy.py {' '.join(sys.argv[1:])}` — {time.strftime('%Y-%m-%d %H:%M')}, {cpu}, "
            f"{torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, {args.threads} threads, "
            f"median of {args.rounds} rounds × {args.runs} runs (runtimes interleaved round by round), random "
            "weights.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="MobileCLIP-S0,MobileCLIP-S2,MobileCLIP-B,lightcap-mci0",
                        help="comma-separated CLIP model names and lightcap-mci0 (which brings the BLIP-base row)")
    parser.add_argument("--runtimes", default=None,
                        help=f"comma-separated subset of {','.join(dict.fromkeys(CLIP_RUNTIMES + CAPTIONER_RUNTIMES))}"
                             " (default: all)")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over the runtimes")
    parser.add_argument("--runs", type=int, default=3, help="timed calls per runtime, batch and round")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "edgevl-deploy-bench"),
                        help="folder for the AOT/ONNX packages and test images (reused between runs)")
    parser.add_argument("--packages", default=None,
                        help="folder with device packages named MODEL-FORMAT (FORMAT: executorch, litert, openvino)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    batches = [int(b) for b in args.batches.split(",")]
    wanted = args.runtimes.split(",") if args.runtimes else None
    rows: list[dict] = []
    for model in args.models.split(","):
        rows += bench_model(model, args, batches, wanted)
        print(markdown([r for r in rows if r["model"] == model], args), file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print(header(args) + "\n\n" + markdown(rows, args))


if __name__ == "__main__":
    main()
