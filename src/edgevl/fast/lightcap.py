"""Fast forms of LightCap's decoder for one-row decoding steps: q/k/v as one pre-scaled GEMM, GELU's 1/√2 factors
folded into the weights around it, the ensemble's heads as one GEMM and one LayerNorm, and every step GEMM (the
tied word table's included) from weights prepacked in oneDNN's blocked layout.

Their keys differ from a checkpoint's, so a fast decoder cannot be saved or loaded by mistake; `quantize_decoder`
(int8) still applies to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgevl.fast.packed import PackedWeight, packed_linear
from edgevl.models.lightcap.fusion import FusionLayer, SelfAttention
from edgevl.models.lightcap.heads import EnsembleHead

_GELU_SCALE = 0.5**0.5  # GELU's 1/√2, moved into the weights before and after `erf_gelu_scaled`


def packed_apply(linear: nn.Module, x: torch.Tensor, pack: PackedWeight) -> torch.Tensor:
    """`linear(x)` from `pack`'s blocked copy of a float `nn.Linear`'s weight; any other module (the int8 layers of
    `quantize_decoder`) runs as it is. oneDNN's one-row GEMM streams a weight that does not stay in cache ~2×
    faster than `F.linear` on AMD CPUs (4 x 4.5 MB of fusion weights + the word table per step)."""
    if type(linear) is not nn.Linear:
        return linear(x)
    rows = x.reshape(-1, x.shape[-1])
    return packed_linear(rows, linear.weight, linear.bias, pack).view(*x.shape[:-1], -1)


def erf_gelu_scaled(u: torch.Tensor) -> torch.Tensor:
    """√2·GELU(√2·u) = u + u·erf(u): exact GELU in two cheap ops when the 1/√2 factors live in the weights around
    it (PyTorch's erf GELU costs ~9 µs on a 1200-wide decoding row, these two ~2 µs)."""
    return torch.addcmul(u, u, torch.erf(u))


@torch.no_grad()
def _scaled_copy(linear: nn.Linear, weight_scale: float, bias_scale: float) -> nn.Linear:
    copy = nn.Linear(linear.in_features, linear.out_features, device=linear.weight.device, dtype=linear.weight.dtype)
    copy.weight.copy_(linear.weight * weight_scale)
    copy.bias.copy_(linear.bias * bias_scale)
    return copy


class PackedSelfAttention(SelfAttention):
    """`SelfAttention` with one `qkv` linear instead of three and the 1/√head_dim attention scale folded into its
    query rows (one weight pass and two ops less per decoding step); one new position per row takes two batched
    products instead of the attention kernel."""

    query_scale = 1.0

    @torch.no_grad()
    def __init__(self, attention: SelfAttention) -> None:
        nn.Module.__init__(self)
        self.heads, self.head_dim = attention.heads, attention.head_dim
        query, key, value = attention.query, attention.key, attention.value
        self.out = attention.out
        self.qkv = nn.Linear(query.in_features, 3 * query.out_features, device=query.weight.device,
                             dtype=query.weight.dtype)
        scale = self.head_dim**-0.5
        self.qkv.weight.copy_(torch.cat([query.weight * scale, key.weight, value.weight]))
        self.qkv.bias.copy_(torch.cat([query.bias * scale, key.bias, value.bias]))
        self.qkv_pack, self.out_pack = PackedWeight(), PackedWeight()

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = (self._split(t) for t in self.qkv(x).chunk(3, dim=-1))
        return q, k, v

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        qkv = self.qkv
        if type(qkv) is nn.Linear:
            d = qkv.out_features // 3
            k, v = F.linear(x, qkv.weight[d:], qkv.bias[d:]).chunk(2, dim=-1)
            return k, v
        _, k, v = qkv(x).chunk(3, dim=-1)  # an int8 (dynamic-quantized) projection has no weight rows to slice
        return k, v

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: tuple[torch.Tensor, torch.Tensor, int] | None = None) -> torch.Tensor:
        if cache is not None and x.shape[1] == 1 and mask is None and not torch.is_grad_enabled():
            return self._decode_one(x, *cache)
        return super().forward(x, mask, cache)

    def _decode_one(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int) -> torch.Tensor:
        """One new position per row (pre-scaled queries): two batched products over (row, head) pairs, cheaper
        per decoding step than the flash kernel's setup or 4-D matmuls."""
        b, heads, head_dim = x.shape[0], self.heads, self.head_dim
        q, k, v = packed_apply(self.qkv, x, self.qkv_pack).view(b, 3, heads, head_dim).unbind(1)
        keys[:, :, start], values[:, :, start] = k, v
        end = start + 1
        past_keys = keys[:, :, :end].reshape(b * heads, end, head_dim)  # views: (row, head) merge without a copy
        past_values = values[:, :, :end].reshape(b * heads, end, head_dim)
        weights = torch.bmm(q.reshape(b * heads, 1, head_dim), past_keys.transpose(1, 2)).softmax(dim=-1)
        return packed_apply(self.out, torch.bmm(weights, past_values).view(b, 1, heads * head_dim), self.out_pack)


class PackedFusionLayer(FusionLayer):
    """A `FusionLayer` with `PackedSelfAttention` and its FFN as `ffn_in`/`ffn_out`, GELU's 1/√2 factors folded
    into their weights (`erf_gelu_scaled`)."""

    def __init__(self, layer: FusionLayer) -> None:
        nn.Module.__init__(self)
        self.attention = PackedSelfAttention(layer.attention)
        self.attention_norm, self.output_norm = layer.attention_norm, layer.output_norm
        r = _GELU_SCALE
        self.ffn_in, self.ffn_out = _scaled_copy(layer.intermediate, r, r), _scaled_copy(layer.output, r, 1.0)
        self.ffn_in_pack, self.ffn_out_pack = PackedWeight(), PackedWeight()

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = erf_gelu_scaled(packed_apply(self.ffn_in, x, self.ffn_in_pack))
        return packed_apply(self.ffn_out, hidden, self.ffn_out_pack)


class PackedEnsembleHead(EnsembleHead):
    """An `EnsembleHead` whose heads' dense layers run as one GEMM (scaled by GELU's 1/√2), their LayerNorms as
    one normalization plus one affine op, with pre-stacked biases: 3 heads cost one head's op count per decoding
    step."""

    @torch.no_grad()
    def __init__(self, head: EnsembleHead) -> None:
        nn.Module.__init__(self)
        self.heads, self.output = head.heads, head.output
        heads = self.heads
        for name, tensors in (
            ("dense_weight", [h.dense.weight for h in heads]), ("dense_bias", [h.dense.bias for h in heads]),
        ):
            self.register_buffer(name, torch.cat(tensors).detach() * _GELU_SCALE)
        for name, tensors in (
            ("norm_weight", [h.norm.weight for h in heads]), ("norm_bias", [h.norm.bias for h in heads]),
            ("output_bias", [h.bias for h in heads]),
        ):
            self.register_buffer(name, torch.stack(tensors).detach().clone())
        self.dense_pack = PackedWeight()
        self.table_pack = PackedWeight()  # the tied word table in oneDNN's blocked layout, packed on first use

    def forward(self, x: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """Per-head logits [num_heads, ..., vocab]; the float table's GEMM runs from its blocked copy (on AMD CPUs
        MKL's few-row GEMM against the transposed 10,000 x 312 table took 3.7 ms a step, oneDNN's ~0.15 ms)."""
        if self.output is not None:
            return super().forward(x, word_embeddings)
        hidden = self.transform(x)
        rows = hidden.reshape(-1, hidden.shape[-1])
        logits = packed_linear(rows, word_embeddings, None, self.table_pack).view(*hidden.shape[:-1], -1)
        return logits + self.output_bias.view(len(self.heads), *([1] * (x.dim() - 1)), -1)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        n, d = len(self.heads), x.shape[-1]
        # erf_gelu_scaled gives √2·GELU; the LayerNorm after it is scale-invariant (up to its 1e-12 eps)
        dense = packed_linear(x.reshape(-1, d), self.dense_weight, self.dense_bias, self.dense_pack)
        h = erf_gelu_scaled(dense).view(*x.shape[:-1], n, d)
        h = torch.addcmul(self.norm_bias, F.layer_norm(h, (d,), eps=self.heads[0].norm.eps), self.norm_weight)
        return h.movedim(-2, 0).contiguous()

    def biases(self) -> torch.Tensor:
        return self.output_bias
