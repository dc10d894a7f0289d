"""Batch-1 end-to-end caption latency: LightCap (RN50 trunk, MCi0 backbone) vs a BLIP-base-sized captioner.

Image (PIL) -> preprocessing -> backbone -> concepts/prefix -> 20 decoded tokens -> text, beam 1 and beam 5,
LightCap with `LightCap.optimize_for_inference()` (and, for `+int8`, `quantize_decoder()`),
2 threads, flush-denormal on, median of N runs after warm-up. EOS is blocked so every run decodes exactly 20
tokens. The baseline is built here with random weights from BLIP-base's published sizes: ViT-B/16 at 224
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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from edgevl.data.transforms import ImageTransform, PreprocessCfg
from edgevl.models.lightcap.decoding import beam_search, greedy_decode
from edgevl.models.lightcap.model import create_lightcap
from edgevl.models.vit import VisionTransformer

TOKENS = 20


# ------------------------------------------------------------------------------ BLIP-base-sized baseline
class CrossDecoderLayer(nn.Module):
    """Post-LN BERT decoder layer: causal self-attention (cached), cross-attention to image tokens, FFN."""

    def __init__(self, width: int = 768, heads: int = 12, ffn: int = 3072) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.self_out = nn.Linear(width, width)
        self.norm1 = nn.LayerNorm(width, eps=1e-12)
        self.cross_q = nn.Linear(width, width)
        self.cross_kv = nn.Linear(width, 2 * width)
        self.cross_out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=1e-12)
        self.fc1, self.fc2 = nn.Linear(width, ffn), nn.Linear(ffn, width)
        self.norm3 = nn.LayerNorm(width, eps=1e-12)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def cross_keys_values(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.cross_kv(image).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def forward(self, x, keys, values, position, cross_k, cross_v):
        q, k, v = (self.split(t) for t in self.qkv(x).chunk(3, dim=-1))
        keys[:, :, position], values[:, :, position] = k[:, :, 0], v[:, :, 0]
        y = F.scaled_dot_product_attention(q, keys[:, :, : position + 1], values[:, :, : position + 1])
        x = self.norm1(x + self.self_out(y.transpose(1, 2).flatten(2)))
        y = F.scaled_dot_product_attention(self.split(self.cross_q(x)), cross_k, cross_v)
        x = self.norm2(x + self.cross_out(y.transpose(1, 2).flatten(2)))
        return self.norm3(x + self.fc2(F.gelu(self.fc1(x))))


@dataclass
class BlipState:
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    cross: list[tuple[torch.Tensor, torch.Tensor]]
    position: int

    def select(self, rows: torch.Tensor) -> BlipState:
        return BlipState([k.index_select(0, rows) for k in self.keys], [v.index_select(0, rows) for v in self.values],
                         [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.cross], self.position)


class BlipBaseSized(nn.Module):
    """ViT-B/16 (224) image encoder + 12 x 768 BERT decoder with cross-attention and an untied LM head."""

    bos_id, eos_id, vocab_size, width = 1, 2, 30524, 768

    def __init__(self, layers: int = 12) -> None:
        super().__init__()
        self.visual = VisionTransformer(224, 16, 768, 12, 12)
        self.word = nn.Embedding(self.vocab_size, self.width)
        self.position = nn.Embedding(512, self.width)
        self.embed_norm = nn.LayerNorm(self.width, eps=1e-12)
        self.layers = nn.ModuleList(CrossDecoderLayer() for _ in range(layers))
        self.lm_transform = nn.Sequential(nn.Linear(self.width, self.width), nn.GELU(),
                                          nn.LayerNorm(self.width, eps=1e-12))
        self.lm_decoder = nn.Linear(self.width, self.vocab_size)

    def start(self, pixels: torch.Tensor, capacity: int = TOKENS + 1) -> BlipState:
        image = self.visual.forward_features(pixels)
        shape = (pixels.shape[0], 12, capacity, self.width // 12)
        return BlipState([image.new_zeros(shape) for _ in self.layers], [image.new_zeros(shape) for _ in self.layers],
                         [layer.cross_keys_values(image) for layer in self.layers], 0)

    def step(self, state: BlipState, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed_norm(self.word(tokens[:, None]) + self.position.weight[state.position])
        for layer, keys, values, (ck, cv) in zip(self.layers, state.keys, state.values, state.cross):
            x = layer(x, keys, values, state.position, ck, cv)
        state.position += 1
        logits = self.lm_decoder(self.lm_transform(x[:, 0]))
        logits[:, self.eos_id] = float("-inf")  # fixed-length runs
        return torch.log_softmax(logits, dim=-1)


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
    model.optimize_for_inference()
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
    model = BlipBaseSized().eval()
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
