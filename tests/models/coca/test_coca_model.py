"""CoCa as open_clip builds it: golden embeddings and logits, strict loading, full-size key layouts, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from coca_fixtures import FIXTURES, MODELS, golden, load_model, relative_error
from safetensors.torch import load_file

import edgevl
from edgevl.errors import CheckpointError, ConfigError
from edgevl.models.coca import CoCa
from edgevl.models.factory import build_model
from edgevl.models.registry import get_model_config
from hub_cache import add_snapshot

pytestmark = pytest.mark.usefixtures("one_thread")
TOLERANCE = 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_embeddings_and_logits_match_open_clip(name):
    model, io = load_model(name), golden(name)
    assert isinstance(model, CoCa) and not model.training
    with torch.no_grad():
        latent, image_embs = model.encode_image_with_tokens(io["images"])
        text_latent, token_embs = model.encode_text_with_tokens(io["text"])
        out = model(io["images"][:2], io["text"][:2])
        checks = {
            "image_features": model.encode_image(io["images"]),
            "image_features_unnormalized": latent,
            "image_embs": image_embs,
            "text_features": model.encode_text(io["text"]),
            "text_features_unnormalized": text_latent,
            "text_token_embs": token_embs,
            "logits": out["logits"],
            "logit_scale_exp": out["logit_scale"],
        }
        if "logits_full" in io:
            checks["logits_full"] = model(io["images"][:2], io["text"][:2], output_labels=False)["logits"]
    for key, value in checks.items():
        assert value.shape == io[key].shape, key
        assert relative_error(value, io[key]) <= TOLERANCE, key
    assert torch.equal(out["labels"], io["labels"])
    assert torch.allclose(out["image_features"], io["image_features"][:2], atol=1e-6)


def test_image_only_forward_returns_the_decoder_tokens():
    model, io = load_model("coca_tiny_sv"), golden("coca_tiny_sv")
    with torch.no_grad():
        out = model(io["images"])
    assert set(out) == {"image_features", "image_embs"}
    assert relative_error(out["image_embs"], io["image_embs"]) <= TOLERANCE


def test_a_pickled_state_dict_loads_like_the_safetensors_file(tmp_path):
    state = load_file(FIXTURES / "coca_tiny_rv" / "model.safetensors")
    stored = {**state, "logit_scale": state["logit_scale"].reshape(1)}  # some checkpoints keep it as (1,)
    torch.save({"state_dict": {f"module.{k}": v for k, v in stored.items()}}, tmp_path / "model.pt")
    config = FIXTURES / "coca_tiny_rv" / "open_clip_config.json"
    (tmp_path / "open_clip_config.json").write_text(config.read_text())
    model = edgevl.create_model(f"local-dir:{tmp_path}", pretrained=tmp_path / "model.pt")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.logit_scale.shape == ()


def test_weights_of_another_architecture_fail_naming_the_keys():
    sv = FIXTURES / "coca_tiny_sv" / "model.safetensors"
    with pytest.raises(CheckpointError, match=r"shape-mismatched .*text\.cls_emb: checkpoint \(32,\) vs model \(8,\)"):
        edgevl.create_model(f"local-dir:{FIXTURES / 'coca_tiny_rv'}", pretrained=sv)
    clip_weights = build_model(get_model_config("world-teacher-vit")).state_dict()
    coca = load_model("coca_tiny_rv")
    with pytest.raises(CheckpointError, match=r"missing \(text\.cls_emb, .*unexpected"):
        edgevl.load_checkpoint(coca, clip_weights)


def test_a_longer_text_context_is_refused_not_squashed(tmp_path):
    coca = load_model("coca_tiny_sv")
    state = dict(coca.state_dict())
    state["text.positional_embedding"] = torch.zeros(129, 32)
    wanted = r"text\.positional_embedding: checkpoint \(129, 32\) vs model \(17, 32\)"
    with pytest.raises(CheckpointError, match=wanted):
        edgevl.load_checkpoint(coca, state)


def _listing(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in path.read_text().splitlines():
        key, shape = line.split("\t")
        rows.append((key, tuple(int(n) for n in shape.strip("()").split(",") if n.strip())))
    return rows


@pytest.mark.parametrize("name", ["coca_ViT-B-32", "coca_ViT-L-14"])
def test_full_size_state_dict_matches_open_clip(name):
    with torch.device("meta"):
        model = build_model(get_model_config(name))
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    expected = _listing(FIXTURES / f"keys_{name}.txt")
    assert ours == expected  # same keys, shapes and order


def test_context_variants_differ_only_in_their_text_length():
    base = get_model_config("coca_ViT-L-14")
    for n in (128, 256):
        cfg = get_model_config(f"coca_ViT-L-14-context{n}")
        assert cfg["text_cfg"].pop("context_length") == cfg["multimodal_cfg"].pop("context_length") == n
        for section in ("text_cfg", "multimodal_cfg"):
            base_section = {k: v for k, v in base[section].items() if k != "context_length"}
            assert cfg[section] == base_section
        assert cfg["vision_cfg"] == base["vision_cfg"] and cfg["embed_dim"] == base["embed_dim"]


def test_factory_builds_coca_with_its_tokenizer_length_and_transforms():
    with torch.device("meta"):
        model = build_model(get_model_config("coca_ViT-B-32"))
    assert isinstance(model, CoCa) and model.context_length == 76
    assert edgevl.get_tokenizer("coca_ViT-L-14").context_length == 76
    model, _, val = edgevl.create_model_and_transforms(f"local-dir:{FIXTURES / 'coca_tiny_rv'}")
    assert val.cfg.size == 32 and val.cfg.interpolation == "bicubic"


def test_configs_that_cannot_wire_a_coca_fail_clearly():
    cfg = get_model_config("coca_ViT-B-32")
    cfg["multimodal_cfg"]["width"] = 768
    with pytest.raises(ConfigError, match="embed_dim = text width = multimodal width"):
        build_model(cfg)
    cfg = get_model_config("coca_ViT-B-32")
    cfg["multimodal_cfg"]["typo"] = 1
    with pytest.raises(ConfigError, match="multimodal_cfg: unknown key 'typo'"):
        build_model(cfg)


def test_a_coca_repository_loads_offline_from_the_hub_cache(hub_root):
    folder = FIXTURES / "coca_tiny_rv"
    files = {"open_clip_config.json": (folder / "open_clip_config.json").read_bytes(),
             "open_clip_model.safetensors": (folder / "model.safetensors").read_bytes()}
    add_snapshot(hub_root, "edgevl-test/coca-tiny", files, "d" * 40)
    model, _, val = edgevl.create_model_and_transforms("hf-hub:edgevl-test/coca-tiny")
    state = load_file(folder / "model.safetensors")
    assert isinstance(model, CoCa) and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert val.cfg.interpolation == "bicubic" and val.cfg.size == 32
