"""The one table from reference modules to their fast forms, and the functions that apply it.

`TABLE` lists stages in the order they run. In each stage every module whose exact type is a key is replaced by
what its fast form returns (None keeps it). Fast forms take over their reference module's children, so later
stages still reach them: the fold stage leaves plain convs that the channels_last and pack stages then replace,
the fused blocks keep attention layers that the pack stage then packs. Stages marked `onednn` run only with
oneDNN's fused ops (`fuse=True` and `edgevl.backend.available()`), those marked `channels_last` only for
channels_last models; the first of these converts the weights. The `decoder` stage is LightCap's decoder alone
(`optimize_captioner`): the encoder stages would pack its linears and so hide them from int8 quantization.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from edgevl import backend
from edgevl.fast.fused import FusedAttentionBlock, FusedConvBlock, FusedResidualAttentionBlock, FusedTextConvBlock
from edgevl.fast.lightcap import PackedEnsembleHead, PackedFusionLayer
from edgevl.fast.packed import (
    MultiplierDepthwiseConv,
    PackedAttention,
    PackedConv,
    PackedLinear,
    PointwiseLinear,
    is_channel_multiplier,
    is_plain_conv,
    is_pointwise,
)
from edgevl.fast.text import PooledText, TrimmedText
from edgevl.models.blocks import (
    AttentionBlock,
    ConvNorm,
    MobileOneBlock,
    ReparamLargeKernelConv,
    RepMixerBlock,
    folded_conv,
)
from edgevl.models.factory import reparameterize
from edgevl.models.lightcap.fusion import FusionLayer
from edgevl.models.lightcap.heads import EnsembleHead
from edgevl.models.lightcap.model import LightCap
from edgevl.models.text import TextRepMixerBlock, TextTransformer
from edgevl.models.transformer import Attention, ResidualAttentionBlock

FastForm = Callable[[nn.Module], "nn.Module | None"]


@dataclass(frozen=True)
class Stage:
    """One pass over a model: reference type -> fast form (a module, or None to keep the reference one)."""

    name: str
    forms: Mapping[type[nn.Module], FastForm]
    onednn: bool = False
    channels_last: bool = False


@torch.no_grad()
def _folded_conv_norm(pair: ConvNorm) -> nn.Conv2d:
    weight, bias = pair.fused()
    return folded_conv(weight, bias, pair.conv.stride[0], pair.conv.groups)


def _exact_gelu(act: nn.Module) -> bool:
    return type(act) is nn.GELU and act.approximate == "none"


def _fused(fast: type[nn.Module], activation: Callable[[nn.Module], nn.Module]) -> FastForm:
    """`fast(block)` where the block's feed-forward activation is the exact GELU that `FusedFFN` computes."""
    return lambda block: fast(block) if _exact_gelu(activation(block)) else None


def _conv_with_gelu(block: MobileOneBlock | ReparamLargeKernelConv) -> nn.Module | None:
    """A folded block without SE whose activation is GELU: its conv with the GELU fused in."""
    conv, act = block.reparam_conv, block.act
    if conv is None or type(block.se) is not nn.Identity or not _exact_gelu(act):
        return None
    if type(conv) is not nn.Conv2d or not is_plain_conv(conv):
        return None
    if is_pointwise(conv):
        return PointwiseLinear(conv, gelu=True)
    if is_channel_multiplier(conv):
        return MultiplierDepthwiseConv(conv, gelu=True)
    return PackedConv(conv, gelu=True)


def _channels_last_conv(conv: nn.Conv2d) -> nn.Module | None:
    if is_pointwise(conv):
        return PointwiseLinear(conv)
    return MultiplierDepthwiseConv(conv) if is_channel_multiplier(conv) else None


TABLE: tuple[Stage, ...] = (
    # the conv+BN pairs the reference keeps unfolded (the ConvFFNs' depthwise convs) -> one conv with bias
    Stage("fold", {ConvNorm: _folded_conv_norm}),
    # GELU feed-forward networks -> FusedFFN (GELU in the first GEMM, layer scale in the second)
    Stage("fuse", {
        ResidualAttentionBlock: _fused(FusedResidualAttentionBlock, lambda block: block.mlp.gelu),
        RepMixerBlock: _fused(FusedConvBlock, lambda block: block.mlp.act),
        TextRepMixerBlock: _fused(FusedTextConvBlock, lambda block: block.mlp.act),
        AttentionBlock: _fused(FusedAttentionBlock, lambda block: block.mlp.act),
    }, onednn=True),
    # folded MobileOne / large-kernel blocks -> their conv with the GELU inside
    Stage("conv+gelu", {MobileOneBlock: _conv_with_gelu, ReparamLargeKernelConv: _conv_with_gelu},
          onednn=True, channels_last=True),
    # 1×1 convs -> one GEMM over pixels; channel-multiplier convs -> depthwise convs
    Stage("channels_last", {nn.Conv2d: _channels_last_conv}, channels_last=True),
    # every remaining GEMM and conv -> from weights prepacked in oneDNN's blocked layout
    Stage("pack", {
        nn.Linear: PackedLinear,
        Attention: PackedAttention,
        nn.Conv2d: lambda conv: PackedConv(conv) if is_plain_conv(conv) else None,
    }, onednn=True),
    # text towers -> only the rows the pooled output depends on
    Stage("text", {TextTransformer: PooledText, TrimmedText: PooledText}),
    # LightCap's decoder (optimize_captioner only) -> packed attention, FFN and heads
    Stage("decoder", {FusionLayer: PackedFusionLayer, EnsembleHead: PackedEnsembleHead}),
)
DECODER = TABLE[-1]


def replace_modules(module: nn.Module, forms: Mapping[type[nn.Module], FastForm]) -> nn.Module:
    """Replace, in place, every submodule of `module` whose exact type is in `forms` by its fast form; returns
    `module`, or its own fast form."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            form = forms.get(type(child))
            fast = form(child) if form is not None else None
            if fast is not None:
                setattr(parent, name, fast)
    form = forms.get(type(module))
    fast = form(module) if form is not None else None
    return module if fast is None else fast


def optimize_modules(module: nn.Module, channels_last: bool = True, fuse: bool = True) -> nn.Module:
    """In place, on an already reparameterized module: every stage of `TABLE` that applies but `decoder`.
    Returns the module, in eval mode (or its fast form, for a bare text tower)."""
    onednn = fuse and backend.available()
    converted = False
    for stage in TABLE:
        if stage is DECODER or (stage.onednn and not onednn) or (stage.channels_last and not channels_last):
            continue
        if stage.channels_last and not converted:
            module, converted = module.to(memory_format=torch.channels_last), True
        module = replace_modules(module, stage.forms)
    return module.eval()


def optimize_for_inference(model: nn.Module, channels_last: bool = True, fuse: bool = True) -> nn.Module:
    """A folded, eval-mode copy for CPU inference (the input model is left untouched); a LightCap captioner
    gets `optimize_captioner` on its copy.

    Outputs equal the eager model's to float32 rounding; feed images as they are (channels_last inputs are
    slightly faster: `x.contiguous(memory_format=torch.channels_last)`). `fuse=False` keeps the feed-forward
    networks as separate ops and the weights in their plain layout (no oneDNN-only stage runs).
    """
    if isinstance(model, LightCap):
        return optimize_captioner(copy.deepcopy(model))
    return optimize_modules(reparameterize(model), channels_last, fuse)


def optimize_captioner(model: nn.Module) -> nn.Module:
    """A LightCap captioner made fast in place and returned: its backbone folded (`fold_backbone`) and optimized
    as an image tower (`optimize_modules`), its fusion layers and prediction heads in their packed forms
    (`DECODER`). For captioning, not for export, training or saving."""
    model.fold_backbone()
    model.backbone = optimize_modules(model.backbone)
    model.fusion.layers = replace_modules(model.fusion.layers, DECODER.forms)
    model.head = replace_modules(model.head, DECODER.forms)
    return model


def trim_causal_padding(model: nn.Module) -> nn.Module:
    """Every causal reference text tower in `model` wrapped in `TrimmedText`, in place: same outputs and
    gradients, 77 -> ~15 positions for typical captions. Returns `model` (or its wrapper, for a bare tower)."""
    return replace_modules(model, {TextTransformer: lambda tower: TrimmedText(tower) if tower.causal else None})
