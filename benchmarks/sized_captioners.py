"""Random-weight captioners with published sizes, as timing baselines (nothing can be downloaded here).

- `blip-base-sized`: BLIP-base, ViT-B/16 at 224 + a 12 x 768 BERT decoder with cross-attention (vocab 30,524).
- `coca-l14-sized`: CoCa ViT-L/14 (DataCompDR's caption generator), ViT-L/14 at 224 + an attentional pooler to
  256 image tokens + 12 unimodal (self-attention) and 12 multimodal (self + cross-attention) 768-wide layers,
  vocab 49,408.

Both decode through edgevl's decoding loop with a KV cache (`start(pixels)` / `step(state, tokens)`), so their
per-token cost is what an efficient implementation pays.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgevl.models.vit import VisionTransformer


class DecoderLayer(nn.Module):
    """Post-LN BERT layer: causal self-attention (cached), optional cross-attention to image tokens, FFN."""

    def __init__(self, width: int = 768, heads: int = 12, ffn: int = 3072, cross: bool = True,
                 image_width: int = 768) -> None:
        super().__init__()
        self.heads, self.cross = heads, cross
        self.qkv = nn.Linear(width, 3 * width)
        self.self_out = nn.Linear(width, width)
        self.norm1 = nn.LayerNorm(width, eps=1e-12)
        if cross:
            self.cross_q = nn.Linear(width, width)
            self.cross_kv = nn.Linear(image_width, 2 * width)
            self.cross_out = nn.Linear(width, width)
            self.norm2 = nn.LayerNorm(width, eps=1e-12)
        self.fc1, self.fc2 = nn.Linear(width, ffn), nn.Linear(ffn, width)
        self.norm3 = nn.LayerNorm(width, eps=1e-12)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def cross_keys_values(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.cross:
            return None
        k, v = self.cross_kv(image).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def forward(self, x, keys, values, position, cross_kv):
        q, k, v = (self.split(t) for t in self.qkv(x).chunk(3, dim=-1))
        keys[:, :, position], values[:, :, position] = k[:, :, 0], v[:, :, 0]
        y = F.scaled_dot_product_attention(q, keys[:, :, : position + 1], values[:, :, : position + 1])
        x = self.norm1(x + self.self_out(y.transpose(1, 2).flatten(2)))
        if cross_kv is not None:
            y = F.scaled_dot_product_attention(self.split(self.cross_q(x)), *cross_kv)
            x = self.norm2(x + self.cross_out(y.transpose(1, 2).flatten(2)))
        return self.norm3(x + self.fc2(F.gelu(self.fc1(x))))


@dataclass
class DecoderState:
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    cross: list[tuple[torch.Tensor, torch.Tensor] | None]
    position: int

    def select(self, rows: torch.Tensor) -> DecoderState:
        def pick(kv):
            return None if kv is None else (kv[0].index_select(0, rows), kv[1].index_select(0, rows))

        return DecoderState([k.index_select(0, rows) for k in self.keys],
                            [v.index_select(0, rows) for v in self.values],
                            [pick(kv) for kv in self.cross], self.position)


class AttentionalPooler(nn.Module):
    """CoCa's pooler: `queries` learned queries cross-attend to the image tokens (LayerNorm on both sides)."""

    def __init__(self, width: int, image_width: int, queries: int = 256, heads: int = 8) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(queries, width) * 0.02)
        self.norm_q, self.norm_k = nn.LayerNorm(width), nn.LayerNorm(image_width)
        self.attn = nn.MultiheadAttention(width, heads, kdim=image_width, vdim=image_width, batch_first=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image = self.norm_k(image)
        q = self.norm_q(self.query).expand(image.shape[0], -1, -1)
        return self.attn(q, image, image, need_weights=False)[0]


class SizedCaptioner(nn.Module):
    """ViT image encoder (+ optional pooler) and a stack of decoder layers with an untied LM head."""

    bos_id, eos_id, width = 1, 2, 768

    def __init__(self, visual: VisionTransformer, layers: list[DecoderLayer], vocab_size: int,
                 pooler: nn.Module | None = None) -> None:
        super().__init__()
        self.visual, self.pooler, self.vocab_size = visual, pooler, vocab_size
        self.word = nn.Embedding(vocab_size, self.width)
        self.position = nn.Embedding(512, self.width)
        self.embed_norm = nn.LayerNorm(self.width, eps=1e-12)
        self.layers = nn.ModuleList(layers)
        self.lm_transform = nn.Sequential(nn.Linear(self.width, self.width), nn.GELU(),
                                          nn.LayerNorm(self.width, eps=1e-12))
        self.lm_decoder = nn.Linear(self.width, vocab_size)
        self.block_eos = False  # True: fixed-length runs

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        image = self.visual.forward_features(pixels)
        return self.pooler(image) if self.pooler is not None else image

    def start(self, pixels: torch.Tensor, capacity: int = 32) -> DecoderState:
        image = self.image_tokens(pixels)
        shape = (pixels.shape[0], self.layers[0].heads, capacity, self.width // self.layers[0].heads)
        keys = [image.new_zeros(shape) for _ in self.layers]
        values = [image.new_zeros(shape) for _ in self.layers]
        return DecoderState(keys, values, [layer.cross_keys_values(image) for layer in self.layers], 0)

    def step(self, state: DecoderState, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed_norm(self.word(tokens[:, None]) + self.position.weight[state.position])
        for layer, keys, values, cross in zip(self.layers, state.keys, state.values, state.cross):
            x = layer(x, keys, values, state.position, cross)
        state.position += 1
        logits = self.lm_decoder(self.lm_transform(x[:, 0]))
        if self.block_eos:
            logits[:, self.eos_id] = float("-inf")
        return torch.log_softmax(logits, dim=-1)


def blip_base_sized() -> SizedCaptioner:
    return SizedCaptioner(VisionTransformer(224, 16, 768, 12, 12), [DecoderLayer() for _ in range(12)], 30524).eval()


def coca_l14_sized() -> SizedCaptioner:
    layers = [DecoderLayer(cross=False) for _ in range(12)] + [DecoderLayer() for _ in range(12)]
    pooler = AttentionalPooler(768, 1024)
    return SizedCaptioner(VisionTransformer(224, 14, 1024, 24, 16), layers, 49408, pooler).eval()


SIZED_CAPTIONERS = {"blip-base-sized": blip_base_sized, "coca-l14-sized": coca_l14_sized}
