"""Weights prepacked for oneDNN (`PackedWeight` and the layers using it): equal to the plain ops, repacked when
a weight changes, safe to copy/pickle/trace/differentiate, and never in a state dict."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

import edgevl
from edgevl import backend
from edgevl.fast import optimize_for_inference
from edgevl.fast.packed import PackedAttention, PackedConv, PackedLinear, PackedWeight
from edgevl.fast.text import attention_rows
from edgevl.models.transformer import Attention

pytestmark = pytest.mark.skipif(not backend.available(), reason="this torch build has no oneDNN fused ops")


def _linear(bias: bool = True) -> PackedLinear:
    torch.manual_seed(0)
    return PackedLinear(torch.nn.Linear(24, 40, bias=bias))


def test_packed_linear_equals_f_linear_for_any_row_count_and_rank():
    for bias in (True, False):
        layer = _linear(bias)
        for shape in ((1, 24), (77, 24), (3, 5, 24), (2, 3, 4, 24)):
            x = torch.randn(*shape)
            with torch.inference_mode():
                out = layer(x)
            assert out.shape == (*shape[:-1], 40)
            assert torch.allclose(out, F.linear(x, layer.weight, layer.bias), atol=1e-5)
    assert layer.pack._packed is not None and layer.pack._packed.layout == torch._mkldnn


def test_packed_weight_is_rebuilt_when_the_weight_changes_in_place_or_is_replaced():
    layer, x = _linear(), torch.randn(7, 24)
    with torch.inference_mode():
        layer(x)
    first = layer.pack._packed
    with torch.inference_mode():
        layer(x)
    assert layer.pack._packed is first  # no repack while the weight is unchanged
    with torch.no_grad():
        layer.weight.mul_(-2.0)
    with torch.inference_mode():
        assert torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-5)
    layer.load_state_dict({"weight": torch.randn(40, 24), "bias": torch.randn(40)})
    with torch.inference_mode():
        assert torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-5)


def test_state_dict_deepcopy_and_pickle_hold_no_packed_tensors():
    torch.manual_seed(0)
    fast = optimize_for_inference(edgevl.create_model("MobileCLIP-S0", vision_cfg={"image_size": 64}))
    x = torch.rand(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    ids = edgevl.tokenize(["a small red car"], 77)
    with torch.inference_mode():
        ref_img, ref_txt = fast.encode_image(x), fast.encode_text(ids)
    packs = [v for m in fast.modules() for v in vars(m).values() if isinstance(v, PackedWeight)]
    assert packs and all(p._packed is not None for p in packs[:10])
    assert all(t.layout == torch.strided for t in fast.state_dict().values())
    for clone in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        assert all(v._packed is None for m in clone.modules() for v in vars(m).values() if isinstance(v, PackedWeight))
        with torch.inference_mode():
            assert torch.equal(clone.encode_image(x), ref_img) and torch.equal(clone.encode_text(ids), ref_txt)


def test_gradients_tracing_and_autocast_fall_back_to_plain_ops():
    layer, x = _linear(), torch.randn(5, 24, requires_grad=True)
    layer(x).sum().backward()  # oneDNN's op has no backward: the plain path runs
    assert torch.allclose(x.grad, layer.weight.sum(0).expand(5, 24), atol=1e-5)
    y = torch.randn(5, 24)
    exported = torch.export.export(layer, (y,))
    assert "mkldnn" not in str(exported.graph)
    with torch.inference_mode():
        assert torch.allclose(exported.module()(y), F.linear(y, layer.weight, layer.bias), atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer(y).dtype == torch.bfloat16


def test_packed_conv_equals_conv_and_keeps_the_input_memory_format():
    torch.manual_seed(0)
    for conv, gelu in (
        (torch.nn.Conv2d(8, 8, 7, padding=3, groups=8), False),
        (torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), True),
        (torch.nn.Conv2d(8, 16, (1, 11), padding=(0, 5), bias=False), False),
    ):
        packed = PackedConv(conv, gelu=gelu)
        x = torch.randn(2, conv.in_channels, 13, 17)
        ref = conv(x)
        ref = F.gelu(ref) if gelu else ref
        with torch.inference_mode():
            for inp in (x, x.contiguous(memory_format=torch.channels_last)):
                out = packed(inp)
                assert torch.allclose(out, ref, atol=1e-5)
                assert out.is_contiguous(memory_format=torch.channels_last) == (inp is not x)
        assert packed.pack._packed is not None  # the channels_last call ran from the blocked weight


def test_packed_attention_equals_attention_for_all_and_selected_rows():
    torch.manual_seed(0)
    attn = Attention(32, 4)
    packed = PackedAttention(attn)
    assert isinstance(packed.out_proj, PackedLinear)
    x, rows = torch.randn(2, 9, 32), torch.tensor([[8], [3]])
    with torch.inference_mode():
        for causal in (False, True):
            assert torch.allclose(packed(x, is_causal=causal), attn(x, is_causal=causal), atol=1e-5)
            got, ref = attention_rows(packed, x, rows, causal), attention_rows(attn, x, rows, causal)
            assert torch.allclose(got, ref, atol=1e-5)
    assert len(packed.packs) == 3  # [q; k; v], q and [k; v], each packed once
