"""Inference-only optimisations on top of reparameterization (not a checkpoint layout, just speed).

`optimize_for_inference` folds the multi-branch blocks (`reparameterize`), then also folds the conv+BN pairs
that the reference keeps unfolded (the ConvFFN depthwise convs), switches conv weights to channels_last (the
memory format oneDNN's CPU convolutions prefer), runs 1×1 convs as matrix multiplies over channels-last pixels,
and lets causal text towers skip the padding after the end token. Not for tracing/export: use `reparameterize`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgevl.models.blocks import ConvNorm, folded_conv
from edgevl.models.factory import reparameterize


def fold_conv_norms(model: nn.Module) -> int:
    """Replace, in place, every remaining `ConvNorm` (conv + eval-mode BN) by one conv with bias; returns the count."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ConvNorm):
                weight, bias = child.fused()
                with torch.no_grad():
                    conv = folded_conv(weight, bias, child.conv.stride[0], child.conv.groups)
                setattr(parent, name, conv)
                count += 1
    return count


class PointwiseLinear(nn.Module):
    """A 1×1 convolution computed as one matrix multiply over channels-last pixels.

    For small feature maps PyTorch runs 1×1 convs through its slow unfold path; on a channels_last input the
    permute below is free and `F.linear` is a single GEMM. Output is NCHW-shaped with channels_last strides.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().flatten(1).clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias).permute(0, 3, 1, 2)


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
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _is_pointwise(child):
                setattr(parent, name, PointwiseLinear(child))
                count += 1
    return count


def optimize_for_inference(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """A folded, eval-mode copy for CPU inference (the input model is left untouched).

    Outputs equal the eager model's to float32 rounding; feed images as they are (channels_last inputs are
    slightly faster: `x.contiguous(memory_format=torch.channels_last)`).
    """
    fast = reparameterize(model)
    fold_conv_norms(fast)
    for module in fast.modules():
        if hasattr(module, "trim_causal_padding"):
            module.trim_causal_padding = True
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
        pointwise_convs_to_linear(fast)
    return fast.eval()
