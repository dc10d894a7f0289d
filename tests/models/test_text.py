"""Text towers vs an independent slow reference, positional-table modes, pooling, v1 key conversion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from clip_fixture_models import fixture_path
from safetensors.torch import load_file

from edgevl.errors import CheckpointError, DataError
from edgevl.models.text import TextTransformer, convert_v1_state_dict, to_v1_state_dict


def _slow_reference(model: TextTransformer, ids: torch.Tensor) -> torch.Tensor:
    """Same tower written with nn.MultiheadAttention and explicit masks (float64)."""
    x = model.token_embedding.weight[ids].double() + model.positional_embedding[: ids.shape[1]].double()
    n = ids.shape[1]
    mask = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1) if model.causal else None
    for block in model.transformer.resblocks:
        mha = torch.nn.MultiheadAttention(model.width, block.attn.heads, batch_first=True).double()
        mha.in_proj_weight.data.copy_(block.attn.in_proj_weight)
        mha.in_proj_bias.data.copy_(block.attn.in_proj_bias)
        mha.out_proj.load_state_dict(block.attn.out_proj.state_dict())
        h = F.layer_norm(x, (model.width,), block.ln_1.weight.double(), block.ln_1.bias.double())
        x = x + mha(h, h, h, attn_mask=mask, need_weights=False)[0]
        h = F.layer_norm(x, (model.width,), block.ln_2.weight.double(), block.ln_2.bias.double())
        x = x + F.linear(F.gelu(F.linear(h, block.mlp.c_fc.weight.double(), block.mlp.c_fc.bias.double())),
                         block.mlp.c_proj.weight.double(), block.mlp.c_proj.bias.double())  # fmt: skip
    x = F.layer_norm(x, (model.width,), model.ln_final.weight.double(), model.ln_final.bias.double())
    first_max = [int((row == row.max()).nonzero()[0]) for row in ids]
    return x[torch.arange(len(ids)), first_max] @ model.text_projection.double()


@pytest.mark.parametrize("causal", [True, False])
def test_matches_slow_reference(causal):
    torch.manual_seed(0)
    model = TextTransformer(20, 100, 32, 4, 2, output_dim=16, causal=causal).eval()
    ids = torch.randint(1, 90, (3, 20))
    ids[0, 5] = ids[0, 12] = 99  # duplicate maximal id: the first occurrence is pooled
    ids[1, 7:] = 0
    with torch.no_grad():
        assert (model(ids).double() - _slow_reference(model, ids)).abs().max() < 1e-5


def test_positional_modes():
    model = TextTransformer(8, 50, 16, 2, 1, output_dim=8, pos_embed_mode="interpolate")
    with torch.no_grad():
        model.positional_embedding.copy_(torch.arange(8.0)[:, None].expand(8, 16))
        rows = model.positions(4)[:, 0]
    # linear resampling with align_corners=False: sample centres at 0.5, 2.5, 4.5, 6.5
    assert torch.allclose(rows, torch.tensor([0.5, 2.5, 4.5, 6.5]))
    model.pos_embed_mode = "slice"
    assert torch.equal(model.positions(4)[:, 0], torch.arange(4.0))
    with pytest.raises(DataError, match="length 9 exceeds the context length 8"):
        model.positions(9)


def test_bad_token_shape():
    with pytest.raises(DataError, match="shape"):
        TextTransformer(8, 50, 16, 2, 1, output_dim=8)(torch.zeros(8, dtype=torch.long))


def test_v1_conversion_round_trip_and_unknown_keys():
    sd = load_file(str(fixture_path("mobileclip_s0_tiny", "train")))
    text = {k[len("text_encoder.") :]: v for k, v in sd.items() if k.startswith("text_encoder.")}
    ours = convert_v1_state_dict(text)
    assert ours["positional_embedding"].shape == (77, 32)
    assert "transformer.resblocks.3.token_mixer.mixer.conv_kxk.0.conv.weight" in ours
    back = to_v1_state_dict(ours)
    assert back.keys() == text.keys() and all(torch.equal(back[k], text[k]) for k in text)
    with pytest.raises(CheckpointError, match="transformer.0.bogus"):
        convert_v1_state_dict({"transformer.0.bogus": torch.zeros(1)})


def test_text_repmixer_reparameterize_needs_eval_and_is_idempotent():
    model = TextTransformer(12, 50, 16, 2, 1, output_dim=8, causal=False, repmixer_kernel=5)
    mixer = model.transformer.resblocks[0].token_mixer
    with pytest.raises(Exception, match="eval"):
        mixer.reparameterize()
    model.eval()
    with torch.no_grad():
        for bn in [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
        ids = torch.randint(1, 50, (2, 12))
        before = model(ids)
        mixer.reparameterize()
        mixer.reparameterize()
        model.transformer.resblocks[-1].token_mixer.reparameterize()
        assert (model(ids) - before).abs().max() < 1e-5
