"""Re-parameterizable convolutional building blocks of the MobileCLIP image towers (FastViT / MCi).

Parameter names follow timm / open_clip (`conv_kxk`, `conv_scale`, `identity`, `large_conv`, `layer_scale.gamma`,
...), which is edgevl's native layout. Kernels are k×k or, for MCt's text blocks (`models/text.py`), 1×k: a
`kernel_size` is an int or an (h, w) pair. Every block that has train-time branches owns `reparameterize()`: it
folds BatchNorm running statistics into one convolution named exactly as in the reference re-parameterized
checkpoints (`reparam_conv`, `None` until then). Folding needs eval mode (it raises in train mode) and is a no-op
once done.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgevl.backend import is_strided_pointwise, subsampled_pointwise_conv
from edgevl.errors import ConfigError
from edgevl.models.precision import grouped_conv, sdpa

Kernel = int | tuple[int, int]


def _pair(kernel_size: Kernel) -> tuple[int, int]:
    return (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)


def _require_eval(module: nn.Module) -> None:
    if module.training:
        raise ConfigError(
            f"{type(module).__name__}.reparameterize() needs eval mode: BatchNorm running statistics are "
            "folded, so call .eval() first"
        )


def fuse_conv_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the bias-free conv weight before it: W·γ/σ and β − μ·γ/σ."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def identity_kernel(channels: int, groups: int, kernel_size: Kernel, like: torch.Tensor) -> torch.Tensor:
    """The (C, C/groups, kh, kw) kernel of a grouped conv that returns its input unchanged."""
    in_per_group = channels // groups
    kh, kw = _pair(kernel_size)
    kernel = torch.zeros(channels, in_per_group, kh, kw, dtype=like.dtype, device=like.device)
    rows = torch.arange(channels, device=like.device)
    kernel[rows, rows % in_per_group, kh // 2, kw // 2] = 1.0
    return kernel


@torch.no_grad()
def folded_conv(weight: torch.Tensor, bias: torch.Tensor, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A conv with bias holding a folded kernel (`weight` is [out, in/groups, kh, kw]; padding (kh // 2, kw // 2))."""
    out_chs, in_per_group, kh, kw = weight.shape
    conv = nn.Conv2d(
        in_per_group * groups, out_chs, (kh, kw), stride, (kh // 2, kw // 2), groups=groups,
        device=weight.device, dtype=weight.dtype,
    )
    conv.weight.copy_(weight)
    conv.bias.copy_(bias)
    return conv


def _pad_to(kernel: torch.Tensor, kernel_size: Kernel) -> torch.Tensor:
    (kh, kw), (h, w) = _pair(kernel_size), kernel.shape[-2:]
    return F.pad(kernel, [(kw - w) // 2, (kw - w) // 2, (kh - h) // 2, (kh - h) // 2])


class ConvNorm(nn.Module):
    """Bias-free conv followed by BatchNorm (keys `conv`, `bn`): one train-time branch of a MobileOne block."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: Kernel, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        kh, kw = _pair(kernel_size)
        self.conv = nn.Conv2d(in_chs, out_chs, (kh, kw), stride, (kh // 2, kw // 2), groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        out = subsampled_pointwise_conv(conv, x) if is_strided_pointwise(conv) else grouped_conv(conv, x)
        return self.bn(out)

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the single conv equivalent to this pair in eval mode."""
        return fuse_conv_bn(self.conv.weight, self.bn)


class SqueezeExcite(nn.Module):
    """Channel gating: global mean -> 1×1 `fc1` -> ReLU -> 1×1 `fc2` -> sigmoid -> scale the input."""

    def __init__(self, channels: int, rd_ratio: float = 0.0625) -> None:
        super().__init__()
        rd_channels = int(channels * rd_ratio)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class LayerScale2d(nn.Module):
    """Per-channel scale `gamma` of shape (C, 1, 1) for NCHW tensors."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of an NCHW tensor (MCi3/4 attention blocks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class MobileOneBlock(nn.Module):
    """MobileOne block: sum of k×k conv-BN branches, a 1×1 conv-BN scale branch and a BN skip, then SE and act.

    After `reparameterize()` the branches are one `reparam_conv` (the branches' kernel size, with bias); SE and
    activation stay.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: Kernel,
        stride: int = 1,
        groups: int = 1,
        use_se: bool = False,
        use_act: bool = True,
        use_scale_branch: bool = True,
        num_conv_branches: int = 1,
    ) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.kernel_size = in_chs, out_chs, _pair(kernel_size)
        self.stride, self.groups = stride, groups
        self.se = SqueezeExcite(out_chs) if use_se else nn.Identity()
        self.register_module("reparam_conv", None)
        self.identity = nn.BatchNorm2d(in_chs) if in_chs == out_chs and stride == 1 else None
        self.conv_kxk = nn.ModuleList(
            ConvNorm(in_chs, out_chs, kernel_size, stride, groups) for _ in range(num_conv_branches)
        )
        has_scale = use_scale_branch and self.kernel_size != (1, 1)
        self.conv_scale = ConvNorm(in_chs, out_chs, 1, stride, groups) if has_scale else None
        self.act = nn.GELU() if use_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.se(self.reparam_conv(x)))
        out = self.identity(x) if self.identity is not None else 0
        if self.conv_scale is not None:
            out = out + self.conv_scale(x)
        for branch in self.conv_kxk:
            out = out + branch(x)
        return self.act(self.se(out))

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the single k×k conv equal to all branches in eval mode (or the folded conv)."""
        if self.reparam_conv is not None:
            return self.reparam_conv.weight, self.reparam_conv.bias
        ref = self.identity.weight if self.identity is not None else self.conv_kxk[0].conv.weight
        weight = torch.zeros(
            self.out_chs, self.in_chs // self.groups, *self.kernel_size, dtype=ref.dtype, device=ref.device
        )
        bias = torch.zeros(self.out_chs, dtype=ref.dtype, device=ref.device)
        if self.identity is not None:
            w, b = fuse_conv_bn(identity_kernel(self.in_chs, self.groups, self.kernel_size, ref), self.identity)
            weight, bias = weight + w, bias + b
        if self.conv_scale is not None:
            w, b = self.conv_scale.fused()
            weight, bias = weight + _pad_to(w, self.kernel_size), bias + b
        for branch in self.conv_kxk:
            w, b = branch.fused()
            weight, bias = weight + w, bias + b
        return weight, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold every branch into `reparam_conv` (eval mode only; no-op when already folded)."""
        if self.reparam_conv is not None:
            return
        _require_eval(self)
        weight, bias = self.fused_kernel_bias()
        self.reparam_conv = folded_conv(weight, bias, self.stride, self.groups)
        self.identity = self.conv_scale = None
        self.conv_kxk = nn.ModuleList()


class RepMixer(nn.Module):
    """Token mixer `x + γ·(mixer(x) − norm(x))` with depthwise MobileOne branches; folds to one conv.

    `use_scale_branch=False` drops the mixer's 1×1 branch (MCt's text mixer has none).
    """

    def __init__(
        self, dim: int, kernel_size: Kernel = 3, layer_scale_init: float = 1e-5, use_scale_branch: bool = True
    ) -> None:
        super().__init__()
        self.dim, self.kernel_size = dim, _pair(kernel_size)
        self.register_module("reparam_conv", None)
        self.norm = MobileOneBlock(
            dim, dim, kernel_size, groups=dim, use_act=False, use_scale_branch=False, num_conv_branches=0
        )
        self.mixer = MobileOneBlock(dim, dim, kernel_size, groups=dim, use_act=False, use_scale_branch=use_scale_branch)
        self.layer_scale = LayerScale2d(dim, layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the residual, both branches and the layer scale into one depthwise `reparam_conv`."""
        if self.reparam_conv is not None:
            return
        _require_eval(self)
        w_mix, b_mix = self.mixer.fused_kernel_bias()
        w_norm, b_norm = self.norm.fused_kernel_bias()
        gamma = self.layer_scale.gamma
        weight = identity_kernel(self.dim, self.dim, self.kernel_size, w_mix) + gamma.unsqueeze(-1) * (w_mix - w_norm)
        bias = gamma.flatten() * (b_mix - b_norm)
        self.reparam_conv = folded_conv(weight, bias, groups=self.dim)
        self.norm = self.mixer = self.layer_scale = None


class RepConditionalPosEnc(nn.Module):
    """Conditional positional encoding `x + pos_enc(x)` (depthwise k×k conv with bias); folds the residual."""

    def __init__(self, dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.register_module("reparam_conv", None)
        self.pos_enc = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return grouped_conv(self.pos_enc, x) + x

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Add the identity kernel to `pos_enc`, giving `reparam_conv`."""
        if self.reparam_conv is not None:
            return
        _require_eval(self)
        weight = self.pos_enc.weight + identity_kernel(self.dim, self.dim, self.kernel_size, self.pos_enc.weight)
        self.reparam_conv = folded_conv(weight, self.pos_enc.bias, groups=self.dim)
        self.pos_enc = None


class ReparamLargeKernelConv(nn.Module):
    """Grouped large-kernel conv-BN plus a small-kernel conv-BN, then SE and act (RepLKNet-style downsample)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 7,
        stride: int = 2,
        small_kernel: int = 3,
        use_se: bool = False,
        use_act: bool = True,
    ) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.kernel_size, self.stride = in_chs, out_chs, kernel_size, stride
        self.register_module("reparam_conv", None)
        self.large_conv = ConvNorm(in_chs, out_chs, kernel_size, stride, groups=in_chs)
        self.small_conv = ConvNorm(in_chs, out_chs, small_kernel, stride, groups=in_chs)
        self.se = SqueezeExcite(out_chs, rd_ratio=0.25) if use_se else nn.Identity()
        self.act = nn.GELU() if use_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            out = self.reparam_conv(x)
        else:
            out = self.large_conv(x) + self.small_conv(x)
        return self.act(self.se(out))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fuse both conv-BN pairs, pad the small kernel and sum them into `reparam_conv`."""
        if self.reparam_conv is not None:
            return
        _require_eval(self)
        w_large, b_large = self.large_conv.fused()
        w_small, b_small = self.small_conv.fused()
        weight = w_large + _pad_to(w_small, self.kernel_size)
        self.reparam_conv = folded_conv(weight, b_large + b_small, self.stride, groups=self.in_chs)
        self.large_conv = self.small_conv = None


class ConvMlp(nn.Module):
    """ConvFFN: depthwise conv-BN (`conv`, 7×7 by default, not folded), 1×1 `fc1`, GELU, 1×1 `fc2`."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0, kernel_size: Kernel = 7) -> None:
        super().__init__()
        self.conv = ConvNorm(dim, dim, kernel_size, groups=dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(self.conv(x))))
        return self.drop(self.fc2(x))


class Attention(nn.Module):
    """Multi-head self-attention over the H·W positions of an NCHW map (`qkv` without bias, `proj`)."""

    def __init__(self, dim: int, head_dim: int = 32) -> None:
        super().__init__()
        if dim % head_dim:
            raise ConfigError(f"attention width {dim} is not a multiple of head_dim {head_dim}")
        self.num_heads, self.head_dim = dim // head_dim, head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        qkv = self.qkv(tokens).reshape(b, h * w, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = sdpa(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        return self.proj(out).transpose(1, 2).reshape(b, c, h, w)


class RepMixerBlock(nn.Module):
    """FastViT conv stage block: `x = token_mixer(x)`, then `x + γ·mlp(x)` (`mlp_kernel_size`: the ConvFFN's conv)."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 3.0,
        kernel_size: Kernel = 3,
        layer_scale_init: float = 1e-5,
        mlp_kernel_size: Kernel = 7,
        use_scale_branch: bool = True,
    ) -> None:
        super().__init__()
        self.token_mixer = RepMixer(dim, kernel_size, layer_scale_init, use_scale_branch)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), kernel_size=mlp_kernel_size)
        self.layer_scale = LayerScale2d(dim, layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.layer_scale(self.mlp(x))


class AttentionBlock(nn.Module):
    """FastViT attention block: `x + γ1·attn(norm(x))`, then `x + γ2·mlp(x)`; norm is BatchNorm2d or LayerNorm2d."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 3.0,
        norm: str = "batchnorm",
        head_dim: int = 32,
        layer_scale_init: float = 1e-5,
    ) -> None:
        super().__init__()
        if norm == "batchnorm":
            self.norm: nn.Module = nn.BatchNorm2d(dim)
        elif norm == "layernorm":
            self.norm = LayerNorm2d(dim, eps=1e-5)
        else:
            raise ConfigError(f"unknown attention norm {norm!r} (expected 'batchnorm' or 'layernorm')")
        self.token_mixer = Attention(dim, head_dim)
        self.layer_scale_1 = LayerScale2d(dim, layer_scale_init)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale_2 = LayerScale2d(dim, layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1(self.token_mixer(self.norm(x)))
        return x + self.layer_scale_2(self.mlp(x))


class PatchEmbed(nn.Module):
    """Downsample between stages: `proj.0` large-kernel stride-2 conv, `proj.1` 1×1 MobileOne block."""

    def __init__(self, in_chs: int, out_chs: int, patch_size: int = 7, use_se: bool = False, use_act: bool = True):
        super().__init__()
        self.proj = nn.Sequential(
            ReparamLargeKernelConv(in_chs, out_chs, patch_size, 2, 3, use_se=use_se, use_act=use_act),
            MobileOneBlock(out_chs, out_chs, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ClassifierHead(nn.Module):
    """Global average pool then `fc` Linear (with bias): the timm head open_clip uses as image projection."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


def reparameterize_modules(model: nn.Module) -> nn.Module:
    """Fold every re-parameterizable submodule of an eval-mode `model` in place and return it."""
    _require_eval(model)
    for module in model.modules():  # lazy walk: children a parent folded away are no longer visited
        fold = getattr(module, "reparameterize", None)
        if callable(fold):
            fold()
    return model
