"""Batch-1 end-to-end caption latency: LightCap (RN50 trunk, MCi0 backbone) vs a BLIP-base-sized captioner.

Image (PIL) -> preprocessing -> backbone -> concepts/prefix -> 20 decoded tokens -> text, beam 1 and beam 5,
LightCap with `edgevl.fast.optimize_captioner` (and, for `+int8`, `quantize_decoder()`),
2 threads, flush-denormal on, median of N runs after warm-up. EOS is blocked so every run decodes exactly 20
tokens. The baseline (`sized_captioners.py`) has random weights and BLIP-base's published sizes: ViT-B/16 at 224
(edgevl's OpenAI-layout VisionTransformer) + a 12-layer, 768-wide BERT decoder with cross-attention
(vocab 30,524), run through the same decoding loop with a KV cache. Wall time and process CPU
time are both reported (the machine is shared).

    python benchmarks/captioner.py [--runs 20] [--warmup 3] [--threads 2] [--beams 1 5]

On a CPU shared with other jobs, start it with OMP_WAIT_POLICY=PASSIVE: spinning OpenMP workers then stall every
small decoder op. On an idle machine leave the default: sleeping workers cost a wake-up per op instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from PIL import Image

from edgevl.data.transforms import ImageTransform, PreprocessCfg
from edgevl.fast import optimize_captioner
from edgevl.models.lightcap.decoding import beam_search, greedy_decode
from edgevl.models.lightcap.model import create_lightcap
from sized_captioners import blip_base_sized

TOKENS = 20


# ------------------------------------------------------------------------------------------ timing
def measure(fn, runs: int, warmup: int) -> tuple[float, float]:
    """Median wall ms and median process-CPU ms of `fn()` over `runs` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3


def decode(model, state, beam: int) -> list:
    if beam == 1:
        return greedy_decode(model, state, 1, TOKENS)
    return beam_search(model, state, 1, beam, TOKENS)


def lightcap_runner(name: str, image: Image.Image, beam: int):
    """`name` is a LightCap preset, optionally with `+int8` (decoder int8 dynamic quantization)."""
    preset, _, variant = name.partition("+")
    model = create_lightcap(preset)
    params = sum(p.numel() for p in model.parameters())  # before folding/fusing/quantizing moves them to buffers
    optimize_captioner(model)
    if variant == "int8":
        model.quantize_decoder()
    elif variant:
        raise SystemExit(f"unknown variant {variant!r} in {name!r} (only '+int8')")
    model.blocked_tokens[model.eos_id] = True  # fixed-length runs: exactly 20 tokens
    transform = ImageTransform(model.config.preprocess)

    @torch.inference_mode()
    def full() -> str:
        hyp = decode(model, model.start(transform(image)[None]), beam)[0]
        assert len(hyp.tokens) == TOKENS
        return model.vocab.decode(hyp.tokens)

    @torch.inference_mode()
    def backbone() -> None:
        model.grid_features(transform(image)[None])

    return full, backbone, params


def blip_runner(image: Image.Image, beam: int):
    model = blip_base_sized()
    model.block_eos = True  # fixed-length runs: exactly 20 tokens
    transform = ImageTransform(PreprocessCfg(size=224))

    @torch.inference_mode()
    def full() -> list[int]:
        hyp = decode(model, model.start(transform(image)[None]), beam)[0]
        assert len(hyp.tokens) == TOKENS
        return hyp.tokens

    @torch.inference_mode()
    def backbone() -> None:
        model.visual.forward_features(transform(image)[None])

    return full, backbone, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per setting (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up runs")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5], help="beam sizes to time")
    parser.add_argument("--models", nargs="+",
                        default=["lightcap-mci0", "lightcap-mci0+int8", "lightcap-rn50", "blip-base-sized"],
                        help="which captioners to time (a LightCap preset, '+int8' for an int8 decoder, or "
                             "blip-base-sized)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # random-init trunks produce subnormal activations that crawl on x86
    torch.manual_seed(0)
    image = Image.new("RGB", (640, 480))
    image.paste((200, 80, 40), (100, 100, 400, 300))
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}, "
          f"{time.strftime('%Y-%m-%d')}; {TOKENS} tokens; median of {args.runs} after {args.warmup} warm-up")
    print("| model | params (M) | beam | wall ms | CPU ms | backbone wall ms | backbone share |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for name in args.models:
        for beam in args.beams:
            if name == "blip-base-sized":
                full, backbone, params = blip_runner(image, beam)
            else:
                full, backbone, params = lightcap_runner(name, image, beam)
            wall, cpu = measure(full, args.runs, args.warmup)
            bb_wall, _ = measure(backbone, args.runs, args.warmup)
            results[name, beam] = wall
            print(f"| {name} | {params / 1e6:.1f} | {beam} | {wall:.1f} | {cpu:.1f} | {bb_wall:.1f} | "
                  f"{100 * bb_wall / wall:.0f} % |", flush=True)
    for beam in args.beams:
        if ("blip-base-sized", beam) in results:
            for name in args.models:
                if name != "blip-base-sized" and (name, beam) in results:
                    print(f"beam {beam}: {name} is {results['blip-base-sized', beam] / results[name, beam]:.1f}x "
                          f"faster than blip-base-sized")


if __name__ == "__main__":
    main()
