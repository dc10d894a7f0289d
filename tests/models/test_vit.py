"""ViT image towers against the golden fixtures (timm conv-stem ViT, v1 MobileCLIP-B, OpenCLIP ViT) and the
full-size key listings / parameter counts."""

from __future__ import annotations

import json

import pytest
import torch
from clip_fixture_models import key_listing, state_shapes
from safetensors.torch import load_file

from edgevl.errors import CheckpointError, ConfigError
from edgevl.models.vit import (
    TimmViT,
    VisionTransformer,
    convert_v1_state_dict,
    create_openai_vit,
    create_timm_vit,
    resize_pos_embed,
)

pytestmark = pytest.mark.usefixtures("one_thread")


ATOL = 1e-5

OC_B_TINY = dict(
    img_size=64, embed_dim=64, depth=2, num_heads=4, num_classes=32, stem_channels=(16, 16), class_pos_embed=False
)
V1_B_TINY = dict(
    img_size=224,
    embed_dim=64,
    depth=2,
    num_heads=4,
    num_classes=32,
    stem_channels=(32, 32),
    stem_padding=1,
    class_pos_embed=False,
    ln_eps=1e-5,
    pos_embed_resize="flat_bilinear",
)
CLIP_VIT_TINY = dict(image_size=64, patch_size=8, width=64, layers=2, heads=4, output_dim=32)


def strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def loaded(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model.load_state_dict(state, strict=True)
    return model.eval()


def capture(model: torch.nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of the named submodules during one forward pass."""
    out: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda _m, _i, o, n=n: out.__setitem__(n, o)) for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return out


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------ timm conv-stem ViT
@pytest.mark.parametrize("kind", ["train", "reparam"])
def test_open_clip_mobileclip2_b_parity(fixtures_dir, kind):
    root = fixtures_dir / "open_clip_layout"
    io = load_file(root / "oc_mobileclip2_b_tiny.io.safetensors")
    state = strip(load_file(root / f"oc_mobileclip2_b_tiny.{kind}.safetensors"), "visual.trunk.")
    model = loaded(TimmViT(**OC_B_TINY), state)
    x = io["input.image_a"]
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), io[f"{kind}.image_tokens_a"], atol=ATOL, rtol=0)
        torch.testing.assert_close(model(x), io[f"{kind}.image_emb_a"], atol=ATOL, rtol=0)
    got = capture(model, ["patch_embed", "blocks.0", "blocks.1", "norm"], x)
    got["patch_embed"] = got["patch_embed"].flatten(2).transpose(1, 2)
    for name, want in strip(io, "train.inter.image_a.trunk.").items():
        torch.testing.assert_close(got[name], want, atol=ATOL, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("kind", ["train", "reparam"])
def test_v1_mobileclip_b_parity_both_sizes(fixtures_dir, kind):
    root = fixtures_dir / "mobileclip_v1"
    io = load_file(root / "mobileclip_b_tiny.io.safetensors")
    model = loaded(
        TimmViT(**V1_B_TINY), convert_v1_state_dict(load_file(root / f"mobileclip_b_tiny.{kind}.safetensors"))
    )
    for s in "ab":  # a: 224 px, stored 196-token table; b: 64x96, table interpolated to 24 tokens
        x = io[f"input.image_{s}"]
        with torch.no_grad():
            torch.testing.assert_close(model.forward_features(x), io[f"{kind}.image_tokens_{s}"], atol=ATOL, rtol=0)
            torch.testing.assert_close(model(x), io[f"{kind}.image_emb_{s}"], atol=ATOL, rtol=0)


def test_v1_mobileclip_b_intermediates(fixtures_dir):
    root = fixtures_dir / "mobileclip_v1"
    io = load_file(root / "mobileclip_b_tiny.io.safetensors")
    model = loaded(TimmViT(**V1_B_TINY), convert_v1_state_dict(load_file(root / "mobileclip_b_tiny.train.safetensors")))
    v1_to_native = {
        "patch_emb": "patch_embed",
        "transformer.0": "blocks.0",
        "transformer.1": "blocks.1",
        "post_transformer_norm": "norm",
    }
    for s in "ab":
        got = capture(model, list(v1_to_native.values()), io[f"input.image_{s}"])
        for v1_name, native in v1_to_native.items():
            want = io[f"train.inter.image_{s}.{v1_name}"]
            torch.testing.assert_close(got[native], want, atol=ATOL, rtol=0, msg=lambda m, n=native: f"{n}: {m}")


def test_v1_b_needs_stem_padding_one(fixtures_dir):
    """The timm stem (padding 0) shifts the grid by a pixel: v1 weights then give clearly different outputs."""
    root = fixtures_dir / "mobileclip_v1"
    io = load_file(root / "mobileclip_b_tiny.io.safetensors")
    state = convert_v1_state_dict(load_file(root / "mobileclip_b_tiny.train.safetensors"))
    model = loaded(TimmViT(**{**V1_B_TINY, "stem_padding": 0}), state)
    with torch.no_grad():
        assert (model(io["input.image_a"]) - io["train.image_emb_a"]).abs().max() > 1e-2


def test_v1_converter_accepts_stripped_prefix_and_rejects_mci(fixtures_dir):
    full = load_file(fixtures_dir / "mobileclip_v1" / "mobileclip_b_tiny.train.safetensors")
    a, b = convert_v1_state_dict(full), convert_v1_state_dict(strip(full, "image_encoder.model."))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["pos_embed"].shape == (1, 196, 64) and torch.count_nonzero(a["head.bias"]) == 0
    mci = load_file(fixtures_dir / "mobileclip_v1" / "mobileclip_s0_tiny.train.safetensors")
    with pytest.raises(CheckpointError, match="MobileCLIP-B"):
        convert_v1_state_dict(mci)


# -------------------------------------------------------------------------------------- OpenAI / OpenCLIP
@pytest.mark.parametrize("act,prefix", [("gelu", "train"), ("quick_gelu", "train_quickgelu")])
def test_open_clip_vit_parity(fixtures_dir, act, prefix):
    root = fixtures_dir / "open_clip_layout"
    io = load_file(root / "oc_clip_vit_tiny.io.safetensors")
    state = strip(load_file(root / "oc_clip_vit_tiny.train.safetensors"), "visual.")
    model = loaded(VisionTransformer(**CLIP_VIT_TINY, act=act), state)
    x = io["input.image_a"]
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), io[f"{prefix}.image_tokens_a"], atol=ATOL, rtol=0)
        torch.testing.assert_close(model(x), io[f"{prefix}.image_emb_a"], atol=ATOL, rtol=0)
    if act == "gelu":
        names = ["conv1", "transformer.resblocks.0", "transformer.resblocks.1", "ln_post"]
        got = capture(model, names, x)
        for name in names:
            want = io[f"train.inter.image_a.{name}"]
            torch.testing.assert_close(got[name], want, atol=ATOL, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


# ----------------------------------------------------------------------------------- full-size presets
def test_vit_base_mci_224_keys_and_params(fixtures_dir):
    counts = json.loads((fixtures_dir / "keys" / "param_counts.json").read_text())["parameter_counts"]
    with torch.device("meta"):
        model = create_timm_vit("vit_base_mci_224", num_classes=512)
    for oc_name in ("MobileCLIP-B", "MobileCLIP2-B"):
        assert state_shapes(model) == key_listing(f"open_clip_{oc_name}.train.txt", "visual.trunk.")
        assert n_params(model) == counts[f"open_clip/{oc_name}/train"]["image"]
    for kind in ("train", "reparam"):
        v1 = key_listing(f"v1_mobileclip_b.{kind}.txt", "image_encoder.model.")
        fake = {k: torch.empty(s, device="meta") for k, s in v1.items()}
        assert {k: tuple(v.shape) for k, v in convert_v1_state_dict(fake).items()} == state_shapes(model)


def test_vit_large_patch14_clip_224_keys_and_params(fixtures_dir):
    counts = json.loads((fixtures_dir / "keys" / "param_counts.json").read_text())["parameter_counts"]
    with torch.device("meta"):
        model = create_timm_vit("vit_large_patch14_clip_224", num_classes=768)
    assert state_shapes(model) == key_listing("open_clip_MobileCLIP2-L-14.train.txt", "visual.trunk.")
    assert n_params(model) == counts["open_clip/MobileCLIP2-L-14/train"]["image"]


def _openai_vit_param_formula(width: int, layers: int, patch: int, image: int, out: int) -> int:
    """Parameter count of an OpenAI ViT image tower written out layer by layer."""
    tokens = (image // patch) ** 2 + 1
    per_layer = (3 * width * width + 3 * width) + (width * width + width) + 4 * width  # attn + 2 LN
    per_layer += (width * 4 * width + 4 * width) + (4 * width * width + width)  # mlp
    stem = 3 * width * patch * patch + width + tokens * width + 2 * width  # conv1, cls, pos, ln_pre
    return stem + layers * per_layer + 2 * width + width * out


@pytest.mark.parametrize(
    "name,oc_listing,geometry",
    [
        ("ViT-B-16", "ViT-B-16", (768, 12, 16, 224, 512)),
        ("ViT-L-14", "ViT-L-14", (1024, 24, 14, 224, 768)),
        ("ViT-B-32", None, (768, 12, 32, 224, 512)),
    ],
)
def test_openai_vit_presets(fixtures_dir, name, oc_listing, geometry):
    with torch.device("meta"):
        model = create_openai_vit(name)
    assert n_params(model) == _openai_vit_param_formula(*geometry)
    if oc_listing:
        counts = json.loads((fixtures_dir / "keys" / "param_counts.json").read_text())["parameter_counts"]
        assert state_shapes(model) == key_listing(f"open_clip_{oc_listing}.train.txt", "visual.")
        assert n_params(model) == counts[f"open_clip/{oc_listing}/train"]["image"]


# ---------------------------------------------------------------------------- resolution, batch, errors
def test_positional_embedding_modes():
    pos = torch.randn(1, 16, 8)
    assert resize_pos_embed(pos, (4, 4), (4, 4), "fixed") is pos
    with pytest.raises(ConfigError, match="3x5"):
        resize_pos_embed(pos, (3, 5), (4, 4), "fixed")
    flat = resize_pos_embed(pos, (3, 5), (4, 4), "flat_bilinear")
    expected_flat = torch.nn.functional.interpolate(pos[None], size=(15, 8), mode="bilinear")[0]
    torch.testing.assert_close(flat, expected_flat)
    grid = resize_pos_embed(pos, (3, 5), (4, 4), "grid_bicubic")
    assert grid.shape == (1, 15, 8)
    torch.testing.assert_close(resize_pos_embed(pos, (4, 4), (4, 4), "grid_bicubic"), pos)
    with pytest.raises(ConfigError, match="pos_embed_resize"):
        TimmViT(**{**OC_B_TINY, "pos_embed_resize": "nearest"})


def test_fixed_grid_rejects_other_input_sizes():
    model = TimmViT(**OC_B_TINY).eval()
    with pytest.raises(ConfigError, match="token grid"):
        model(torch.rand(1, 3, 96, 64))


@pytest.mark.parametrize(
    "model",
    [
        TimmViT(**{**OC_B_TINY, "pos_embed_resize": "grid_bicubic"}),
        TimmViT(**V1_B_TINY),
        VisionTransformer(**CLIP_VIT_TINY, pos_embed_resize="grid_bicubic"),
    ],
    ids=["timm_bicubic", "v1_flat", "openai_bicubic"],
)
@pytest.mark.parametrize("size", [(64, 64), (96, 48)])
def test_batch_and_resolution_variations(model, size):
    model = model.eval()
    x = torch.rand(3, 3, *size)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 32)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_unknown_presets_and_bad_stem():
    with pytest.raises(ConfigError, match="vit_huge"):
        create_timm_vit("vit_huge")
    with pytest.raises(ConfigError, match="ViT-H-14"):
        create_openai_vit("ViT-H-14")
    with pytest.raises(ConfigError, match="conv stem"):
        TimmViT(**{**OC_B_TINY, "stem_channels": (16, 16, 16)})
