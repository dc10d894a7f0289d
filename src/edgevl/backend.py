"""The torch backend shim: every private oneDNN op edgevl calls, and the workaround for a torch bug, in one place.

Tested on torch 2.13.0 (the pinned version; CPU builds with mkldnn). The `torch.ops.mkldnn` pointwise ops are
private: their signatures may change between torch releases, which is why nothing else calls them. They have no
backward, no autocast or tracing kernels and run on CPU only, so `may_run` says when one may be called, and
`available` whether this build has them at all. `edgevl.fast` falls back to the public ops wherever they may not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def available() -> bool:
    """True when this torch build has oneDNN's fused linear and conv ops (CPU builds with mkldnn)."""
    return torch.backends.mkldnn.is_available() and (
        hasattr(torch.ops.mkldnn, "_linear_pointwise") and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    )


def bf16_supported() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX-512 bf16 or AMX)."""
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def may_run(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the oneDNN ops may run on `x`: a CPU input of the weight's dtype, outside autocast, tracing and
    `torch.compile` (which have no kernels for these ops), with no gradient asked for (they have no backward)."""
    return (
        x.device.type == "cpu"
        and x.dtype == weight.dtype
        and not torch.is_autocast_enabled("cpu")
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


def may_run_blocked(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a GEMM or conv may run from a weight in oneDNN's blocked layout: as `may_run`, for float32."""
    return weight.dtype == torch.float32 and may_run(x, weight)


def reorder_linear_weight(weight: torch.Tensor) -> torch.Tensor:
    """`weight` [out, in] reordered into oneDNN's blocked GEMM layout (an opaque mkldnn tensor)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach())


def reorder_conv_weight(weight: torch.Tensor, geometry: tuple) -> torch.Tensor:
    """A conv weight reordered into oneDNN's blocked layout; `geometry` is (padding, stride, dilation, groups)."""
    return torch.ops.mkldnn._reorder_convolution_weight(weight.detach(), *geometry)


def linear(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False) -> torch.Tensor:
    """oneDNN's GEMM on 2-D rows (plain or blocked weight), with an exact GELU in its epilogue when `gelu`."""
    attr, algorithm = ("gelu", "none") if gelu else ("none", "")
    return torch.ops.mkldnn._linear_pointwise(rows, weight, bias, attr, [], algorithm)


def linear_add(rows: torch.Tensor, other: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`other + rows @ weightᵀ + bias` as one oneDNN GEMM with the add in its epilogue (blocked weight)."""
    return torch.ops.mkldnn._linear_pointwise.binary(rows, other, weight, bias, "add")


def conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geometry: tuple, gelu: bool = False
) -> torch.Tensor:
    """oneDNN's convolution (plain or blocked weight; `geometry` is (padding, stride, dilation, groups)), with an
    exact GELU in its epilogue when `gelu`. Blocked weights give channels_last outputs."""
    padding, stride, dilation, groups = geometry
    attr, algorithm = ("gelu", "none") if gelu else ("none", "")
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, stride, dilation, groups, attr, [],
                                                   algorithm)


def is_strided_pointwise(conv: nn.Conv2d) -> bool:
    """Whether `conv` is a strided 1×1 conv, which must run as `subsampled_pointwise_conv`."""
    return conv.kernel_size == (1, 1) and conv.stride != (1, 1)


def subsampled_pointwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A strided 1×1 conv as subsampling then a dense 1×1 conv: the same result, but torch 2.13's channels_last
    backward of the strided conv corrupts the heap when it has few input channels (MobileOne stems)."""
    sh, sw = conv.stride
    return F.conv2d(x[:, :, ::sh, ::sw], conv.weight, conv.bias, groups=conv.groups)
