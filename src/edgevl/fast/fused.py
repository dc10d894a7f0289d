"""Fast forms of whole blocks whose feed-forward network runs as one fused unit (`FusedFFN`).

Each fused block takes over the children of the folded reference block it replaces (token mixer, norms,
attention, the ConvFFN's depthwise conv) and computes its GELU feed-forward network, layer scale and residual add
as `FusedFFN`: two oneDNN GEMMs from prepacked weights with the GELU and the add in their epilogues.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgevl import backend
from edgevl.fast.packed import PackedWeight, packed_linear
from edgevl.models.blocks import AttentionBlock, RepMixerBlock
from edgevl.models.transformer import ResidualAttentionBlock


def _as_matrix(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [out, in], bias [out]) of a Linear or 1×1 Conv2d."""
    weight = layer.weight.detach().flatten(1)
    bias = layer.bias.detach() if layer.bias is not None else weight.new_zeros(weight.shape[0])
    return weight, bias


def nhwc(x: torch.Tensor) -> torch.Tensor:
    """An NCHW map as NHWC rows (a view)."""
    return x.permute(0, 2, 3, 1)


class FusedFFN(nn.Module):
    """`residual + γ·fc2(GELU(fc1(x)))` on channels-last rows [..., C]: the GELU runs in the epilogue of fc1's
    oneDNN GEMM (one pass less over the widest activation), γ (layer scale, or 1) is folded into fc2, and both
    GEMMs run from `PackedWeight`s, fc2 with the residual added in its epilogue.

    Under autocast, or for inputs of another dtype, the plain ops run instead. Many rows (large batches) are
    processed in row tiles so that each tile's hidden activation is still in cache when fc2 reads it.
    """

    # ≈ 3 MB of fp32 hidden activation per tile; measured on S0's ConvFFNs at batch 32, 2 threads:
    # stage 1 110 -> 76 ms, stage 2 71 -> 52 ms per block, and no gain below two tiles' worth of rows
    TILE_HIDDEN_ELEMENTS = 786_432

    def __init__(self, fc1: nn.Module, fc2: nn.Module, gamma: torch.Tensor | None = None) -> None:
        super().__init__()
        w1, b1 = _as_matrix(fc1)
        w2, b2 = _as_matrix(fc2)
        if gamma is not None:
            g = gamma.detach().flatten()
            w2, b2 = w2 * g[:, None], b2 * g
        for name, value in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
            self.register_buffer(name, value.contiguous().clone())
        self.pack1, self.pack2 = PackedWeight(), PackedWeight()

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])  # 2-D: oneDNN's 3-D/4-D path is slower
        res_rows = residual.reshape(-1, residual.shape[-1])
        if not backend.may_run_blocked(x, self.w1) or residual.dtype != self.w2.dtype:
            hidden = packed_linear(rows, self.w1, self.b1, self.pack1, gelu=True)
            # the add right after the 2-D GEMM: inductor's freezing passes fuse it into the GEMM's epilogue
            return (F.linear(hidden, self.w2, self.b2) + res_rows).view(residual.shape)
        tile = self._tile_rows()
        if len(rows) < 2 * tile:
            return self._tile(rows, res_rows).view(residual.shape)
        out = torch.empty_like(res_rows)
        for start in range(0, len(rows), tile):
            out[start : start + tile] = self._tile(rows[start : start + tile], res_rows[start : start + tile])
        return out.view(residual.shape)

    def _tile(self, rows: torch.Tensor, res_rows: torch.Tensor) -> torch.Tensor:
        """res_rows + fc2(GELU(fc1(rows))), both GEMMs from the blocked weights, the add in fc2's epilogue."""
        hidden = backend.linear(rows, self.pack1.of(self.w1), self.b1, gelu=True)
        return backend.linear_add(hidden, res_rows, self.pack2.of(self.w2), self.b2)

    def _tile_rows(self) -> int:
        """Rows per tile: a power of two holding about `TILE_HIDDEN_ELEMENTS` hidden values (at least 256)."""
        return max(256, 1 << (self.TILE_HIDDEN_ELEMENTS // self.w1.shape[0]).bit_length() - 1)


class FusedConvBlock(nn.Module):
    """A folded `RepMixerBlock`: token mixer, then `x + γ·ConvFFN(x)` with `FusedFFN`."""

    def __init__(self, block: RepMixerBlock) -> None:
        super().__init__()
        self.token_mixer, self.conv = block.token_mixer, block.mlp.conv
        self.ffn = FusedFFN(block.mlp.fc1, block.mlp.fc2, block.layer_scale.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.token_mixer(x)
        return self.ffn(nhwc(self.conv(y)), nhwc(y)).permute(0, 3, 1, 2)


class FusedTextConvBlock(FusedConvBlock):
    """A folded MCt `TextRepMixerBlock` (on (B, L, C) tokens) with `FusedFFN`."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        y = self.token_mixer(x.transpose(1, 2).unsqueeze(2))
        return self.ffn(nhwc(self.conv(y)), nhwc(y)).squeeze(1)


class FusedAttentionBlock(nn.Module):
    """A folded MCi `AttentionBlock`: `x + γ1·attn(norm(x))`, then `x + γ2·ConvFFN(x)` with `FusedFFN`."""

    def __init__(self, block: AttentionBlock) -> None:
        super().__init__()
        self.norm, self.token_mixer, self.layer_scale_1 = block.norm, block.token_mixer, block.layer_scale_1
        self.conv = block.mlp.conv
        self.ffn = FusedFFN(block.mlp.fc1, block.mlp.fc2, block.layer_scale_2.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1(self.token_mixer(self.norm(x)))
        return self.ffn(nhwc(self.conv(x)), nhwc(x)).permute(0, 3, 1, 2)


class FusedResidualAttentionBlock(nn.Module):
    """A transformer `ResidualAttentionBlock` (GELU MLP) whose MLP and second residual add run as `FusedFFN`."""

    def __init__(self, block: ResidualAttentionBlock) -> None:
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = block.ln_1, block.attn, block.ln_2
        self.ffn = FusedFFN(block.mlp.c_fc, block.mlp.c_proj)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask=attn_mask, is_causal=is_causal)
        return self.ffn(self.ln_2(x), x)
