"""Registry behaviour, and every full-size config against the reference key listings and parameter counts."""

from __future__ import annotations

import json

import pytest
import torch
from clip_fixture_models import key_listing

import edgevl
from edgevl.errors import ConfigError
from edgevl.models.checkpoint import to_edgevl_layout, to_v1_layout

# config name -> (reference listing stem, layout of that listing)
LISTINGS = {
    "MobileCLIP-S0": [("v1_mobileclip_s0", "v1")],
    "MobileCLIP-S1": [("open_clip_MobileCLIP-S1", "open_clip"), ("v1_mobileclip_s1", "v1")],
    "MobileCLIP-S2": [("open_clip_MobileCLIP-S2", "open_clip"), ("v1_mobileclip_s2", "v1")],
    "MobileCLIP-B": [("open_clip_MobileCLIP-B", "open_clip"), ("v1_mobileclip_b", "v1")],
    "MobileCLIP2-S0": [("open_clip_MobileCLIP2-S0", "open_clip")],
    "MobileCLIP2-S2": [("open_clip_MobileCLIP2-S2", "open_clip")],
    "MobileCLIP2-B": [("open_clip_MobileCLIP2-B", "open_clip")],
    "MobileCLIP2-S3": [("open_clip_MobileCLIP2-S3", "open_clip")],
    "MobileCLIP2-S4": [("open_clip_MobileCLIP2-S4", "open_clip")],
    "MobileCLIP2-L-14": [("open_clip_MobileCLIP2-L-14", "open_clip")],
    "ViT-B-16": [("open_clip_ViT-B-16", "open_clip")],
    "ViT-L-14": [("open_clip_ViT-L-14", "open_clip")],
}
def _meta_model(name: str, reparam: bool):
    return edgevl.create_model(name, device="meta", reparameterize=reparam)


CASES = [
    pytest.param(name, stem, layout, kind, id=f"{name}-{stem}-{kind}")
    for name, listings in LISTINGS.items()
    for stem, layout in listings
    for kind in ("train", "reparam")
]


@pytest.mark.parametrize("name,stem,layout,kind", CASES)
def test_full_size_keys_and_shapes_match_reference_listing(fixtures_dir, name, stem, layout, kind):
    path = fixtures_dir / "keys" / f"{stem}.{kind}.txt"
    if not path.exists():
        pytest.skip(f"no {kind} listing for {stem}")
    reference = key_listing(path.name)
    # the loader's converter turns v1 and plain-CLIP open_clip keys into edgevl keys
    meta = {k: torch.empty(shape, device="meta") for k, shape in reference.items()}
    reference = {k: tuple(v.shape) for k, v in to_edgevl_layout(meta).items()}
    model = _meta_model(name, kind == "reparam")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(reference))[:5] == []
    assert sorted(set(reference) - set(ours))[:5] == []
    assert {k: s for k, s in ours.items() if reference[k] != s} == {}


@pytest.mark.parametrize("name,stem,kind", [c.values[:2] + c.values[3:] for c in CASES if c.values[2] == "v1"])
def test_v1_export_names_match_the_official_listing(fixtures_dir, name, stem, kind):
    reference = key_listing(f"{stem}.{kind}.txt")
    model = _meta_model(name, kind == "reparam")
    ours = {k: tuple(v.shape) for k, v in to_v1_layout(model).items()}
    assert ours == {k: tuple(shape) for k, shape in reference.items()}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name,stem,layout,kind", CASES)
def test_full_size_parameter_counts(fixtures_dir, name, stem, layout, kind):
    counts = json.loads((fixtures_dir / "keys" / "param_counts.json").read_text())["parameter_counts"]
    key = f"v1/{stem[3:]}/{kind}" if layout == "v1" else f"open_clip/{stem[len('open_clip_') :]}/{kind}"
    if key not in counts:
        pytest.skip(f"no count for {key}")
    model = _meta_model(name, kind == "reparam")
    expected = counts[key]
    # v1 projections (GlobalPool2D, classifier.proj) have no bias; the timm-style heads add embed_dim zeros
    extra = model.model_cfg["embed_dim"] if layout == "v1" else 0
    assert _count(model.visual) == expected["image"] + extra
    assert _count(model.text) == expected["text"]
    assert _count(model) == expected["total"] + extra


def test_list_models_natural_sort_and_builtins():
    names = edgevl.list_models()
    required = [*LISTINGS, "ViT-B-32", "world-student-mci", "world-teacher-vit", "world-teacher-mci"]
    assert [n for n in required if n not in names] == []
    assert names.index("MobileCLIP2-S2") < names.index("MobileCLIP2-S3")
    assert not any(n.startswith("lightcap") for n in names)  # other families share the folder


def test_preprocess_blocks_follow_the_spec():
    none = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    for name in ["MobileCLIP-S0", "MobileCLIP-S2", "MobileCLIP-B", "MobileCLIP2-S0", "MobileCLIP2-B"]:
        pp = edgevl.get_model_config(name)["preprocess_cfg"]
        assert {k: pp[k] for k in none} == none and pp["interpolation"] == "bilinear"
    for name, interp in [
        ("MobileCLIP2-S3", "bilinear"),
        ("MobileCLIP2-L-14", "bicubic"),
        ("ViT-B-16", "bicubic"),
    ]:
        pp = edgevl.get_model_config(name)["preprocess_cfg"]
        assert pp["mean"][0] == pytest.approx(0.48145466) and pp["interpolation"] == interp


def test_get_model_config_is_a_copy_and_accepts_slash():
    cfg = edgevl.get_model_config("ViT-B/16")
    cfg["embed_dim"] = -1
    assert edgevl.get_model_config("ViT-B-16")["embed_dim"] == 512


def test_unknown_model_names_the_model():
    with pytest.raises(ConfigError, match="mobileclip-s9"):
        edgevl.get_model_config("mobileclip-s9")
    with pytest.raises(ConfigError, match="did you mean 'MobileCLIP-S2'"):
        edgevl.get_model_config("mobileclip-s2")


def test_add_model_config_file_and_invalid(tmp_path):
    good = tmp_path / "my-tiny.json"
    good.write_text(json.dumps(edgevl.get_model_config("world-student-mci")))
    edgevl.add_model_config(good)
    assert "my-tiny" in edgevl.list_models()
    bad = tmp_path / "broken.json"
    bad.write_text(json.dumps({"embed_dim": 8}))
    with pytest.raises(ConfigError, match="broken.json.*vision_cfg"):
        edgevl.add_model_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        edgevl.add_model_config(tmp_path / "missing.json")


def test_world_student_is_small():
    model = edgevl.create_model("world-student-mci", device="meta")
    assert 1_000_000 <= _count(model) <= 3_000_000
