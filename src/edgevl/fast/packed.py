"""Fast forms of single layers: GEMMs and convs from weights prepacked for oneDNN, 1×1 convs as GEMMs, and
channel-multiplier convs as depthwise convs.

Each class is built from the reference layer it replaces and computes the same function; where oneDNN's ops may
not run (`edgevl.backend.may_run`: autocast, gradients, tracing, other devices) it takes the plain torch ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgevl import backend
from edgevl.models.transformer import Attention


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors keep no version counter (and cannot be changed outside inference)
        return -1


class PackedWeight:
    """A linear or conv weight reordered once into oneDNN's blocked layout, for its pointwise ops.

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
                self._packed = backend.reorder_linear_weight(weight)
            else:
                self._packed = backend.reorder_conv_weight(weight, self.conv)
            self._key = key
        return self._packed

    def __deepcopy__(self, memo: dict) -> PackedWeight:
        return PackedWeight(self.conv)  # opaque oneDNN tensors cannot be copied; the copy repacks on first use

    def __getstate__(self) -> dict:
        return {"conv": self.conv, "_key": None, "_packed": None}


def conv_pack(conv: nn.Conv2d) -> PackedWeight:
    """An empty `PackedWeight` for `conv`'s weight."""
    return PackedWeight((list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups))


def packed_linear(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pack: PackedWeight,
                  gelu: bool = False) -> torch.Tensor:
    """`F.linear` on 2-D rows (then an exact GELU when `gelu`), from `pack`'s blocked weight where it may run."""
    if backend.may_run_blocked(rows, weight):
        return backend.linear(rows, pack.of(weight), bias, gelu)
    if gelu and backend.may_run(rows, weight):
        return backend.linear(rows, weight, bias, gelu=True)
    out = F.linear(rows, weight, bias)
    return F.gelu(out) if gelu else out


def packed_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                  padding: tuple[int, int], dilation: tuple[int, int], groups: int, gelu: bool,
                  pack: PackedWeight | None = None) -> torch.Tensor:
    """`F.conv2d`, followed by an exact GELU when `gelu`; runs as oneDNN's conv (from `pack`'s blocked weight,
    with the GELU inside) when it can. Blocked weights always give channels_last outputs, so they are used for
    channels_last inputs only."""
    fused = gelu and backend.may_run(x, weight)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if pack is not None and channels_last and backend.may_run_blocked(x, weight):
        weight, fused = pack.of(weight), True
    if fused:
        return backend.conv(x, weight, bias, (padding, stride, dilation, groups), gelu)
    out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
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
        self.pack = conv_pack(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                             self.gelu, self.pack)


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
        self.packs = [conv_pack(conv) for _ in range(m)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [packed_conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups, self.gelu, pack)
                for w, b, pack in zip(self.weights, self.biases, self.packs)]
        if x.is_contiguous(memory_format=torch.channels_last):  # interleave along the innermost (channel) axis
            out = torch.stack([o.permute(0, 2, 3, 1) for o in outs], dim=-1)
            return out.view(*out.shape[:3], -1).permute(0, 3, 1, 2)
        out = torch.stack(outs, dim=2)
        return out.view(out.shape[0], -1, *out.shape[3:])


def is_plain_conv(conv: nn.Conv2d) -> bool:
    """Whether `conv` uses zero padding given as numbers (the convs oneDNN's op and the fast forms take)."""
    return conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)


def is_pointwise(conv: nn.Conv2d) -> bool:
    """Whether `conv` is a plain 1×1 conv (stride 1, no groups, no padding): a GEMM over pixels."""
    return (
        conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.groups == 1
        and conv.padding in ((0, 0), "valid")
    )


def is_channel_multiplier(conv: nn.Conv2d) -> bool:
    """Whether `conv` has one input and m > 1 output channels per group (zero padding)."""
    return (
        conv.groups == conv.in_channels > 1
        and conv.out_channels % conv.in_channels == 0
        and conv.out_channels > conv.in_channels
        and is_plain_conv(conv)
    )
