"""Every tiny golden fixture model loads through the public factory and reproduces all its stored outputs."""

from __future__ import annotations

import contextlib

import pytest
import torch
from clip_fixture_models import ATOL, assert_close, fixture_path, io_tensors, register

import edgevl

# v1 submodule names (MCi flat `network` list, conv-stem ViT) -> edgevl module paths under `visual`
_V1_MODULES = {
    "patch_embed": "trunk.stem",
    "network.0": "trunk.stages.0",
    "network.1": "trunk.stages.1.downsample",
    "network.2": "trunk.stages.1",
    "network.3": "trunk.stages.2.downsample",
    "network.4": "trunk.stages.2",
    "network.5": "trunk.stages.3.downsample",
    "network.6": "trunk.stages.3.pos_emb",
    "network.7": "trunk.stages.3",
    "conv_exp": "trunk.final_conv",
    "patch_emb": "trunk.patch_embed",
    "transformer.0": "trunk.blocks.0",
    "transformer.1": "trunk.blocks.1",
    "post_transformer_norm": "trunk.norm",
}
_EMBEDDINGS = ("inter.text.embeddings", "inter.text.embedding_dropout")
_TEXT_MODULES = {"ln_final": "ln_final", "final_layer_norm": "ln_final"}


@contextlib.contextmanager
def _non_causal(model):
    causal = model.text.causal
    model.text.causal = False
    try:
        yield
    finally:
        model.text.causal = causal


def _inter_module(model, name: str) -> torch.nn.Module:
    """The edgevl module whose output is the reference intermediate `name`."""
    if name.startswith("inter.text."):
        return _text_module(model, name[len("inter.text.") :])
    sub = name.split(".", 2)[2]
    return model.visual.get_submodule(_V1_MODULES.get(sub, sub))


def capture_intermediates(model, io: dict, names: list[str]) -> dict[str, torch.Tensor]:
    """Outputs of every requested intermediate, with one forward pass per input (forward hooks)."""
    runs = {
        "inter.text.": lambda: model.encode_text(io["input.text_tokens"]),
        "inter.image_a.": lambda: model.encode_image(io["input.image_a"]),
        "inter.image_b.": lambda: model.encode_image(io["input.image_b"]),
    }
    out: dict[str, torch.Tensor] = {}
    for prefix, run in runs.items():
        wanted = [n for n in names if n.startswith(prefix) and n not in _EMBEDDINGS]
        hooks = [
            _inter_module(model, n).register_forward_hook(lambda _m, _i, o, n=n: out.setdefault(n, o))
            for n in wanted
        ]
        try:
            if wanted:
                run()
        finally:
            for h in hooks:
                h.remove()
    for n in names:  # timm's patch_embed flattens (B, D, H, W) to tokens (B, H·W, D); edgevl's keeps the map
        if n.endswith(".trunk.patch_embed"):
            out[n] = out[n].flatten(2).transpose(1, 2)
    return out


def _text_module(model, name: str) -> torch.nn.Module:
    if name in _TEXT_MODULES:
        return model.text.get_submodule(_TEXT_MODULES[name])
    index = int(name.rsplit(".", 1)[1])
    return model.text.transformer.resblocks[index]


def compute(model, io: dict, name: str) -> torch.Tensor:
    """The edgevl value for one reference output (name without its train./reparam. prefix), except
    intermediates, which `capture_intermediates` collects."""
    tokens = io["input.text_tokens"]
    if name.startswith("forward."):
        img, txt, scale = model(io["input.image_a"], tokens)
        return {"image_features_a": img, "text_features": txt}.get(name.split(".")[1], scale)
    if name in ("image_emb_a", "image_emb_b"):
        return model.encode_image(io[f"input.image_{name[-1]}"])
    if name.startswith(("image_featmap_", "image_tokens_")):
        tower = getattr(model.visual, "trunk", model.visual)
        return tower.forward_features(io[f"input.image_{name[-1]}"])
    if name.startswith("text_emb"):
        ids = io["input.text_tokens_ctx32"] if "ctx32" in name else tokens
        with _non_causal(model) if name.endswith("noncausal") else contextlib.nullcontext():
            return model.encode_text(ids)
    if name in _EMBEDDINGS:
        return model.text.embed(tokens)
    raise KeyError(f"no edgevl computation for reference output {name!r}")


MCI_MODELS = ["mobileclip_s0_tiny", "oc_mobileclip2_s0_tiny", "oc_mobileclip2_s3_tiny"]
VIT_MODELS = ["mobileclip_b_tiny", "oc_mobileclip2_b_tiny"]


def _check_all(model, io: dict, prefix: str) -> int:
    names = [k[len(prefix) + 1 :] for k in io if k.startswith(prefix + ".")]
    assert names, f"no reference outputs under {prefix!r}"
    with torch.no_grad():
        inter = capture_intermediates(model, io, [n for n in names if n.startswith("inter.")])
        for name in names:
            expected = io[f"{prefix}.{name}"]
            # image-tower feature maps reach |x| ~ 20: compare them at float32 noise level (2e-6 relative)
            atol = max(ATOL, 2e-6 * expected.abs().max().item()) if name.startswith("inter.image") else ATOL
            actual = inter[name] if name in inter else compute(model, io, name)
            assert_close(actual, expected, f"{prefix}.{name}", atol)
    return len(names)


@pytest.mark.parametrize("name", MCI_MODELS)
@pytest.mark.parametrize("weights", ["train", "reparam"])
def test_mci_fixture_reproduces_all_outputs(tmp_path, name, weights):
    model = edgevl.create_model(register(name, tmp_path), pretrained=fixture_path(name, weights))
    assert not model.training
    assert _check_all(model, io_tensors(name), weights) >= 8


@pytest.mark.parametrize("name", MCI_MODELS)
def test_folding_train_weights_reproduces_reparam_outputs(tmp_path, name):
    model = edgevl.create_model(
        register(name, tmp_path), pretrained=fixture_path(name, "train"), reparameterize=True
    )
    assert any("reparam_conv" in k for k in model.state_dict())
    assert _check_all(model, io_tensors(name), "reparam") >= 8


@pytest.mark.parametrize("name", VIT_MODELS)
@pytest.mark.parametrize("weights", ["train", "reparam"])
def test_conv_stem_vit_fixture_reproduces_all_outputs(tmp_path, name, weights):
    model = edgevl.create_model(register(name, tmp_path), pretrained=fixture_path(name, weights))
    assert _check_all(model, io_tensors(name), weights) >= 6


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_openai_vit_teacher_fixture(tmp_path, quick_gelu):
    name = "oc_clip_vit_tiny"
    changes = {"quick_gelu": True} if quick_gelu else {}
    model = edgevl.create_model(register(name, tmp_path, **changes), pretrained=fixture_path(name, "train"))
    io = io_tensors(name)
    prefix = "train_quickgelu" if quick_gelu else "train"
    assert _check_all(model, io, prefix) >= 6


def test_forward_logit_scale_is_clamped_at_100(tmp_path):
    # mobileclip_s0_tiny stores logit_scale 4.8 (exp 121.5); the reference forward returns 100
    name = "mobileclip_s0_tiny"
    model = edgevl.create_model(register(name, tmp_path), pretrained=fixture_path(name, "train"))
    assert model.logit_scale.exp().item() > 121
    assert model.scale().item() == pytest.approx(100.0)


def test_output_dict(tmp_path):
    name = "oc_mobileclip2_s0_tiny"
    model = edgevl.create_model(
        register(name, tmp_path), pretrained=fixture_path(name, "train"), output_dict=True
    )
    io = io_tensors(name)
    with torch.no_grad():
        out = model(image=io["input.image_a"], text=io["input.text_tokens"])
        text_only = model(text=io["input.text_tokens"])
    assert set(out) == {"image_features", "text_features", "logit_scale"}
    assert_close(out["image_features"], io["train.forward.image_features_a"], "image_features")
    assert_close(out["logit_scale"], io["train.forward.logit_scale_exp"], "logit_scale")
    assert text_only["image_features"] is None
