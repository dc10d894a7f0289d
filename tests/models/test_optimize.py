"""optimize_for_inference: every conv+BN folded, outputs equal to the eager model, input model untouched."""

from __future__ import annotations

import torch

import edgevl
from edgevl.models.blocks import ConvNorm
from edgevl.models.optimize import PointwiseLinear, optimize_for_inference


def _randomize_bn(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_optimized_matches_eager_and_has_no_convnorm():
    torch.manual_seed(0)
    model = edgevl.create_model("world-student-mci")
    _randomize_bn(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)
    assert not any(isinstance(m, ConvNorm) for m in fast.modules())
    assert any(isinstance(m, PointwiseLinear) for m in fast.modules())
    assert not any(
        isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1 and m.stride == (1, 1)
        for m in fast.modules()
    )
    assert any(isinstance(m, ConvNorm) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.rand(3, 3, 64, 64)
    ids = edgevl.get_tokenizer("world-student-mci")(["a red circle", "two blue squares", ""])
    with torch.inference_mode():
        ref_img, ref_txt = model.encode_image(x), model.encode_text(ids)
        got_img = fast.encode_image(x.contiguous(memory_format=torch.channels_last))
        got_txt = fast.encode_text(ids)
    assert torch.allclose(got_img, ref_img, atol=1e-5, rtol=1e-4)
    assert torch.allclose(got_txt, ref_txt, atol=1e-5)
    with torch.inference_mode():  # contiguous NCHW inputs work too
        assert torch.allclose(fast.encode_image(x), ref_img, atol=1e-5, rtol=1e-4)


def test_causal_text_trimming_is_exact():
    torch.manual_seed(0)
    model = edgevl.create_model("world-teacher-vit")
    assert model.text.causal
    fast = optimize_for_inference(model)
    assert fast.text.trim_causal_padding and not model.text.trim_causal_padding
    ids = edgevl.get_tokenizer("world-teacher-vit")(["a red circle", "two small blue squares above a star", ""])
    with torch.inference_mode():
        assert torch.allclose(fast.encode_text(ids), model.encode_text(ids), atol=1e-5)


def _randomize_layer_scales(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if hasattr(m, "gamma") and isinstance(m.gamma, torch.nn.Parameter):
            m.gamma.data.copy_(torch.rand(m.gamma.shape, generator=g) * 0.5 + 0.25)


def test_fused_feed_forward_matches_eager_on_every_block_kind():
    """MCi RepMixer + attention blocks (image), MCt conv blocks and transformer blocks (text), with layer scales
    of ~0.5 folded into the second GEMM: fused equals eager, and every GELU FFN was fused."""
    from edgevl.models.optimize import FusedAttentionBlock, FusedConvBlock, FusedResidualAttentionBlock

    torch.manual_seed(0)
    model = edgevl.create_model("MobileCLIP-S0", image_size=64)
    _randomize_bn(model)
    _randomize_layer_scales(model)
    fast = optimize_for_inference(model)
    kinds = {type(m) for m in fast.modules()}
    assert {FusedConvBlock, FusedAttentionBlock, FusedResidualAttentionBlock} <= kinds
    unfused = optimize_for_inference(model, fuse=False)
    assert not any(isinstance(m, FusedConvBlock) for m in unfused.modules())
    x = torch.rand(2, 3, 64, 64)
    ids = edgevl.get_tokenizer("MobileCLIP-S0")(["a red circle on a plain background", "two blue squares"])
    with torch.inference_mode():
        ref_img, ref_txt = model.encode_image(x), model.encode_text(ids)
        for path in (fast, unfused):
            assert torch.allclose(path.encode_image(x), ref_img, atol=1e-5, rtol=1e-4)
            assert torch.allclose(path.encode_text(ids), ref_txt, atol=1e-5, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the fused blocks fall back to plain ops
            bf16 = fast.encode_image(x).float()
    assert torch.nn.functional.cosine_similarity(bf16, ref_img).min() > 0.99


def test_quickgelu_towers_keep_their_activation():
    torch.manual_seed(0)
    model = edgevl.create_model("ViT-B-32-quickgelu", image_size=64)
    fast = optimize_for_inference(model)
    assert not any(type(m).__name__.startswith("Fused") for m in fast.modules())
    ids = edgevl.get_tokenizer("ViT-B-32-quickgelu")(["a dog"])
    with torch.inference_mode():
        assert torch.allclose(fast.encode_text(ids), model.encode_text(ids), atol=1e-5)
