"""Inference-only optimisations on top of reparameterization (not a checkpoint layout, just speed).

`optimize_for_inference` folds the multi-branch blocks (`reparameterize`), then also folds the conv+BN pairs
that the reference keeps unfolded (the ConvFFN depthwise convs), switches conv weights to channels_last (the
memory format oneDNN's CPU convolutions prefer), runs 1×1 convs as matrix multiplies over channels-last pixels
and channel-multiplier grouped convs as several depthwise convs, lets causal text towers skip the padding after
the end token, and (where oneDNN is available) applies each feed-forward network's GELU inside its first GEMM
and folds the layer scale into its second, which saves two passes over the widest activations of every block,
and runs every GEMM and conv from weights prepacked once in oneDNN's blocked layout (`PackedWeight`).
For export use `reparameterize`; tracing and `torch.compile` of the optimized model take the plain ops.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edgevl.models.blocks import (
    AttentionBlock,
    ConvNorm,
    MobileOneBlock,
    ReparamLargeKernelConv,
    RepMixerBlock,
    folded_conv,
)
from edgevl.models.factory import reparameterize
from edgevl.models.text import TextRepMixerBlock, prune_to_pooled, trim_causal_padding
from edgevl.models.transformer import Attention, ResidualAttentionBlock, gather_rows


def _replace_children(model: nn.Module, build: Callable[[nn.Module], nn.Module | None]) -> int:
    """Replace, in place, every submodule for which `build` returns a module by that module; returns the count."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            replacement = build(child)
            if replacement is not None:
                setattr(parent, name, replacement)
                count += 1
    return count


def _fusion_available() -> bool:
    """True when this torch build has oneDNN's fused linear and conv ops (CPU builds with mkldnn)."""
    return torch.backends.mkldnn.is_available() and (
        hasattr(torch.ops.mkldnn, "_linear_pointwise") and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    )


def _epilogue_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether oneDNN's fused-epilogue ops may run: a CPU input of the weight's dtype, outside autocast, tracing
    and `torch.compile` (which have no kernels for these ops), with no gradient asked for (they have no backward)."""
    return (
        x.device.type == "cpu"
        and x.dtype == weight.dtype
        and not torch.is_autocast_enabled("cpu")
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


def _packing_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a GEMM or conv may use a `PackedWeight`: as `_epilogue_ok`, for float32."""
    return weight.dtype == torch.float32 and _epilogue_ok(x, weight)


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors keep no version counter (and cannot be changed outside inference)
        return -1


class PackedWeight:
    """A linear or conv weight reordered once into oneDNN's blocked layout, for its `mkldnn` pointwise ops.

    GEMMs and convs from the blocked layout skip the per-call weight reorder: 10-20 % faster than `F.linear` at
    batch-1 row counts (S0 text: 77 tokens x 512->2048 475 -> 400 µs) and 15-40 % faster depthwise convs (S0
    stage 3, 7×7 over 16×16×256: 68 -> 52 µs), 2 threads. `conv` is (padding, stride, dilation, groups) for a
    conv weight, None for a linear one. Kept outside the state dict: rebuilt whenever the source weight is
    replaced, moved or changed in place, and dropped on copy/pickle.
    """

    def __init__(self, conv: tuple | None = None) -> None:
        self.conv = conv
        self._key: tuple | None = None
        self._packed: torch.Tensor | None = None

    def of(self, weight: torch.Tensor) -> torch.Tensor:
        """The blocked copy of `weight` (a float32 CPU tensor), reordered if `weight` changed since."""
        key = (weight.data_ptr(), weight.shape, weight.stride(), _version(weight))
        if key != self._key:
            if self.conv is None:
                self._packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
            else:
                self._packed = torch.ops.mkldnn._reorder_convolution_weight(weight.detach(), *self.conv)
            self._key = key
        return self._packed

    def __deepcopy__(self, memo: dict) -> PackedWeight:
        return PackedWeight(self.conv)  # opaque oneDNN tensors cannot be copied; the copy repacks on first use

    def __getstate__(self) -> dict:
        return {"conv": self.conv, "_key": None, "_packed": None}


def packed_linear(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pack: PackedWeight,
                  gelu: bool = False) -> torch.Tensor:
    """`F.linear` on 2-D rows (then an exact GELU when `gelu`), from `pack`'s blocked weight where it may run."""
    if _packing_ok(rows, weight):
        return torch.ops.mkldnn._linear_pointwise(
            rows, pack.of(weight), bias, "gelu" if gelu else "none", [], "none" if gelu else ""
        )
    if gelu and _epilogue_ok(rows, weight):
        return torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "gelu", [], "none")
    out = F.linear(rows, weight, bias)
    return F.gelu(out) if gelu else out


class PackedLinear(nn.Module):
    """An `nn.Linear` (same `weight`/`bias`) whose float32 CPU GEMMs run from a `PackedWeight`."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.pack = PackedWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])  # 2-D: oneDNN's 3-D path is slower
        return packed_linear(rows, self.weight, self.bias, self.pack).view(*x.shape[:-1], -1)


class PackedAttention(Attention):
    """A transformer `Attention` (same parameters) whose input projections run from `PackedWeight`s."""

    def __init__(self, attn: Attention) -> None:
        super().__init__(attn.in_proj_weight.shape[1], attn.heads)
        self.in_proj_weight, self.in_proj_bias = attn.in_proj_weight, attn.in_proj_bias
        out_proj = attn.out_proj
        self.out_proj = PackedLinear(out_proj) if type(out_proj) is nn.Linear else out_proj
        self.packs: dict[tuple, PackedWeight] = {}

    def project(self, x: torch.Tensor, part: slice = slice(None)) -> torch.Tensor:
        pack = self.packs.setdefault((part.start, part.stop), PackedWeight())
        rows = x.reshape(-1, x.shape[-1])
        return packed_linear(rows, self.in_proj_weight[part], self.in_proj_bias[part], pack).view(*x.shape[:-1], -1)


def _packed_linear_layer(child: nn.Module) -> nn.Module | None:
    if type(child) is nn.Linear:
        return PackedLinear(child)
    return PackedAttention(child) if type(child) is Attention else None


def pack_linears(model: nn.Module) -> int:
    """Replace, in place, every plain `nn.Linear` by `PackedLinear` and every transformer `Attention` by
    `PackedAttention`; returns the count."""
    return _replace_children(model, _packed_linear_layer)


def _conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
            padding: tuple[int, int], dilation: tuple[int, int], groups: int, gelu: bool,
            pack: PackedWeight | None = None) -> torch.Tensor:
    """`F.conv2d`, followed by an exact GELU when `gelu`; runs as oneDNN's conv (from `pack`'s blocked weight,
    with the GELU inside) when it can. Blocked weights always give channels_last outputs, so they are used for
    channels_last inputs only."""
    fused = gelu and _epilogue_ok(x, weight)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if pack is not None and channels_last and _packing_ok(x, weight):
        weight, fused = pack.of(weight), True
    if fused:
        attr, algorithm = ("gelu", "none") if gelu else ("none", "")
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, bias, padding, stride, dilation, groups, attr, [], algorithm
        )
    out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return F.gelu(out) if gelu else out


def _conv_pack(conv: nn.Conv2d) -> PackedWeight:
    return PackedWeight((list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups))


def _folded_conv_norm(child: nn.Module) -> nn.Module | None:
    if not isinstance(child, ConvNorm):
        return None
    weight, bias = child.fused()
    with torch.no_grad():
        return folded_conv(weight, bias, child.conv.stride[0], child.conv.groups)


def fold_conv_norms(model: nn.Module) -> int:
    """Replace, in place, every remaining `ConvNorm` / text `ConvBn` (conv + eval-mode BN) by one conv with bias;
    returns the count."""
    return _replace_children(model, _folded_conv_norm)


class PointwiseLinear(nn.Module):
    """A 1×1 convolution computed as one matrix multiply over channels-last pixels.

    For small feature maps PyTorch runs 1×1 convs through its slow unfold path; on a channels_last input the
    permute below is free and `F.linear` is a single GEMM. Output is NCHW-shaped with channels_last strides.
    """

    def __init__(self, conv: nn.Conv2d, gelu: bool = False) -> None:
        super().__init__()
        self.gelu = gelu
        self.weight = nn.Parameter(conv.weight.detach().flatten(1).clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.pack = PackedWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x.permute(0, 2, 3, 1)
        rows = pixels.reshape(-1, pixels.shape[-1])  # 2-D: oneDNN's 4-D path is slower
        out = packed_linear(rows, self.weight, self.bias, self.pack, self.gelu)
        return out.view(*pixels.shape[:3], -1).permute(0, 3, 1, 2)


def _is_pointwise(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.groups == 1
        and conv.padding in ((0, 0), "valid")
    )


def pointwise_convs_to_linear(model: nn.Module) -> int:
    """Replace, in place, every plain 1×1 conv by `PointwiseLinear`; returns the count."""
    return _replace_children(model, lambda child: PointwiseLinear(child) if _is_pointwise(child) else None)


class MultiplierDepthwiseConv(nn.Module):
    """A grouped conv with one input channel and m > 1 output channels per group, computed as m depthwise convs
    whose outputs are interleaved (output channel g·m + j is depthwise conv j of input channel g).

    oneDNN has no fast kernel for channel multipliers; m depthwise convs are 3-7× faster on MCi's downsampling
    7×7 convs and its final 3×3 conv (S0 at batch 32: 121 -> 38 ms over the four layers, 2 threads).
    """

    def __init__(self, conv: nn.Conv2d, gelu: bool = False) -> None:
        super().__init__()
        self.gelu = gelu
        self.multiplier = conv.out_channels // conv.in_channels
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        weight = conv.weight.detach()
        bias = conv.bias.detach() if conv.bias is not None else weight.new_zeros(conv.out_channels)
        m = self.multiplier
        self.register_buffer("weights", torch.stack([weight[j::m] for j in range(m)]).contiguous())
        self.register_buffer("biases", torch.stack([bias[j::m] for j in range(m)]).contiguous())
        self.packs = [_conv_pack(conv) for _ in range(m)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [_conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups, self.gelu, pack)
                for w, b, pack in zip(self.weights, self.biases, self.packs)]
        if x.is_contiguous(memory_format=torch.channels_last):  # interleave along the innermost (channel) axis
            out = torch.stack([o.permute(0, 2, 3, 1) for o in outs], dim=-1)
            return out.view(*out.shape[:3], -1).permute(0, 3, 1, 2)
        out = torch.stack(outs, dim=2)
        return out.view(out.shape[0], -1, *out.shape[3:])


def _is_channel_multiplier(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.groups == conv.in_channels > 1
        and conv.out_channels % conv.in_channels == 0
        and conv.out_channels > conv.in_channels
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
    )


def split_channel_multiplier_convs(model: nn.Module) -> int:
    """Replace, in place, every channel-multiplier grouped conv by `MultiplierDepthwiseConv`; returns the count."""
    return _replace_children(
        model, lambda child: MultiplierDepthwiseConv(child) if _is_channel_multiplier(child) else None
    )


def _as_matrix(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [out, in], bias [out]) of a Linear, 1×1 Conv2d or PointwiseLinear."""
    weight = layer.weight.detach().flatten(1)
    bias = layer.bias.detach() if layer.bias is not None else weight.new_zeros(weight.shape[0])
    return weight, bias


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
        if not _packing_ok(x, self.w1) or residual.dtype != self.w2.dtype:
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
        hidden = torch.ops.mkldnn._linear_pointwise(rows, self.pack1.of(self.w1), self.b1, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise.binary(hidden, res_rows, self.pack2.of(self.w2), self.b2, "add")

    def _tile_rows(self) -> int:
        """Rows per tile: a power of two holding about `TILE_HIDDEN_ELEMENTS` hidden values (at least 256)."""
        return max(256, 1 << (self.TILE_HIDDEN_ELEMENTS // self.w1.shape[0]).bit_length() - 1)


class PackedConv(nn.Module):
    """A plain conv (zero padding) run as oneDNN's convolution from a `PackedWeight`; with `gelu`, the GELU of a
    folded MobileOne / large-kernel block inside it.

    A separate GELU pass costs as much as the conv itself on MCi's stem (S0 at 256²: 2.0 -> 0.3 ms for its
    first conv, 2 threads); falls back to `F.conv2d` (then GELU) where oneDNN's op cannot run (autocast, other
    devices, tracing).
    """

    def __init__(self, conv: nn.Conv2d, gelu: bool = False) -> None:
        super().__init__()
        self.gelu = gelu
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.register_buffer("weight", conv.weight.detach().clone())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        self.pack = _conv_pack(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups, self.gelu,
                       self.pack)


def _is_plain_conv(conv: nn.Module) -> bool:
    return type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)


def pack_convs(model: nn.Module) -> int:
    """Replace, in place, every remaining plain conv by `PackedConv`; returns the count."""
    return _replace_children(model, lambda child: PackedConv(child) if _is_plain_conv(child) else None)


def _conv_gelu(child: nn.Module) -> nn.Module | None:
    if not isinstance(child, (MobileOneBlock, ReparamLargeKernelConv)) or child.reparam_conv is None:
        return None
    conv, act = child.reparam_conv, child.act
    if type(child.se) is not nn.Identity or type(act) is not nn.GELU or act.approximate != "none":
        return None
    if not _is_plain_conv(conv):
        return None
    if _is_pointwise(conv):
        return PointwiseLinear(conv, gelu=True)
    if _is_channel_multiplier(conv):
        return MultiplierDepthwiseConv(conv, gelu=True)
    return PackedConv(conv, gelu=True)


def fuse_conv_gelu(model: nn.Module) -> int:
    """Replace, in place, every folded MobileOne / large-kernel block without SE whose activation is GELU by its
    conv with the GELU fused in (`PackedConv`, or the GEMM / depthwise forms for 1×1 and multiplier convs)."""
    return _replace_children(model, _conv_gelu)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


class FusedConvBlock(nn.Module):
    """A folded `RepMixerBlock` / `TextRepMixerBlock`: token mixer, then `x + γ·ConvFFN(x)` with `FusedFFN`."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.text = isinstance(block, TextRepMixerBlock)
        self.token_mixer, self.conv = block.token_mixer, block.mlp.conv
        self.ffn = FusedFFN(block.mlp.fc1, block.mlp.fc2, block.layer_scale.gamma)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        y = self.token_mixer(x.transpose(1, 2).unsqueeze(2) if self.text else x)
        out = self.ffn(_nhwc(self.conv(y)), _nhwc(y))  # [B, H, W, C]
        return out.squeeze(1) if self.text else out.permute(0, 3, 1, 2)

    @property
    def reach(self) -> int:
        """As `TextRepMixerBlock.reach` (text blocks only)."""
        return 2 * (self.token_mixer.kernel_size[1] // 2)

    def forward_center(self, window: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """As `TextRepMixerBlock.forward_center`: the output at the centre of a zero-padded window, (B, C)."""
        y = self.token_mixer(window.transpose(1, 2).unsqueeze(2)) * valid[:, None, None, :]
        mid = slice(self.reach, self.reach + 1)
        return self.ffn(_nhwc(self.conv(y)[..., mid]).contiguous(), _nhwc(y[..., mid]).contiguous()).flatten(1)


class FusedAttentionBlock(nn.Module):
    """A folded MCi `AttentionBlock`: `x + γ1·attn(norm(x))`, then `x + γ2·ConvFFN(x)` with `FusedFFN`."""

    def __init__(self, block: AttentionBlock) -> None:
        super().__init__()
        self.norm, self.token_mixer, self.layer_scale_1 = block.norm, block.token_mixer, block.layer_scale_1
        self.conv = block.mlp.conv
        self.ffn = FusedFFN(block.mlp.fc1, block.mlp.fc2, block.layer_scale_2.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1(self.token_mixer(self.norm(x)))
        return self.ffn(_nhwc(self.conv(x)), _nhwc(x)).permute(0, 3, 1, 2)


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

    def forward_rows(self, x: torch.Tensor, rows: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
        """As `ResidualAttentionBlock.forward_rows`: the output at `rows` (B, R) only."""
        x_rows = gather_rows(x, rows) + self.attn.forward_rows(self.ln_1(x), rows, is_causal)
        return self.ffn(self.ln_2(x_rows), x_rows)


def _fusable(block: nn.Module) -> bool:
    if isinstance(block, ResidualAttentionBlock):
        act = block.mlp.gelu
        return type(act) is nn.GELU and act.approximate == "none"
    if isinstance(block, (RepMixerBlock, TextRepMixerBlock, AttentionBlock)):
        return type(block.mlp.act) is nn.GELU and block.mlp.act.approximate == "none"
    return False


def fuse_feed_forward(model: nn.Module) -> int:
    """Replace, in place, every folded block with a GELU feed-forward network by its fused form; returns the count.

    Needs `fold_conv_norms` first (the ConvFFN's depthwise conv must be a plain conv)."""
    return _replace_children(model, _fused_block)


def _fused_block(child: nn.Module) -> nn.Module | None:
    if not _fusable(child):
        return None
    if isinstance(child, AttentionBlock):
        return FusedAttentionBlock(child)
    if isinstance(child, ResidualAttentionBlock):
        return FusedResidualAttentionBlock(child)
    return FusedConvBlock(child)


def optimize_modules(module: nn.Module, channels_last: bool = True, fuse: bool = True) -> nn.Module:
    """In place, on an already reparameterized module: the steps of `optimize_for_inference` after the fold."""
    fold_conv_norms(module)
    trim_causal_padding(module)
    prune_to_pooled(module)
    if fuse and _fusion_available():
        fuse_feed_forward(module)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
        if fuse and _fusion_available():
            fuse_conv_gelu(module)
        pointwise_convs_to_linear(module)
        split_channel_multiplier_convs(module)
    if fuse and _fusion_available():
        pack_linears(module)
        pack_convs(module)
    return module.eval()


def optimize_for_inference(model: nn.Module, channels_last: bool = True, fuse: bool = True) -> nn.Module:
    """A folded, eval-mode copy for CPU inference (the input model is left untouched).

    Outputs equal the eager model's to float32 rounding; feed images as they are (channels_last inputs are
    slightly faster: `x.contiguous(memory_format=torch.channels_last)`). `fuse=False` keeps the feed-forward
    networks as separate ops (`fuse_feed_forward`).
    """
    return optimize_modules(reparameterize(model), channels_last, fuse)
