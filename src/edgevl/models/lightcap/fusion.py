"""TinyBERT-style fusion transformer (post-LN BERT layers) with a sequence-to-sequence mask and a KV cache.

The sequence is [concept tokens, visual tokens | caption tokens]. The prefix attends only to itself; caption
token i attends to the whole prefix and to caption tokens <= i. The prefix therefore never depends on the
caption, so its keys/values are computed once per image and each new caption token runs the layers over one
position only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgevl.models.precision import sdpa


@dataclass
class KVCache:
    """Per-layer keys/values [B, heads, capacity, head_dim] and the number of filled positions."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def select(self, rows: torch.Tensor) -> KVCache:
        """Keep/reorder/repeat batch rows (beam search bookkeeping)."""
        n = self.length
        return KVCache([k.index_select(0, rows) for k in self.keys], [v.index_select(0, rows) for v in self.values], n)


class SelfAttention(nn.Module):
    """BERT multi-head self-attention whose keys/values can come from (and go into) a KV cache."""

    query_scale: float | None = None  # the attention scale; None: 1/√head_dim

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, hidden // heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.out = nn.Linear(hidden, hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of x [B, N, D], split into heads: [B, heads, N, head_dim] each."""
        return self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of x [B, N, D], not split into heads."""
        return self.key(x), self.value(x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: tuple[torch.Tensor, torch.Tensor, int] | None = None) -> torch.Tensor:
        """`mask` [L, L] (True = attend) for a full pass; `cache` = (keys, values, start) to write x's keys/values
        at `start` and attend over everything up to them."""
        q, k, v = self.project(x)
        if cache is not None:
            keys, values, start = cache
            end = start + x.shape[1]
            keys[:, :, start:end], values[:, :, start:end] = k, v
            k, v = keys[:, :, :end], values[:, :, :end]
        y = sdpa(q, k, v, attn_mask=mask, scale=self.query_scale)
        return self.out(y.transpose(1, 2).flatten(2))

    def write_keys_values(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int) -> None:
        """Write x's keys and values into the cache at `start` without attending (no query, no output)."""
        k, v = self.keys_values(x)
        end = start + x.shape[1]
        keys[:, :, start:end], values[:, :, start:end] = self._split(k), self._split(v)


class FusionLayer(nn.Module):
    """Post-LN BERT layer: LN(x + attn(x)), then LN(x + FFN(x)) with a GELU FFN."""

    def __init__(self, hidden: int, heads: int, ffn: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.attention = SelfAttention(hidden, heads)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, ffn)
        self.output = nn.Linear(ffn, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: tuple[torch.Tensor, torch.Tensor, int] | None = None) -> torch.Tensor:
        x = self.attention_norm(x + self.attention(x, mask, cache))
        return self.output_norm(x + self.feed_forward(x))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The GELU feed-forward network (without its residual add and norm)."""
        return self.output(F.gelu(self.intermediate(x)))


def seq2seq_mask(prefix_len: int, caption_len: int, device: torch.device | None = None) -> torch.Tensor:
    """[L, L] boolean mask (True = attend): prefix <-> prefix full, caption -> prefix full + causal caption."""
    total = prefix_len + caption_len
    mask = torch.ones(total, total, dtype=torch.bool, device=device).tril()
    mask[:prefix_len, :prefix_len] = True
    return mask


class FusionEncoder(nn.Module):
    """Embeddings (word, position, token type) + a stack of `FusionLayer`s; TinyBERT-4 is 4 x 312, 12 heads, 1200."""

    def __init__(self, vocab_size: int, hidden: int = 312, layers: int = 4, heads: int = 12, ffn: int = 1200,
                 max_positions: int = 64, eps: float = 1e-12) -> None:
        super().__init__()
        self.hidden, self.heads, self.max_positions = hidden, heads, max_positions
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)  # 0 = caption, 1 = concept tags
        self.embedding_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(FusionLayer(hidden, heads, ffn, eps) for _ in range(layers))

    def embed_text(self, token_embeddings: torch.Tensor, start: int, token_type: int) -> torch.Tensor:
        """Add position (from `start`) and token-type embeddings to [B, N, D] token embeddings, then LayerNorm."""
        n = token_embeddings.shape[1]
        if start + n > self.max_positions:
            raise ValueError(f"text positions {start}..{start + n - 1} exceed max_positions={self.max_positions}")
        positions = self.position_embeddings.weight[start : start + n]
        types = self.token_type_embeddings.weight[token_type]
        return self.embedding_norm(token_embeddings + positions + types)

    def forward(self, prefix: torch.Tensor, caption: torch.Tensor,
                states: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Uncached pass over embedded [prefix | caption] tokens; returns the caption hidden states [B, T, D].

        When `states` is a list, the input of every layer and the last output ([B, L, D] each, prefix included)
        are appended to it (distillation reads hidden states and recomputes attention maps from them)."""
        x = torch.cat([prefix, caption], dim=1)
        mask = seq2seq_mask(prefix.shape[1], caption.shape[1], x.device)
        for layer in self.layers:
            if states is not None:
                states.append(x)
            x = layer(x, mask)
        if states is not None:
            states.append(x)
        return x[:, prefix.shape[1]:]

    def prefill(self, prefix: torch.Tensor, capacity: int) -> KVCache:
        """Run the prefix once and return a cache with room for `capacity` positions in total."""
        b, n, _ = prefix.shape
        shape = (b, self.heads, capacity, self.hidden // self.heads)
        cache = KVCache([prefix.new_empty(shape) for _ in self.layers],
                        [prefix.new_empty(shape) for _ in self.layers], n)
        x = prefix
        *head, last = zip(self.layers, cache.keys, cache.values)
        for layer, keys, values in head:
            x = layer(x, None, (keys, values, 0))
        # the caption only reads the last layer's prefix keys/values, never its prefix outputs
        last[0].attention.write_keys_values(x, last[1], last[2], 0)
        return cache

    def step(self, caption: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Append embedded caption tokens [B, N, D] to `cache` (in place) and return their hidden states."""
        if cache.length + caption.shape[1] > cache.capacity:
            raise ValueError(f"KV cache full ({cache.capacity} positions)")
        x, start = caption, cache.length
        mask = None
        if caption.shape[1] > 1:  # several new caption tokens: causal among themselves
            mask = torch.ones(caption.shape[1], start + caption.shape[1], dtype=torch.bool, device=x.device)
            mask = mask.tril(start)
        for layer, keys, values in zip(self.layers, cache.keys, cache.values):
            x = layer(x, mask, (keys, values, start))
        cache.length += caption.shape[1]
        return x
