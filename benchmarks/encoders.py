"""CPU latency of image and text encoders: eager vs reparameterized vs the fastest path, all in one run.

For every batch size, each path of each model is timed as the median of `--repeats` runs after `--warmup` runs (each
encoder `--block` times in a row, all models' paths taking turns between blocks, so ratios between models come from
the same stretch of time), with `--threads` torch threads, and checked numerically against the eager (train-time
layout, eval mode) model. Paths:

- eager:        the model as built (multi-branch MobileOne/RepMixer blocks, eval mode)
- reparam:      `edgevl.reparameterize(model)` (branches folded into single convs)
- fast:         `edgevl.optimize_for_inference` (reparam + every conv+BN folded + channels_last + fused
                epilogues + weights prepacked for oneDNN)
- fast-bf16:    fast under bf16 autocast (only where the CPU supports bf16; a looser tolerance applies)
- compiled:     fast + `torch.compile` with inductor's weight freezing and C++ wrapper (`--compile`; needs a C++
                compiler, ~15 s of compilation per tower and batch size; text towers run the full context, as
                the causal padding trim is data-dependent)
- aot:          fast exported (`torch.export`) and compiled ahead of time by AOTInductor with frozen weights
                (`--aot`; `edgevl.export.aot`, the `.pt2` packages `edgevl compile` writes; needs a C++ compiler,
                ~10-20 s per tower and batch size; fixed shapes, so text towers run the full context)
- aot-bf16:     aot compiled from a bfloat16 copy of the fast model (`--aot --bf16`; a looser tolerance applies)

    python benchmarks/encoders.py --models MobileCLIP-S0,MobileCLIP-S1,MobileCLIP-S2,MobileCLIP-B,ViT-B-16 \
        --batches 1,32 --repeats 20 --out docs/benchmarks_encoders.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import edgevl
from edgevl.export.aot import AotTower, compile_module
from edgevl.runtime import allocator_description, keep_freed_memory

FP32_TOL = 1e-4  # relative to the embedding's max magnitude
BF16_TOL = 5e-2


def _time_interleaved(
    fns: dict[tuple[str, str], tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]], warmup: int,
    repeats: int, block: int,
) -> dict[tuple[str, str], tuple[float, float]]:
    """Median ms of each (image, text) function pair over `repeats` timed calls each.

    Each function is called `block` times in a row (steady state, as an app embedding a stream of images or
    texts calls one encoder over and over), and the functions take turns between blocks, so drift in the
    machine's speed (other jobs, frequency) hits all paths alike instead of whichever ran last."""
    for img_fn, txt_fn in fns.values():
        for _ in range(warmup):
            img_fn(), txt_fn()
    runs: dict[tuple[str, str], tuple[list[float], list[float]]] = {p: ([], []) for p in fns}
    while len(next(iter(runs.values()))[0]) < repeats:
        for path, pair in fns.items():
            for fn, bucket in zip(pair, runs[path]):
                for _ in range(min(block, repeats - len(bucket))):
                    t0 = time.perf_counter()
                    fn()
                    bucket.append(time.perf_counter() - t0)
    return {p: (statistics.median(i) * 1000, statistics.median(t) * 1000) for p, (i, t) in runs.items()}


def _rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.float() - ref.float()).abs().max() / ref.abs().max().clamp(min=1e-12)).item()


def _paths(models: dict, image: torch.Tensor, text: torch.Tensor, args: argparse.Namespace) -> dict:
    """name -> (image fn, text fn, tolerance) for one input batch."""
    eager, folded, fast = models["eager"], models["reparam"], models["fast"]
    image_cl = image.contiguous(memory_format=torch.channels_last)
    paths = {
        "eager": (lambda: eager.encode_image(image), lambda: eager.encode_text(text), FP32_TOL),
        "reparam": (lambda: folded.encode_image(image), lambda: folded.encode_text(text), FP32_TOL),
        "fast": (lambda: fast.encode_image(image_cl), lambda: fast.encode_text(text), FP32_TOL),
    }
    if args.bf16:

        def bf16(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
            def run() -> torch.Tensor:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return fn()

            return run

        paths["fast-bf16"] = (bf16(paths["fast"][0]), bf16(paths["fast"][1]), BF16_TOL)
    if args.compile:
        img_c, txt_c = models["compiled_visual"], models["compiled_text"]
        paths["compiled"] = (lambda: img_c(image_cl), lambda: txt_c(text), FP32_TOL)
    if args.aot:
        img_a, txt_a = _aot_towers(fast, image_cl, text, args.aot_dir)
        paths["aot"] = (lambda: img_a(image_cl), lambda: txt_a(text), FP32_TOL)
        if args.bf16:
            if "fast_bf16" not in models:  # one bfloat16 copy per model, shared by the batch sizes
                models["fast_bf16"] = copy.deepcopy(fast).to(torch.bfloat16)
            fast_bf16 = models["fast_bf16"]
            image_bf16 = image_cl.bfloat16()
            img_b, txt_b = _aot_towers(fast_bf16, image_bf16, text, args.aot_dir)
            paths["aot-bf16"] = (lambda: img_b(image_bf16).float(), lambda: txt_b(text).float(), BF16_TOL)
    return paths


def _aot_towers(fast: torch.nn.Module, image: torch.Tensor, text: torch.Tensor, folder: str) -> tuple:
    """AOTInductor packages of `fast`'s towers for exactly these inputs' shapes and dtypes, loaded."""
    stem = Path(folder) / f"{id(fast)}-b{image.shape[0]}"
    image_pt2 = compile_module(fast.visual, image, f"{stem}-image.pt2")
    text_pt2 = compile_module(fast.text, text, f"{stem}-text.pt2")
    return AotTower(image_pt2, list(image.shape), image.dtype), AotTower(text_pt2, list(text.shape), text.dtype)


def build_models(name: str, args: argparse.Namespace) -> dict:
    """The eager model of `name` and its reparameterized, optimized (and compiled) forms."""
    torch.manual_seed(0)
    eager = edgevl.create_model(name).eval()
    models = {
        "eager": eager,
        "reparam": edgevl.reparameterize(eager),
        "fast": edgevl.optimize_for_inference(eager),
    }
    if args.compile:
        models["compiled_visual"] = torch.compile(models["fast"].visual, mode=args.compile_mode, dynamic=False)
        models["compiled_text"] = torch.compile(models["fast"].text, mode=args.compile_mode, dynamic=False)
    return models


def bench_batch(all_models: dict[str, dict], batch: int, args: argparse.Namespace) -> list[dict]:
    """Time every path of every model at `batch` in one interleaved loop (so drift in the machine's speed hits
    all models alike, and ratios between models are fair), then check each path against its eager model."""
    fns, paths_of = {}, {}
    with torch.inference_mode():
        for name, models in all_models.items():
            eager = models["eager"]
            size = eager.model_cfg["vision_cfg"].get("image_size", 224)
            image = torch.rand(batch, 3, size, size)
            text = edgevl.tokenize(["a photo of a small red car parked on the street"] * batch, eager.context_length)
            paths = _paths(models, image, text, args)
            wanted = ["eager", *(p for p in args.paths.split(",") if p != "eager")] if args.paths else list(paths)
            paths_of[name] = {p: paths[p] for p in wanted}
            fns.update({(name, p): paths[p][:2] for p in wanted})
        times = _time_interleaved(fns, args.warmup, args.repeats, args.block)
        rows = []
        for name, paths in paths_of.items():
            ref_img, ref_txt = paths["eager"][0](), paths["eager"][1]()
            for path, (img_fn, txt_fn, tol) in paths.items():
                img_ms, txt_ms = times[(name, path)]
                err = max(_rel_err(img_fn(), ref_img), _rel_err(txt_fn(), ref_txt))
                rows.append(
                    {
                        "model": name,
                        "batch": batch,
                        "path": path,
                        "image_ms": round(img_ms, 3),
                        "text_ms": round(txt_ms, 3),
                        "total_ms": round(img_ms + txt_ms, 3),
                        "max_rel_err_vs_eager": err,
                        "within_tol": err <= tol,
                    }
                )
                print(
                    f"{name:14s} b={batch:<3d} {path:10s} image {img_ms:9.2f} ms  text {txt_ms:8.2f} ms  "
                    f"rel.err {err:.1e} {'ok' if err <= tol else 'FAIL'}",
                    flush=True,
                )
    return rows


def summarize(rows: list[dict], batches: list[int]) -> None:
    """Print the fastest path per model and the ViT-B/16 ÷ MobileCLIP-S0 ratios under each accounting."""
    best = {}
    for r in rows:
        key = (r["model"], r["batch"])
        if r["within_tol"] and (key not in best or r["total_ms"] < best[key]["total_ms"]):
            best[key] = r
    print("\nfastest path within tolerance, image+text:")
    for (model, batch), r in sorted(best.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"  {model:14s} b={batch:<3d} {r['path']:10s} {r['total_ms']:9.2f} ms")
    by_key = {(r["model"], r["batch"], r["path"]): r for r in rows}
    # (model, batch, float32 paths only?) -> fastest image ms + fastest text ms, each over the paths within tolerance
    towers = {}
    for r in rows:
        if r["within_tol"]:
            for fp32_only in (False, True):
                if fp32_only and r["path"].endswith("-bf16"):
                    continue
                key = (r["model"], r["batch"], fp32_only)
                img, txt = towers.get(key, (float("inf"), float("inf")))
                towers[key] = (min(img, r["image_ms"]), min(txt, r["text_ms"]))
    for batch in batches:
        if ("MobileCLIP-S0", batch) in best and ("ViT-B-16", batch) in best:
            ratio = best[("ViT-B-16", batch)]["total_ms"] / best[("MobileCLIP-S0", batch)]["total_ms"]
            print(f"  ViT-B-16 / MobileCLIP-S0 (image+text, batch {batch}, each on its fastest path): {ratio:.2f}x")
            for fp32_only, which in ((False, "fastest path"), (True, "fastest float32 path")):
                s0_towers = towers[("MobileCLIP-S0", batch, fp32_only)]
                vit_towers = towers[("ViT-B-16", batch, fp32_only)]
                print(f"  ViT-B-16 / MobileCLIP-S0 (image+text, batch {batch}, each tower on its {which}): "
                      f"{sum(vit_towers) / sum(s0_towers):.2f}x ({sum(vit_towers):.2f} / {sum(s0_towers):.2f} ms)")
        for path in ("eager", "reparam", "fast", "fast-bf16", "compiled", "aot", "aot-bf16"):
            s0, vit = by_key.get(("MobileCLIP-S0", batch, path)), by_key.get(("ViT-B-16", batch, path))
            if s0 and vit:
                print(f"  ViT-B-16 / MobileCLIP-S0 (image+text, batch {batch}, both {path}): "
                      f"{vit['total_ms'] / s0['total_ms']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        default="MobileCLIP-S0,MobileCLIP-S1,MobileCLIP-S2,MobileCLIP-B,ViT-B-16",
        help="comma-separated registered model names",
    )
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    parser.add_argument(
        "--block", type=int, default=5,
        help="consecutive timed calls of one encoder before the next one takes its turn (1: strict alternation, "
        "where each call also pays for the caches and heap pages the other paths' calls evicted)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast (CPUs with bf16 support)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow warm-up)")
    parser.add_argument(
        "--compile-mode", default="default", choices=["default", "max-autotune"],
        help="torch.compile mode of the compiled path (max-autotune also tries inductor's C++ GEMM kernels: "
        "~1 min more compilation per tower)",
    )
    parser.add_argument(
        "--aot", action="store_true",
        help="also time AOTInductor packages of the fast towers (edgevl.export.aot; ~10-20 s compile per tower; "
        "with --bf16 also bfloat16 packages)",
    )
    parser.add_argument(
        "--malloc", default="keep", choices=["keep", "default"],
        help="keep: `edgevl.keep_freed_memory()` first, so glibc keeps freed activations for the next call instead "
        "of returning them to the OS (see src/edgevl/runtime.py); default: glibc as configured (also use this "
        "under an LD_PRELOADed tcmalloc/jemalloc, which the report names)",
    )
    parser.add_argument("--paths", default=None, help="comma-separated subset of paths to time (default: all)")
    parser.add_argument("--out", default=None, help="write all rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.malloc == "keep":
        keep_freed_memory()
    allocator = allocator_description()
    print(f"allocator: {allocator}", flush=True)
    # Random-init weights (layer scales 1e-5) push activations into denormal floats, which x86 computes up to
    # 10x slower; trained weights do not, and mobile runtimes flush denormals. Flush them so the timings
    # reflect the arithmetic, not an artifact of the random init.
    torch.set_flush_denormal(True)
    if args.compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights become constants: prepacked for oneDNN, folded where possible
        inductor_config.cpp_wrapper = True  # the graph's calls run from C++, without per-op Python overhead
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    all_models = {name.strip(): build_models(name.strip(), args) for name in args.models.split(",")}
    with tempfile.TemporaryDirectory(prefix="edgevl-aot-") as args.aot_dir:
        for batch in batches:
            rows.extend(bench_batch(all_models, batch, args))
    summarize(rows, batches)
    if args.out:
        meta = {"torch": torch.__version__, "threads": args.threads, "block": args.block, "allocator": allocator,
                "machine": platform.machine(), "rows": rows}
        Path(args.out).write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
