"""CPU bf16 autocast policy: depthwise convs and differentiated attention leave bf16, everything else stays in it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgevl.models.precision import grouped_conv, sdpa


def test_grouped_conv_runs_in_float32_under_cpu_autocast():
    torch.manual_seed(0)
    depthwise, dense = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(2, 8, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_dw, y_dense = grouped_conv(depthwise, x), grouped_conv(dense, x)
    assert y_dw.dtype == torch.float32 and y_dense.dtype == torch.bfloat16
    torch.testing.assert_close(y_dw, depthwise(x), atol=0, rtol=0)  # exactly the float32 conv
    torch.testing.assert_close(grouped_conv(depthwise, x), depthwise(x), atol=0, rtol=0)  # no autocast: unchanged


def test_sdpa_upcasts_only_when_differentiated_under_cpu_autocast():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 5, 8, dtype=torch.bfloat16) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sdpa(q, k, v).dtype == torch.bfloat16  # inference keeps the bf16 kernel
        qg = q.clone().requires_grad_()
        out = sdpa(qg, k, v, is_causal=True)
    assert out.dtype == torch.float32
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    out.sum().backward()
    assert qg.grad is not None and qg.grad.dtype == torch.bfloat16
