"""LightCap's fast decoder (`DECODER` stage): packed heads and fusion layers equal the reference ones."""

from __future__ import annotations

import torch

from edgevl.fast.lightcap import PackedEnsembleHead, PackedFusionLayer
from edgevl.fast.table import DECODER, replace_modules


def test_packed_ensemble_head_equals_the_separate_heads():
    """`PackedEnsembleHead` (one dense GEMM, one LayerNorm + affine for all heads) gives each head's logits."""
    from edgevl.models.lightcap.heads import EnsembleHead

    torch.manual_seed(0)
    head = EnsembleHead(16, 50, num_heads=3).double()
    for h in head.heads:  # distinct LayerNorm affines and biases, so a mix-up between heads shows
        for p in (h.norm.weight, h.norm.bias, h.bias):
            torch.nn.init.normal_(p, std=1.0)
    table, x = torch.randn(50, 16, dtype=torch.float64), torch.randn(2, 5, 16, dtype=torch.float64)
    ref_logits, ref_lp = head(x, table), head.log_probs(x, table)
    packed = replace_modules(head, DECODER.forms)
    assert type(packed) is PackedEnsembleHead
    assert replace_modules(packed, DECODER.forms) is packed  # idempotent
    with torch.inference_mode():  # float64; the packed LayerNorm sees √2·GELU, exact up to its 1e-12 eps
        torch.testing.assert_close(packed(x, table), ref_logits, atol=1e-8, rtol=1e-8)
        torch.testing.assert_close(packed.log_probs(x, table), ref_lp, atol=1e-8, rtol=1e-8)
    assert packed(x[0, 0], table).shape == (3, 50)


def test_packed_fusion_layer_equals_the_trained_layer_and_renames_its_keys():
    """`PackedFusionLayer` (q/k/v packed and pre-scaled, GELU's 1/√2 folded into the FFN weights): same outputs on
    a masked full pass and a cached one-position step; the packed layer's keys differ from a checkpoint's."""
    from edgevl.models.lightcap.fusion import FusionLayer, seq2seq_mask

    torch.manual_seed(0)
    layer = FusionLayer(48, 4, 96).eval()
    x, mask = torch.randn(2, 9, 48), seq2seq_mask(6, 3)
    with torch.no_grad():
        ref_full = layer(x, mask)
        keys, values = torch.zeros(2, 2, 4, 10, 12), torch.zeros(2, 2, 4, 10, 12)
        layer(x[:, :8], None, (keys[0], values[0], 0))
        ref_step = layer(x[:, 8:], None, (keys[0], values[0], 8))
        packed = replace_modules(layer, DECODER.forms)
        assert type(packed) is PackedFusionLayer
        assert replace_modules(packed, DECODER.forms) is packed  # idempotent
        assert {"ffn_in.weight", "attention.qkv.weight"} <= set(packed.state_dict())
        assert "intermediate.weight" not in packed.state_dict()
        torch.testing.assert_close(packed(x, mask), ref_full, atol=1e-5, rtol=1e-5)
        packed(x[:, :8], None, (keys[1], values[1], 0))
        torch.testing.assert_close(packed(x[:, 8:], None, (keys[1], values[1], 8)), ref_step, atol=1e-5, rtol=1e-5)
