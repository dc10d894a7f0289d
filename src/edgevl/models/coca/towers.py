"""CoCa's three towers in open_clip's key layout: the ViT with one attentional pooler (`visual.*`), the causal text
tower with a CLS appended after the ids (`text.*`) and the multimodal decoder with cross-attention
(`text_decoder.*`). Blocks come from `models/transformer.py`; only what CoCa adds is defined here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgevl.errors import DataError
from edgevl.models.precision import sdpa
from edgevl.models.text import TextTransformer
from edgevl.models.transformer import LayerNorm, ResidualAttentionBlock
from edgevl.models.vit import VisionTransformer


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, D) -> (B, heads, L, D / heads)."""
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, d) -> (B, L, heads * d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class PoolerAttention(nn.Module):
    """Multi-head attention with `nn.MultiheadAttention`'s parameter names for `width`-wide queries and
    `kv_width`-wide keys/values: one packed `in_proj_weight` when the widths agree, else `q_proj_weight`,
    `k_proj_weight`, `v_proj_weight`; always one packed `in_proj_bias` and `out_proj`."""

    def __init__(self, width: int, kv_width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.heads, self.packed = heads, width == kv_width
        if self.packed:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(width, width))
            self.k_proj_weight = nn.Parameter(torch.empty(width, kv_width))
            self.v_proj_weight = nn.Parameter(torch.empty(width, kv_width))
            for weight in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                nn.init.xavier_uniform_(weight)
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, query: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        if self.packed:
            wq, wk, wv = self.in_proj_weight.chunk(3)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q = split_heads(F.linear(query, wq, bq), self.heads)
        k = split_heads(F.linear(kv, wk, bk), self.heads)
        v = split_heads(F.linear(kv, wv, bv), self.heads)
        return self.out_proj(merge_heads(sdpa(q, k, v)))


class AttentionalPooler(nn.Module):
    """`n_queries` learned queries (`ln_q`) attend to all image tokens (`ln_k`); no residual, no MLP."""

    def __init__(self, width: int, kv_width: int, heads: int, n_queries: int, ln_eps: float = 1e-5) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, width))
        self.attn = PoolerAttention(width, kv_width, heads)
        self.ln_q = LayerNorm(width, eps=ln_eps)
        self.ln_k = LayerNorm(kv_width, eps=ln_eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        query = self.ln_q(self.query).expand(tokens.shape[0], -1, -1)
        return self.attn(query, self.ln_k(tokens))


class CoCaVisionTower(VisionTransformer):
    """open_clip's ViT with an attentional pooler: `ln_post` (width `output_dim`) on the pooled queries; query 0
    @ `proj` is the image latent, queries 1.. are the decoder's image tokens."""

    def __init__(self, pool_heads: int, pool_queries: int, **vit_kwargs) -> None:
        super().__init__(**vit_kwargs)
        dim, ln_eps = self.output_dim, self.ln_pre.eps
        del self.ln_post  # re-registered after the pooler, open_clip's state-dict order
        self.attn_pool = AttentionalPooler(dim, self.ln_pre.normalized_shape[0], pool_heads, pool_queries, ln_eps)
        self.ln_post = LayerNorm(dim, eps=ln_eps)
        self.proj = nn.Parameter(dim**-0.5 * torch.randn(dim, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image latent (B, D) unnormalized, image tokens (B, n_queries - 1, D))."""
        pooled = self.ln_post(self.attn_pool(self.encode_tokens(x)))
        return pooled[:, 0] @ self.proj, pooled[:, 1:]


class CoCaTextTower(TextTransformer):
    """Causal text tower whose learned `cls_emb` is appended after the L ids (position L); the attention mask adds
    open_clip's key-padding mask shifted by one: key j is visible iff j == 0 or ids[j - 1] != `pad_id`."""

    def __init__(self, context_length: int, pad_id: int = 0, **text_kwargs) -> None:
        super().__init__(context_length=context_length + 1, **text_kwargs)
        self.text_context, self.pad_id = context_length, pad_id
        pos, proj = self.positional_embedding, self.text_projection
        del self.positional_embedding, self.text_projection  # re-registered after cls_emb: open_clip's order
        self.cls_emb = nn.Parameter(torch.empty(self.width))
        self.positional_embedding, self.text_projection = pos, proj
        nn.init.normal_(self.cls_emb, std=0.01)

    def key_valid(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, L) bool: whether the keys at positions start..start+L-1 may be attended (the shifted pad rule);
        `ids` are all ids from position 0."""
        valid = ids != self.pad_id
        first = torch.ones_like(valid[:, :1])
        return torch.cat([first, valid[:, :-1]], dim=1)[:, start:]

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(text latent (B, D) from the CLS after `ln_final`, unnormalized; token states (B, L, width) without
        `ln_final`)."""
        if ids.dim() != 2:
            raise DataError(f"text token ids must be a (batch, length) tensor, got shape {tuple(ids.shape)}")
        b, n = ids.shape
        x = self.token_embedding(ids)
        x = torch.cat([x, self.cls_emb.to(x.dtype).expand(b, 1, -1)], dim=1) + self.positions(n + 1).to(x.dtype)
        keys = torch.cat([self.key_valid(ids), (ids[:, -1:] != self.pad_id)], dim=1)
        causal = torch.ones(n + 1, n + 1, dtype=torch.bool, device=ids.device).tril()
        x = self.transformer(x, attn_mask=(causal & keys[:, None, :]).unsqueeze(1))
        return self.ln_final(x[:, -1]) @ self.text_projection, x[:, :-1]


class CrossAttentionBlock(ResidualAttentionBlock):
    """Pre-norm cross-attention block: queries `ln_1`(text), keys = values `ln_1_kv`(image tokens), packed
    `attn.in_proj_*` rows [q; k; v]; then `ln_2` + MLP."""

    def __init__(self, width: int, heads: int, act: str = "gelu", ln_eps: float = 1e-5) -> None:
        super().__init__(width, heads, 4.0, act, ln_eps)
        ln_2, mlp = self.ln_2, self.mlp
        del self.ln_2, self.mlp  # re-registered after ln_1_kv: open_clip's order
        self.ln_1_kv = LayerNorm(width, eps=ln_eps)
        self.ln_2, self.mlp = ln_2, mlp

    def image_kv(self, image_embs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head keys and values (B, heads, N, d) of the image tokens; computed once per image."""
        width = image_embs.shape[-1]
        k, v = self.attn.project(self.ln_1_kv(image_embs), slice(width, None)).chunk(2, dim=-1)
        return split_heads(k, self.attn.heads), split_heads(v, self.attn.heads)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The block on text states (B·g, T, D) against the keys/values of B images: the g rows of one image
        (beams) share its keys as extra query positions, so the image tokens are never copied."""
        rows, t, d = x.shape
        q = self.attn.project(self.ln_1(x), slice(0, d)).reshape(k.shape[0], -1, d)
        out = merge_heads(sdpa(split_heads(q, self.attn.heads), k, v)).reshape(rows, t, d)
        x = x + self.attn.out_proj(out)
        return x + self.mlp(self.ln_2(x))

    def forward(self, x: torch.Tensor, image_embs: torch.Tensor) -> torch.Tensor:
        return self.attend(x, *self.image_kv(image_embs))


class MultimodalDecoder(nn.Module):
    """open_clip's `MultimodalTransformer`: per layer a causal self-attention block (`resblocks.i`) then a
    cross-attention block (`cross_attn.i`); `ln_final` and `text_projection` (D, vocab) give the logits."""

    def __init__(self, context_length: int, width: int, heads: int, layers: int, vocab_size: int,
                 act: str = "gelu", ln_eps: float = 1e-5) -> None:
        super().__init__()
        self.context_length = context_length
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, 4.0, act, ln_eps) for _ in range(layers))
        self.cross_attn = nn.ModuleList(CrossAttentionBlock(width, heads, act, ln_eps) for _ in range(layers))
        self.ln_final = LayerNorm(width, eps=ln_eps)
        self.text_projection = nn.Parameter(width**-0.5 * torch.randn(width, vocab_size))

    def forward(self, image_embs: torch.Tensor, token_embs: torch.Tensor) -> torch.Tensor:
        """Logits (B·g, T, vocab) for text states (B·g, T, D) of B images' tokens (B, N, D)."""
        if token_embs.shape[1] > self.context_length:
            raise DataError(f"{token_embs.shape[1]} text positions exceed the decoder context {self.context_length}")
        x = token_embs
        for block, cross in zip(self.resblocks, self.cross_attn):
            x = cross(block(x, is_causal=True), image_embs)
        return self.ln_final(x) @ self.text_projection
