"""Inference-only optimisations on top of reparameterization (not a checkpoint layout, just speed).

`optimize_for_inference` folds the multi-branch blocks (`reparameterize`), then also folds the conv+BN pairs
that the reference keeps unfolded (the ConvFFN depthwise convs), and switches conv weights to channels_last,
the memory format oneDNN's CPU convolutions prefer.
"""

from __future__ import annotations

import torch
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


def optimize_for_inference(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """A folded, eval-mode copy for CPU inference (the input model is left untouched).

    Outputs equal the eager model's to float32 rounding; feed images as they are (channels_last inputs are
    slightly faster: `x.contiguous(memory_format=torch.channels_last)`).
    """
    fast = reparameterize(model)
    fold_conv_norms(fast)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast.eval()
