"""Helpers for the CLIP parity tests: edgevl configs for the tiny golden fixture models and output checks.

Each config is derived from the fixture's `config.json` (sizes, flags) and registered with `add_model_config`,
so the models are built through the public factory exactly like the built-in configs.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from edgevl.models.registry import add_model_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ATOL = 1e-5


def _text_cfg(fx: dict, *, mct: bool = False, v1: bool = False) -> dict:
    if v1:
        t = fx["text_encoder"]["official_text_cfg"]
        cfg = dict(
            context_length=t["context_length"],
            vocab_size=t["vocab_size"],
            width=t["dim"],
            heads=t["n_heads_per_layer"],
            layers=t["n_transformer_layers"],
            no_causal_mask=not t["causal_masking"],
            pos_embed_mode="interpolate",
        )
        return {**cfg, "model_type": "mct"} if mct else cfg
    return dict(fx["text_cfg"])


def _mci_kwargs(trunk: dict) -> dict:
    return dict(layers=trunk["layers"], embed_dims=trunk["embed_dims"])


def fixture_config(name: str) -> dict:
    """edgevl model config (JSON-able dict) for a tiny fixture model, built from its config.json."""
    folder = "mobileclip_v1" if name.startswith("mobileclip_") else "open_clip_layout"
    fx = json.loads((FIXTURES / folder / f"{name}.config.json").read_text())
    if name == "mobileclip_s0_tiny":
        vision = dict(
            timm_model_name="fastvit_mci0", image_size=64, timm_model_kwargs=_mci_kwargs(fx["image_encoder"])
        )
        return dict(
            embed_dim=32, vision_cfg=vision, text_cfg=_text_cfg(fx, mct=True, v1=True), custom_text=True
        )
    if name in ("oc_mobileclip2_s0_tiny", "oc_mobileclip2_s3_tiny"):
        preset = "fastvit_mci0" if "s0" in name else "fastvit_mci3"
        vision = dict(
            timm_model_name=preset,
            image_size=fx["vision_cfg"]["image_size"],
            timm_model_kwargs=_mci_kwargs(fx["timm_trunk"]),
        )
        return dict(embed_dim=32, vision_cfg=vision, text_cfg=_text_cfg(fx), custom_text=True)
    if name == "mobileclip_b_tiny":
        vit = fx["image_encoder"]["vit_cfg"]
        width = vit["embed_dim"]
        kwargs = dict(
            embed_dim=width,
            depth=vit["n_transformer_layers"],
            num_heads=vit["n_attn_heads"],
            stem_channels=[max(32, width // 4)] * 2,
            stem_padding=1,
            pos_embed_resize="flat_bilinear",
            ln_eps=fx["image_encoder"]["ln_eps"],
        )
        vision = dict(timm_model_name="vit_base_mci_224", image_size=224, timm_model_kwargs=kwargs)
        return dict(embed_dim=32, vision_cfg=vision, text_cfg=_text_cfg(fx, v1=True), custom_text=True)
    if name == "oc_mobileclip2_b_tiny":
        t = fx["timm_trunk"]
        kwargs = dict(
            embed_dim=t["embed_dim"],
            depth=t["depth"],
            num_heads=t["num_heads"],
            stem_channels=t["conv_stem"]["channels"][:2],
            stem_padding=t["conv_stem"]["padding"],
            ln_eps=t["ln_eps"],
        )
        vision = dict(timm_model_name="vit_base_mci_224", image_size=64, timm_model_kwargs=kwargs)
        return dict(embed_dim=32, vision_cfg=vision, text_cfg=_text_cfg(fx), custom_text=True)
    if name == "oc_clip_vit_tiny":
        return dict(embed_dim=32, vision_cfg=dict(fx["vision_cfg"]), text_cfg=_text_cfg(fx))
    raise KeyError(name)


def register(name: str, tmp_dir: Path, **changes) -> str:
    """Write the fixture config (with top-level `changes`) as JSON, register it, return its model name."""
    cfg = {**fixture_config(name), **changes}
    model_name = f"fixture-{name}" + ("-" + "-".join(sorted(changes)) if changes else "")
    path = tmp_dir / f"{model_name}.json"
    path.write_text(json.dumps(cfg))
    add_model_config(path)
    return model_name


def fixture_path(name: str, kind: str) -> Path:
    folder = "mobileclip_v1" if name.startswith("mobileclip_") else "open_clip_layout"
    return FIXTURES / folder / f"{name}.{kind}.safetensors"


def io_tensors(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(fixture_path(name, "io")))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float = ATOL) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.float() - expected.float()).abs().max().item()
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > {atol:g}"


def key_listing(name: str, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """A reference key listing in fixtures/keys (`key<TAB>(d0, d1, ...)` per line): the keys under `prefix`,
    prefix stripped."""
    rows = (line.split("\t") for line in (FIXTURES / "keys" / name).read_text().splitlines() if line.strip())
    return {k[len(prefix):]: tuple(ast.literal_eval(dims)) for k, dims in rows if k.startswith(prefix)}


def state_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
