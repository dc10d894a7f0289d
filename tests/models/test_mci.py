"""MCi trunks against the golden fixtures (open_clip/timm and official v1 layouts) and the full-size key listings."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from clip_fixture_models import key_listing, state_shapes
from safetensors.torch import load_file

from edgevl.errors import CheckpointError, ConfigError
from edgevl.models.blocks import reparameterize_modules
from edgevl.models.mci import MCi, convert_v1_state_dict, create_mci

pytestmark = pytest.mark.usefixtures("one_thread")


ATOL = 1e-5


def inter_atol(reference: torch.Tensor) -> float:
    """1e-5 absolute, relaxed to 1e-6 relative for intermediates larger than 10 (float32 rounding of the
    reference itself; its README suggests 1e-4 relative)."""
    return max(ATOL, 1e-6 * reference.abs().max().item())


S0_TINY = dict(
    layers=(1, 1, 2, 1),
    embed_dims=(8, 16, 32, 64),
    mlp_ratios=(3,) * 4,
    token_mixers=("repmixer",) * 3 + ("attention",),
    downsamples=(False, True, True, True),
    se_downsamples=(False, False, True, True),
    pos_embs=(False, False, False, True),
    num_classes=32,
)
S3_TINY = dict(
    layers=(1,) * 5,
    embed_dims=(4, 8, 16, 32, 64),
    mlp_ratios=(4,) * 5,
    token_mixers=("repmixer",) * 3 + ("attention",) * 2,
    downsamples=(False,) + (True,) * 4,
    se_downsamples=(False,) * 5,
    pos_embs=(False, False, False, True, True),
    num_classes=32,
    norm="layernorm",
    stem_use_scale_branch=False,
)
OC_MODELS = {"oc_mobileclip2_s0_tiny": S0_TINY, "oc_mobileclip2_s3_tiny": S3_TINY}


def strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def build(cfg: dict, state: dict[str, torch.Tensor], reparam: bool) -> MCi:
    """A tiny trunk in eval mode (folded first when `reparam`) with `state` loaded strictly."""
    model = MCi(**cfg).eval()
    if reparam:
        reparameterize_modules(model)
    model.load_state_dict(state, strict=True)
    return model


def stage_outputs(model: MCi, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of `stem`, `stages.{i}` and `final_conv`, named as in the fixtures."""
    names = ["stem", *(f"stages.{i}" for i in range(len(model.stages))), "final_conv"]
    modules = [model.stem, *model.stages, model.final_conv]
    out: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: out.__setitem__(n, o)) for n, m in zip(names, modules)]
    try:
        with torch.no_grad():
            model.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
    return out


# ------------------------------------------------------------------------------------------ open_clip layout
@pytest.mark.parametrize("name", OC_MODELS)
@pytest.mark.parametrize("kind", ["train", "reparam"])
def test_open_clip_layout_parity(fixtures_dir, name, kind):
    root = fixtures_dir / "open_clip_layout"
    io = load_file(root / f"{name}.io.safetensors")
    state = strip(load_file(root / f"{name}.{kind}.safetensors"), "visual.trunk.")
    model = build(OC_MODELS[name], state, reparam=kind == "reparam")
    with torch.no_grad():
        for s in "ab":
            x = io[f"input.image_{s}"]
            torch.testing.assert_close(model.forward_features(x), io[f"{kind}.image_featmap_{s}"], atol=ATOL, rtol=0)
            torch.testing.assert_close(model(x), io[f"{kind}.image_emb_{s}"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", OC_MODELS)
def test_open_clip_layout_stage_outputs(fixtures_dir, name):
    root = fixtures_dir / "open_clip_layout"
    io = load_file(root / f"{name}.io.safetensors")
    model = build(OC_MODELS[name], strip(load_file(root / f"{name}.train.safetensors"), "visual.trunk."), False)
    for s in "ab":
        got = stage_outputs(model, io[f"input.image_{s}"])
        for key, want in strip(io, f"train.inter.image_{s}.trunk.").items():
            torch.testing.assert_close(got[key], want, atol=inter_atol(want), rtol=0, msg=lambda m, k=key: f"{k}: {m}")


@pytest.mark.parametrize("name", OC_MODELS)
def test_own_reparameterization_matches_reference(fixtures_dir, name):
    root = fixtures_dir / "open_clip_layout"
    io = load_file(root / f"{name}.io.safetensors")
    model = build(OC_MODELS[name], strip(load_file(root / f"{name}.train.safetensors"), "visual.trunk."), False)
    reparameterize_modules(model)
    reference = strip(load_file(root / f"{name}.reparam.safetensors"), "visual.trunk.")
    assert state_shapes(model) == {k: tuple(v.shape) for k, v in reference.items()}
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, reference[key], atol=ATOL, rtol=1e-5, msg=lambda m, k=key: f"{k}: {m}")
    with torch.no_grad():
        for s in "ab":
            x = io[f"input.image_{s}"]
            torch.testing.assert_close(model(x), io[f"reparam.image_emb_{s}"], atol=ATOL, rtol=0)
            torch.testing.assert_close(model.forward_features(x), io[f"reparam.image_featmap_{s}"], atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------- v1 layout
@pytest.mark.parametrize("kind", ["train", "reparam"])
def test_v1_conversion_parity(fixtures_dir, kind):
    root = fixtures_dir / "mobileclip_v1"
    io = load_file(root / "mobileclip_s0_tiny.io.safetensors")
    state = convert_v1_state_dict(load_file(root / f"mobileclip_s0_tiny.{kind}.safetensors"))
    model = build(S0_TINY, state, reparam=kind == "reparam")
    with torch.no_grad():
        for s in "ab":
            x = io[f"input.image_{s}"]
            torch.testing.assert_close(model.forward_features(x), io[f"{kind}.image_featmap_{s}"], atol=ATOL, rtol=0)
            torch.testing.assert_close(model(x), io[f"{kind}.image_emb_{s}"], atol=ATOL, rtol=0)


def test_v1_stage_outputs(fixtures_dir):
    root = fixtures_dir / "mobileclip_v1"
    io = load_file(root / "mobileclip_s0_tiny.io.safetensors")
    model = build(S0_TINY, convert_v1_state_dict(load_file(root / "mobileclip_s0_tiny.train.safetensors")), False)
    # v1 flat network: 0 stage, 1 down, 2 stage, 3 down, 4 stage, 5 down, 6 RepCPE, 7 stage
    v1_to_native = {
        "patch_embed": "stem",
        "network.0": "stages.0",
        "network.2": "stages.1",
        "network.4": "stages.2",
        "network.7": "stages.3",
        "conv_exp": "final_conv",
    }
    for s in "ab":
        got = stage_outputs(model, io[f"input.image_{s}"])
        for v1_name, native in v1_to_native.items():
            want = io[f"train.inter.image_{s}.{v1_name}"]
            torch.testing.assert_close(
                got[native], want, atol=inter_atol(want), rtol=0, msg=lambda m, n=native: f"{n}: {m}"
            )


def test_v1_converter_accepts_stripped_prefix(fixtures_dir):
    full = load_file(fixtures_dir / "mobileclip_v1" / "mobileclip_s0_tiny.train.safetensors")
    stripped = strip(full, "image_encoder.model.")
    a, b = convert_v1_state_dict(full), convert_v1_state_dict(stripped)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(a["head.fc.weight"], stripped["head.proj"].t())
    assert torch.count_nonzero(a["head.fc.bias"]) == 0


def test_v1_converter_rejects_other_layouts(fixtures_dir):
    oc = load_file(fixtures_dir / "open_clip_layout" / "oc_mobileclip2_s0_tiny.train.safetensors")
    with pytest.raises(CheckpointError, match="v1 MCi"):
        convert_v1_state_dict(oc)


# --------------------------------------------------------------------------------------- full-size presets
PRESETS = [
    ("fastvit_mci0", "MobileCLIP2-S0"),
    ("fastvit_mci1", "MobileCLIP-S1"),
    ("fastvit_mci2", "MobileCLIP2-S2"),
    ("fastvit_mci3", "MobileCLIP2-S3"),
    ("fastvit_mci4", "MobileCLIP2-S4"),
]


@pytest.mark.parametrize("preset,oc_name", PRESETS)
def test_full_size_keys_shapes_and_param_counts(fixtures_dir, preset, oc_name):
    counts = json.loads((fixtures_dir / "keys" / "param_counts.json").read_text())["parameter_counts"]
    with torch.device("meta"):
        model = create_mci(preset).eval()
    for kind in ("train", "reparam"):
        if kind == "reparam":
            reparameterize_modules(model)
        assert state_shapes(model) == key_listing(f"open_clip_{oc_name}.{kind}.txt", "visual.trunk.")
        n_params = sum(p.numel() for p in model.parameters())
        assert n_params == counts[f"open_clip/{oc_name}/{kind}"]["image"]


@pytest.mark.parametrize("v1_name,preset", [("s0", "fastvit_mci0"), ("s1", "fastvit_mci1"), ("s2", "fastvit_mci2")])
def test_v1_full_size_listings_convert_to_preset_keys(fixtures_dir, v1_name, preset):
    with torch.device("meta"):
        model = create_mci(preset).eval()
    for kind in ("train", "reparam"):
        if kind == "reparam":
            reparameterize_modules(model)
        v1 = key_listing(f"v1_mobileclip_{v1_name}.{kind}.txt", "")
        fake = {k: torch.empty(s, device="meta") for k, s in v1.items()}
        assert {k: tuple(v.shape) for k, v in convert_v1_state_dict(fake).items()} == state_shapes(model)


def test_full_size_mci0_shapes_at_256():
    with torch.device("meta"):
        model = create_mci("fastvit_mci0").eval()
        x = torch.empty(1, 3, 256, 256)
        grids = [tuple(o.shape) for o in stage_outputs(model, x).values()]
        emb = model(x)
    assert grids == [
        (1, 64, 64, 64),
        (1, 64, 64, 64),
        (1, 128, 32, 32),
        (1, 256, 16, 16),
        (1, 512, 8, 8),
        (1, 1024, 8, 8),
    ]
    assert emb.shape == (1, 512)


# ----------------------------------------------------------------------------------- shapes, batch, export
@pytest.mark.parametrize("cfg", [S0_TINY, S3_TINY], ids=["mci0_style", "mci3_style"])
@pytest.mark.parametrize("size", [(33, 47), (96, 64)])
def test_batch_and_resolution_variations(cfg, size):
    model = MCi(**cfg).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(2)])
    assert batched.shape == (2, 32)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_no_torchscript_constructs():
    import edgevl.models.blocks
    import edgevl.models.mci

    for module in (edgevl.models.blocks, edgevl.models.mci):
        assert "torch.jit" not in inspect.getsource(module)


def test_export_reparameterized_tiny_trunk(fixtures_dir):
    root = fixtures_dir / "open_clip_layout"
    model = build(S0_TINY, strip(load_file(root / "oc_mobileclip2_s0_tiny.reparam.safetensors"), "visual.trunk."), True)
    x = load_file(root / "oc_mobileclip2_s0_tiny.io.safetensors")["input.image_a"]
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), atol=1e-6, rtol=0)


def test_bad_configuration_names_the_argument():
    with pytest.raises(ConfigError, match="embed_dims"):
        MCi(**{**S0_TINY, "embed_dims": (8, 16, 32)})
    with pytest.raises(ConfigError, match="token mixer"):
        MCi(**{**S0_TINY, "token_mixers": ("repmixer",) * 3 + ("conv",)})
    with pytest.raises(ConfigError, match="fastvit_mci9"):
        create_mci("fastvit_mci9")
