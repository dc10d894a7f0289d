"""CoCa caption latency: edgevl's `generate` (KV cache) against open_clip's eager decoding, same weights, same run.

Both paths are `CoCa.generate` on the same randomly initialized full-size model (default `coca_ViT-B-32`) under
the same seed: `use_cache=True` is edgevl's path (per-layer key/value cache, fused qkv, SDPA, image keys/values
computed once, finished rows dropped, `torch.inference_mode`); `use_cache=False` is open_clip's loop, which
re-runs the text tower and the decoder (all positions, all vocabulary logits) on the whole prefix every step.
Each call encodes the (already preprocessed) images and decodes exactly `--tokens` tokens: end-of-text is
banned until the last step (`min_seq_len`), which then forces it, as open_clip does. Modes: greedy (`top_k`,
k = 1, open_clip's "beam 1") and DataCompDR's top-p 0.9. Rounds alternate the two paths, and each cell is the
median over rounds of wall time and of process CPU time (steadier when other jobs share the CPU); the tokens of
both paths are checked equal. Flush-denormal is on.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/coca.py [--model coca_ViT-B-32] [--batches 1 16] \
        [--rounds 5] [--threads 2]

OMP_WAIT_POLICY=PASSIVE matters on a shared CPU: spinning OpenMP workers stall every small decoder op.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import edgevl

MODES = {"greedy": {"generation_type": "top_k", "top_k": 1}, "top_p": {"generation_type": "top_p", "top_p": 0.9}}


def caption(model: torch.nn.Module, images: torch.Tensor, mode: str, tokens: int, use_cache: bool) -> tuple:
    """((wall seconds, process CPU seconds), ids) of one seeded `generate` call decoding exactly `tokens` tokens."""
    torch.manual_seed(0)
    wall, cpu = time.perf_counter(), time.process_time()
    ids = model.generate(images, seq_len=tokens + 1, min_seq_len=tokens, use_cache=use_cache, **MODES[mode])
    return (time.perf_counter() - wall, time.process_time() - cpu), ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="coca_ViT-B-32", help="registered CoCa config (random weights)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="batch sizes")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), help="decoding modes")
    parser.add_argument("--tokens", type=int, default=20, help="tokens decoded per caption")
    parser.add_argument("--rounds", type=int, default=5, help="alternating A/B rounds (medians reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    model = edgevl.create_model(args.model)
    size = model.model_cfg["vision_cfg"]["image_size"]
    print(f"# {args.model} random weights, torch {torch.__version__}, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}")
    cells = [(batch, mode) for batch in args.batches for mode in args.modes]
    images = {batch: torch.randn(batch, 3, size, size) for batch in args.batches}
    times: dict[tuple, dict[bool, list[tuple[float, float]]]] = {cell: {True: [], False: []} for cell in cells}
    for batch, mode in cells:  # warm-up, and the two paths must agree token for token
        fast, eager = (caption(model, images[batch], mode, args.tokens, cache)[1] for cache in (True, False))
        if not torch.equal(fast, eager):
            raise SystemExit(f"batch {batch} {mode}: the cached and eager paths disagree")
    for round_index in range(args.rounds):
        for batch, mode in cells:
            order = (True, False) if round_index % 2 == 0 else (False, True)
            for cache in order:
                times[(batch, mode)][cache].append(caption(model, images[batch], mode, args.tokens, cache)[0])
    print("| batch | mode | open_clip eager ms (CPU ms) | edgevl KV cache ms (CPU ms) | ratio wall | ratio CPU | "
          "per-round wall ratios |")
    print("|---|---|---|---|---|---|---|")
    for batch, mode in cells:
        fast, eager = times[(batch, mode)][True], times[(batch, mode)][False]
        ratios = " ".join(f"{f[0] / e[0]:.2f}" for f, e in zip(fast, eager))
        (fast_wall, fast_cpu), (eager_wall, eager_cpu) = (
            [statistics.median(t[i] for t in runs) * 1e3 for i in (0, 1)] for runs in (fast, eager))
        print(f"| {batch} | {mode} | {eager_wall:.0f} ({eager_cpu:.0f}) | {fast_wall:.0f} ({fast_cpu:.0f}) | "
              f"{fast_wall / eager_wall:.2f} | {fast_cpu / eager_cpu:.2f} | {ratios} |")


if __name__ == "__main__":
    main()
