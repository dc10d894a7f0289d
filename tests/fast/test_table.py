"""The fast table covers the reference blocks, and the reference models carry no speed-up of their own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import edgevl
from edgevl import backend
from edgevl.fast import TABLE, optimize_captioner, optimize_for_inference
from edgevl.fast.table import DECODER
from edgevl.fast.text import TrimmedText
from edgevl.models.blocks import ConvNorm, MobileOneBlock, ReparamLargeKernelConv
from edgevl.models.lightcap.config import get_lightcap_config
from edgevl.models.lightcap.fusion import FusionLayer, SelfAttention
from edgevl.models.lightcap.heads import EnsembleHead
from edgevl.models.lightcap.model import LightCap
from edgevl.models.text import TextRepMixerBlock, TextTransformer
from edgevl.models.transformer import Attention, ResidualAttentionBlock

SRC = Path(edgevl.__file__).parent


def _left_over(module: torch.nn.Module, stages) -> list[str]:
    """Modules of a type some stage maps whose fast form would still replace them (the table missed them)."""
    missed = []
    for name, m in module.named_modules():
        for stage in stages:
            form = stage.forms.get(type(m))
            if form is not None and form(m) is not None:
                missed.append(f"{name}: {type(m).__name__} ({stage.name})")
    return missed


@pytest.mark.skipif(not backend.available(), reason="this torch build has no oneDNN fused ops")
def test_every_mapped_reference_block_is_replaced():
    """After optimizing, no module the table maps is left in its reference form unless its fast form declines it
    (MobileOne blocks with squeeze-excite keep their separate GELU); every row of the table is used by a model."""
    encoder = [stage for stage in TABLE if stage is not DECODER]
    used: set[type] = set()
    for name in ("MobileCLIP-S0", "world-teacher-vit", "ViT-B-32-quickgelu"):
        torch.manual_seed(0)
        model = edgevl.create_model(name, **({} if name.startswith("world") else {"vision_cfg": {"image_size": 64}}))
        used |= {type(m) for m in model.modules()}
        fast = optimize_for_inference(model)
        assert _left_over(fast, encoder) == [], name
    s0 = optimize_for_inference(edgevl.create_model("MobileCLIP-S0", vision_cfg={"image_size": 64}))
    kinds = {type(m) for m in s0.modules()}
    gone = {ConvNorm, TextRepMixerBlock, ResidualAttentionBlock, Attention, TextTransformer, torch.nn.Linear}
    assert not kinds & gone
    kept = [m for m in s0.modules() if isinstance(m, (MobileOneBlock, ReparamLargeKernelConv))]
    assert kept and all(type(m.se) is not torch.nn.Identity for m in kept)  # squeeze-excite keeps its GELU apart
    cfg = get_lightcap_config("lightcap-mci0").replace(image_size=64, num_concepts=16, vocab_size=64)
    captioner = LightCap(cfg).eval()
    used |= {type(m) for m in captioner.modules()}
    optimize_captioner(captioner)
    assert _left_over(captioner.backbone, encoder) == []
    assert _left_over(captioner, [DECODER]) == []
    assert not {type(m) for m in captioner.modules()} & {FusionLayer, SelfAttention, EnsembleHead}
    rows = {ref for stage in TABLE for ref in stage.forms}
    assert rows - used == {TrimmedText}  # the table's only row for a fast form (a trained, trimmed tower)


def test_reference_models_have_no_speed_up_switches():
    """The flags, row/centre forwards and in-place packing that lived on the reference models are gone."""
    gone = {
        TextTransformer: ("trim_causal_padding", "prune_to_pooled", "_pooled_tail"),
        TextRepMixerBlock: ("forward_center", "reach"),
        ResidualAttentionBlock: ("forward_rows",),
        Attention: ("forward_rows",),
        SelfAttention: ("pack_qkv", "_decode_one"),
        FusionLayer: ("pack",),
        EnsembleHead: ("pack",),
    }
    for cls, names in gone.items():
        assert not [n for n in names if hasattr(cls, n)], cls.__name__
    tower = TextTransformer(8, 50, 16, 2, 1, output_dim=8)
    assert not {"trim_causal_padding", "prune_to_pooled"} & set(vars(tower))
    assert not hasattr(EnsembleHead(16, 50), "packed")


def test_private_torch_ops_are_called_by_the_backend_shim_only():
    users = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if re.search(r"torch\.ops\.(?!aten\b)", path.read_text(encoding="utf-8")) and path.name != "backend.py"
    ]  # aten overloads (public, e.g. decomposition keys) may be named anywhere
    assert users == []
    assert "torch.ops." in (SRC / "backend.py").read_text(encoding="utf-8")
