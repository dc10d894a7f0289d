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

    def pack_qkv(self) -> None:
        """Inference: one `qkv` linear instead of three, with the 1/√head_dim attention scale folded into its query
        rows (one weight pass and two ops less per decoding step); idempotent."""
        if hasattr(self, "qkv"):
            return
        qkv = nn.Linear(self.query.in_features, 3 * self.query.out_features, device=self.query.weight.device,
                        dtype=self.query.weight.dtype)
        scale = self.head_dim**-0.5
        with torch.no_grad():
            qkv.weight.copy_(torch.cat([self.query.weight * scale, self.key.weight, self.value.weight]))
            qkv.bias.copy_(torch.cat([self.query.bias * scale, self.key.bias, self.value.bias]))
        self.qkv = qkv
        del self.query, self.key, self.value

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: tuple[torch.Tensor, torch.Tensor, int] | None = None) -> torch.Tensor:
        """`mask` [L, L] (True = attend) for a full pass; `cache` = (keys, values, start) to write x's keys/values
        at `start` and attend over everything up to them."""
        packed = hasattr(self, "qkv")
        if packed and cache is not None and x.shape[1] == 1 and mask is None and not torch.is_grad_enabled():
            return self._decode_one(x, *cache)
        if packed:
            q, k, v = (self._split(t) for t in self.qkv(x).chunk(3, dim=-1))
        else:
            q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        if cache is not None:
            keys, values, start = cache
            end = start + x.shape[1]
            keys[:, :, start:end], values[:, :, start:end] = k, v
            k, v = keys[:, :, :end], values[:, :, :end]
        y = sdpa(q, k, v, attn_mask=mask, scale=1.0 if packed else None)
        return self.out(y.transpose(1, 2).flatten(2))

    def write_keys_values(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int) -> None:
        """Write x's keys and values into the cache at `start` without attending (no query, no output)."""
        qkv = getattr(self, "qkv", None)
        if type(qkv) is nn.Linear:
            d = qkv.out_features // 3
            k, v = F.linear(x, qkv.weight[d:], qkv.bias[d:]).chunk(2, dim=-1)
        elif qkv is not None:  # an int8 (dynamic-quantized) projection has no weight rows to slice
            _, k, v = qkv(x).chunk(3, dim=-1)
        else:
            k, v = self.key(x), self.value(x)
        end = start + x.shape[1]
        keys[:, :, start:end], values[:, :, start:end] = self._split(k), self._split(v)

    def _decode_one(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int) -> torch.Tensor:
        """One new position per row (packed, pre-scaled queries): two batched products over (row, head) pairs,
        cheaper per decoding step than the flash kernel's setup or 4-D matmuls."""
        b, heads, head_dim = x.shape[0], self.heads, self.head_dim
        q, k, v = self.qkv(x).view(b, 3, heads, head_dim).unbind(1)
        keys[:, :, start], values[:, :, start] = k, v
        end = start + 1
        past_keys = keys[:, :, :end].reshape(b * heads, end, head_dim)  # views: (row, head) merge without a copy
        past_values = values[:, :, :end].reshape(b * heads, end, head_dim)
        weights = torch.bmm(q.reshape(b * heads, 1, head_dim), past_keys.transpose(1, 2)).softmax(dim=-1)
        return self.out(torch.bmm(weights, past_values).view(b, 1, heads * head_dim))


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
        if hasattr(self, "ffn_in"):
            return self.output_norm(x + self.ffn_out(erf_gelu_scaled(self.ffn_in(x))))
        return self.output_norm(x + self.output(F.gelu(self.intermediate(x))))

    @torch.no_grad()
    def pack(self) -> None:
        """Inference: packed q/k/v (`SelfAttention.pack_qkv`), and the FFN as `ffn_in`/`ffn_out` with GELU's
        1/√2 factors folded into their weights (`erf_gelu_scaled`); the keys change, so a packed layer cannot be
        saved or loaded by mistake. Idempotent."""
        self.attention.pack_qkv()
        if hasattr(self, "ffn_in"):
            return
        r = 0.5**0.5
        self.ffn_in, self.ffn_out = _scaled_copy(self.intermediate, r, r), _scaled_copy(self.output, r, 1.0)
        del self.intermediate, self.output


def _scaled_copy(linear: nn.Linear, weight_scale: float, bias_scale: float) -> nn.Linear:
    copy = nn.Linear(linear.in_features, linear.out_features, device=linear.weight.device, dtype=linear.weight.dtype)
    copy.weight.copy_(linear.weight * weight_scale)
    copy.bias.copy_(linear.bias * bias_scale)
    return copy


def erf_gelu_scaled(u: torch.Tensor) -> torch.Tensor:
    """√2·GELU(√2·u) = u + u·erf(u): exact GELU in two cheap ops when the 1/√2 factors live in the weights around
    it (PyTorch's erf GELU costs ~9 µs on a 1200-wide decoding row, these two ~2 µs)."""
    return torch.addcmul(u, u, torch.erf(u))


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
