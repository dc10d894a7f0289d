"""Re-parameterization equivalence of every MCi building block and of tiny MCi0/MCi3-style trunks.

Weights are randomized so that every branch matters (random BN statistics, layer scales around 0.5 instead of
1e-5, random SE) and the check runs in float64, so a folding error cannot hide under float32 noise.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgevl.errors import ConfigError
from edgevl.models.blocks import (
    AttentionBlock,
    ConvMlp,
    ConvNorm,
    LayerNorm2d,
    MobileOneBlock,
    PatchEmbed,
    ReparamLargeKernelConv,
    RepConditionalPosEnc,
    RepMixer,
    RepMixerBlock,
    fuse_conv_bn,
    identity_kernel,
    reparameterize_modules,
)
from edgevl.models.mci import MCi

pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Draw non-trivial values for every parameter and BN buffer (fixture recipe, layer scales ~0.5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "gamma":
                t.copy_(0.3 + 0.4 * torch.rand(t.shape, generator=g, dtype=t.dtype))
            elif leaf == "running_var":
                t.copy_(0.5 + 1.5 * torch.rand(t.shape, generator=g, dtype=t.dtype))
            elif leaf == "running_mean":
                t.copy_(0.5 * torch.randn(t.shape, generator=g, dtype=t.dtype))
            elif t.dim() == 1 and leaf == "weight":  # norm scales
                t.copy_(0.5 + torch.rand(t.shape, generator=g, dtype=t.dtype))
            elif t.dim() == 1:  # biases
                t.copy_(0.2 * torch.randn(t.shape, generator=g, dtype=t.dtype))
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) / fan_in**0.5)
    return module


def assert_folds_equivalently(module: nn.Module, x: torch.Tensor) -> nn.Module:
    """Fold an eval-mode float64 copy of `module` and check it computes the same function on `x`."""
    module = randomize(module.double()).eval()
    x = x.double()
    with torch.no_grad():
        expected = module(x)
        folded = reparameterize_modules(copy.deepcopy(module))
        got = folded(x)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    return folded


def _leaf_keys(module: nn.Module) -> set[str]:
    return set(module.state_dict())


def test_fuse_conv_bn_matches_conv_then_bn():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(6)
    randomize(nn.Sequential(conv, bn).double()).eval()
    w, b = fuse_conv_bn(conv.weight, bn)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(nn.functional.conv2d(x, w, b, padding=1), bn(conv(x)), atol=1e-12, rtol=0)


@pytest.mark.parametrize("channels,groups,k", [(6, 1, 3), (6, 6, 3), (8, 2, 1), (4, 4, 7), (4, 4, (1, 5))])
def test_identity_kernel_is_identity(channels, groups, k):
    x = torch.randn(1, channels, 6, 5, dtype=torch.float64)
    kernel = identity_kernel(channels, groups, k, x)
    padding = (k[0] // 2, k[1] // 2) if isinstance(k, tuple) else k // 2
    torch.testing.assert_close(nn.functional.conv2d(x, kernel, padding=padding, groups=groups), x)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_chs=3, out_chs=8, kernel_size=3, stride=2),  # stem 0: conv + scale
        dict(in_chs=8, out_chs=8, kernel_size=3, stride=2, groups=8),  # stem 1: depthwise
        dict(in_chs=8, out_chs=8, kernel_size=1),  # stem 2 / downsample proj.1: conv + BN skip
        dict(in_chs=8, out_chs=16, kernel_size=3, groups=8, use_se=True),  # final_conv
        dict(in_chs=8, out_chs=8, kernel_size=3, groups=8, use_act=False, num_conv_branches=3),
        dict(in_chs=8, out_chs=8, kernel_size=3, groups=8, use_scale_branch=False, num_conv_branches=0),
        dict(in_chs=8, out_chs=8, kernel_size=(1, 5), groups=8, use_act=False),  # MCt text branches: 1×k
    ],
)
def test_mobileone_block_folds(kwargs):
    folded = assert_folds_equivalently(MobileOneBlock(**kwargs), torch.randn(2, kwargs["in_chs"], 9, 7))
    assert not any(k.startswith(("conv_kxk", "conv_scale", "identity")) for k in _leaf_keys(folded))
    assert {"reparam_conv.weight", "reparam_conv.bias"} <= _leaf_keys(folded)


@pytest.mark.parametrize("kwargs", [{}, dict(kernel_size=(1, 5), use_scale_branch=False)])
def test_repmixer_folds_residual_and_layer_scale(kwargs):
    folded = assert_folds_equivalently(RepMixer(8, **kwargs), torch.randn(2, 8, 7, 6))
    assert _leaf_keys(folded) == {"reparam_conv.weight", "reparam_conv.bias"}


def test_repmixer_folds_when_children_were_folded_first():
    mixer = randomize(RepMixer(6).double()).eval()
    x = torch.randn(1, 6, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        expected = mixer(x)
        mixer.mixer.reparameterize()
        mixer.norm.reparameterize()
        mixer.reparameterize()
        torch.testing.assert_close(mixer(x), expected, atol=1e-10, rtol=1e-10)


def test_rep_cpe_folds():
    folded = assert_folds_equivalently(RepConditionalPosEnc(8, 7), torch.randn(2, 8, 5, 4))
    assert _leaf_keys(folded) == {"reparam_conv.weight", "reparam_conv.bias"}


@pytest.mark.parametrize("use_se", [False, True])
def test_large_kernel_conv_folds(use_se):
    folded = assert_folds_equivalently(ReparamLargeKernelConv(8, 16, use_se=use_se), torch.randn(2, 8, 11, 9))
    expected = {"reparam_conv.weight", "reparam_conv.bias"}
    if use_se:
        expected |= {"se.fc1.weight", "se.fc1.bias", "se.fc2.weight", "se.fc2.bias"}
    assert _leaf_keys(folded) == expected


@pytest.mark.parametrize(
    "module,channels",
    [
        (PatchEmbed(8, 16, use_se=True), 8),
        (RepMixerBlock(8, 3.0), 8),
        (AttentionBlock(64, 3.0, "batchnorm"), 64),
        (AttentionBlock(64, 4.0, "layernorm"), 64),
    ],
)
def test_composite_blocks_fold(module, channels):
    assert_folds_equivalently(module, torch.randn(2, channels, 5, 6))


def test_convffn_batchnorm_is_kept_after_folding():
    folded = assert_folds_equivalently(RepMixerBlock(8), torch.randn(1, 8, 4, 4))
    assert "mlp.conv.bn.running_var" in _leaf_keys(folded)
    assert isinstance(ConvMlp(4, 12).conv.bn, nn.BatchNorm2d)


def test_layernorm2d_normalizes_channels():
    norm = randomize(LayerNorm2d(6).double())
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    mean = x.mean(1, keepdim=True)
    var = x.var(1, keepdim=True, unbiased=False)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(norm(x), expected)


def test_reparameterize_refuses_train_mode():
    block = MobileOneBlock(4, 4, 3)
    with pytest.raises(ConfigError, match="eval"):
        block.reparameterize()
    with pytest.raises(ConfigError, match="eval"):
        reparameterize_modules(RepMixerBlock(4))
    assert block.reparam_conv is None


def test_reparameterize_twice_is_a_no_op():
    block = randomize(RepMixerBlock(8)).eval()
    reparameterize_modules(block)
    first = {k: v.clone() for k, v in block.state_dict().items()}
    block.train().eval()
    reparameterize_modules(block)
    second = block.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def _tiny_mci(five_stage: bool) -> MCi:
    if five_stage:
        return MCi(
            layers=(1, 2, 1, 1, 1),
            embed_dims=(4, 8, 16, 32, 64),
            mlp_ratios=(4,) * 5,
            token_mixers=("repmixer",) * 3 + ("attention",) * 2,
            downsamples=(False,) + (True,) * 4,
            se_downsamples=(False,) * 5,
            pos_embs=(False, False, False, True, True),
            num_classes=16,
            norm="layernorm",
            stem_use_scale_branch=False,
        )
    return MCi(
        layers=(1, 2, 2, 1),
        embed_dims=(8, 16, 32, 64),
        mlp_ratios=(3,) * 4,
        token_mixers=("repmixer",) * 3 + ("attention",),
        downsamples=(False, True, True, True),
        se_downsamples=(False, False, True, True),
        pos_embs=(False, False, False, True),
        num_classes=16,
    )


@pytest.mark.parametrize("five_stage", [False, True], ids=["mci0_style", "mci3_style"])
def test_tiny_trunk_folds(five_stage):
    folded = assert_folds_equivalently(_tiny_mci(five_stage), torch.rand(2, 3, 72, 56))
    assert not any(".conv_kxk." in k or ".identity." in k or "large_conv" in k for k in _leaf_keys(folded))


@pytest.mark.parametrize("in_chs", [3, 64])
def test_strided_pointwise_convnorm_matches_strided_conv(in_chs):
    # ConvNorm subsamples then convolves densely for strided 1×1 kernels (a channels-last workaround)
    branch = randomize(ConvNorm(in_chs, 16, 1, stride=2).double()).eval()
    x = torch.randn(2, in_chs, 9, 10, dtype=torch.float64)
    with torch.no_grad():
        expected = branch.bn(nn.functional.conv2d(x, branch.conv.weight, stride=2))
        torch.testing.assert_close(branch(x), expected, atol=1e-12, rtol=1e-12)


def test_channels_last_training_gradients_match_nchw():
    # the trainer runs models channels-last; the stem's strided 1×1 branch on 3 channels used to abort the process
    torch.manual_seed(0)
    block = nn.Sequential(MobileOneBlock(3, 8, 3, stride=2), RepMixerBlock(8, kernel_size=3)).train()
    x = torch.randn(4, 3, 64, 64)  # the size matters: smaller inputs did not trigger the abort
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        model = copy.deepcopy(block).to(memory_format=fmt)
        model(x.contiguous(memory_format=fmt)).square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):  # float32 sums over 16k positions: compare relative to the gradient's scale
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()
