"""Compute precision: the names training and reinforcement take, and the ops that leave CPU bf16 autocast for
float32 because oneDNN's bf16 kernels for them are slower on CPU.

Measured on MobileCLIP-S0 training (2 threads, AVX-512/AMX): bf16 depthwise-conv backward about 2x slower than
float32, bf16 flash-attention backward about 5x slower. GEMMs and dense convs stay in bf16, where AMX pays.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

COMPUTE_PRECISIONS = ("fp32", "bf16")  # how training and reinforcement compute: float32, or CPU/GPU bf16 autocast


def _cpu_autocast(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu")


def grouped_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)`, in float32 when the conv is grouped (depthwise) and CPU bf16 autocast is on."""
    if conv.groups > 1 and _cpu_autocast(x):
        with torch.autocast("cpu", enabled=False):
            return conv(x.float())
    return conv(x)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """`F.scaled_dot_product_attention`, in float32 when it will be differentiated under CPU bf16 autocast (the bf16
    forward is fine, so inference keeps it)."""
    if _cpu_autocast(q) and torch.is_grad_enabled() and q.requires_grad:
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)
