"""Next-token logits for CoCa generation, two ways with the same numbers up to float rounding, and the stops.

`CachedDecoding` keeps every self-attention layer's keys and values (text tower and decoder), so each step runs
only the new ids; the image tokens' cross-attention keys/values are computed once per image and shared by its
beams. The appended CLS is skipped: it sits after every id, so causal attention never shows it to them.
`EagerDecoding` is open_clip's loop: the text tower (with its CLS) and the decoder re-run on the whole prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from edgevl.errors import DataError
from edgevl.models.coca.towers import merge_heads, split_heads
from edgevl.models.precision import sdpa
from edgevl.models.transformer import ResidualAttentionBlock

StoppingCriterion = Callable[[torch.Tensor, "torch.Tensor | None"], "torch.Tensor | bool"]


class LayerCache:
    """Keys and values of one self-attention layer, (rows, heads, max_len, head_dim) each, filled up to `length`."""

    def __init__(self, rows: int, heads: int, max_len: int, head_dim: int, like: torch.Tensor) -> None:
        shape = (rows, heads, max_len, head_dim)
        self.k = like.new_empty(shape)
        self.v = like.new_empty(shape)

    def select(self, rows: torch.Tensor, length: int) -> None:
        """Keep (and reorder to) `rows`, copying only the filled positions."""
        for name in ("k", "v"):
            old = getattr(self, name)
            new = old.new_empty((len(rows), *old.shape[1:]))
            new[:, :, :length] = old[rows, :, :length]
            setattr(self, name, new)


def cached_block(block: ResidualAttentionBlock, x: torch.Tensor, cache: LayerCache, start: int,
                 mask: torch.Tensor | None) -> torch.Tensor:
    """A pre-norm self-attention block on new states `x` (rows, T, D) at positions start..start+T-1, attending
    to the cached keys/values before them; `mask` (bool, True = visible) covers keys 0..start+T-1."""
    heads, end = block.attn.heads, start + x.shape[1]
    q, k, v = block.attn.project(block.ln_1(x)).chunk(3, dim=-1)
    cache.k[:, :, start:end] = split_heads(k, heads)
    cache.v[:, :, start:end] = split_heads(v, heads)
    out = sdpa(split_heads(q, heads), cache.k[:, :, :end], cache.v[:, :, :end], attn_mask=mask)
    x = x + block.attn.out_proj(merge_heads(out))
    return x + block.mlp(block.ln_2(x))


class CachedDecoding:
    """Incremental next-token logits: `logits(ids)` feeds the ids not seen yet; `select(rows)` keeps or reorders
    rows (beams, finished rows dropped). Row r attends to image r // `rows_per_image` until images are selected."""

    def __init__(self, model: torch.nn.Module, image_embs: torch.Tensor, rows_per_image: int, max_len: int) -> None:
        self.text, self.decoder = model.text, model.text_decoder
        self.rows_per_image, self.max_len, self.length = rows_per_image, max_len, 0
        self.image_kv = [cross.image_kv(image_embs) for cross in self.decoder.cross_attn]
        self.caches: list[LayerCache] = []
        self.key_valid: torch.Tensor | None = None

    def _allocate(self, rows: int, like: torch.Tensor) -> None:
        blocks = [*self.text.transformer.resblocks, *self.decoder.resblocks]
        for block in blocks:
            heads = block.attn.heads
            self.caches.append(LayerCache(rows, heads, self.max_len, like.shape[-1] // heads, like))
        self.key_valid = torch.zeros(rows, self.max_len, dtype=torch.bool, device=like.device)

    def select(self, rows: torch.Tensor, images: bool = False) -> None:
        """Keep `rows` (indices into the current rows, in the new order); `images=True` when rows are images
        (one row per image), so the image keys/values follow them."""
        for cache in self.caches:
            cache.select(rows, self.length)
        self.key_valid = self.key_valid[rows]
        if images:
            self.image_kv = [(k[rows], v[rows]) for k, v in self.image_kv]

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Last-position logits (rows, vocab) for `ids` (rows, L): all ids from position 0, of which those at
        positions >= the cached length are run."""
        start, end = self.length, ids.shape[1]
        if end > self.max_len:
            raise DataError(f"generation reached {end} ids, more than the {self.max_len} this CoCa takes")
        x = self.text.token_embedding(ids[:, start:]) + self.text.positional_embedding[start:end].to(
            self.text.token_embedding.weight.dtype)
        if not self.caches:
            self._allocate(ids.shape[0], x)
        self.key_valid[:, start:end] = self.text.key_valid(ids, start)
        positions = torch.arange(end, device=ids.device)
        causal = (positions[None, :] <= positions[start:, None])[None, None]  # (1, 1, T, end)
        valid = self.key_valid[:, :end]
        text_mask = None if end - start == 1 and bool(valid.all()) else causal & valid[:, None, None, :]
        decoder_mask = None if end - start == 1 else causal
        n_text = len(self.text.transformer.resblocks)
        for block, cache in zip(self.text.transformer.resblocks, self.caches[:n_text]):
            x = cached_block(block, x, cache, start, text_mask)
        for block, cross, cache, kv in zip(self.decoder.resblocks, self.decoder.cross_attn, self.caches[n_text:],
                                           self.image_kv):
            x = cross.attend(cached_block(block, x, cache, start, decoder_mask), *kv)
        self.length = end
        return self.decoder.ln_final(x[:, -1]) @ self.decoder.text_projection


class EagerDecoding:
    """open_clip's uncached step: the text tower and the decoder on the last `max_seq_len` ids of every row (all
    of them when None), each row with its own copy of its image's tokens; the last position's logits are kept."""

    def __init__(self, model: torch.nn.Module, image_embs: torch.Tensor, rows_per_image: int,
                 max_seq_len: int | None = None) -> None:
        self.model, self.max_seq_len = model, max_seq_len
        self.image_embs = image_embs.repeat_interleave(rows_per_image, dim=0)

    def select(self, rows: torch.Tensor, images: bool = False) -> None:
        """Nothing is cached: the ids passed to `logits` say everything (rows keep their image)."""

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Last-position logits (rows, vocab) for `ids` (rows, L)."""
        window = ids if self.max_seq_len is None else ids[:, -self.max_seq_len:]
        token_embs = self.model.text(window)[1]
        return self.model.text_decoder(self.image_embs, token_embs)[:, -1]


class MaxLengthCriteria:
    """Stop once the sequences (SOT included) are `max_length` ids long (transformers' criterion of that name)."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def __call__(self, ids: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
        return torch.full((ids.shape[0],), ids.shape[1] >= self.max_length, dtype=torch.bool, device=ids.device)


def all_stopped(criteria: Sequence[StoppingCriterion], ids: torch.Tensor) -> bool:
    """True when every row meets at least one criterion."""
    stop = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    for criterion in criteria:
        stop |= torch.as_tensor(criterion(ids, None), device=ids.device).expand(ids.shape[0])
    return bool(stop.all())
