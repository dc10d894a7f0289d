"""Typed model configs (`edgevl.models.config`): unknown keys and wrong types fail naming the key and where it came
from, open_clip's compatibility keys are accepted and ignored, and every shipped config parses and builds."""

from __future__ import annotations

import json

import pytest
import torch

import edgevl
from edgevl.errors import ConfigError
from edgevl.models import registry
from edgevl.models.config import IGNORED_KEYS, ModelConfig, TextConfig, VisionConfig
from edgevl.models.factory import build_model, build_text_tower

STUDENT = "world-student-mci"


def _student() -> dict:
    return edgevl.get_model_config(STUDENT)


def _parameters(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def test_every_shipped_config_parses_and_builds():
    names = edgevl.list_models()
    assert len(names) >= 20
    for name in names:
        cfg = ModelConfig.from_dict(edgevl.get_model_config(name), name)
        assert cfg.embed_dim > 0 and cfg.text_cfg.context_length > 0, name
        model = edgevl.create_model(name, device="meta")
        cls_row = int(cfg.text_cfg.embed_cls)  # CoCa appends a CLS position after the context
        assert model.text.positional_embedding.shape[0] == cfg.text_cfg.context_length + cls_row, name


def test_a_config_becomes_the_same_constructor_arguments():
    cfg = ModelConfig.from_dict(_student(), STUDENT)
    assert cfg.vision_cfg.timm_model_name == "fastvit_mci0" and cfg.vision_cfg.image_size == 64
    assert cfg.text_cfg == TextConfig(context_length=32, width=32, heads=4, layers=2, no_causal_mask=True)
    assert cfg.custom_text and not cfg.quick_gelu and cfg.preprocess_cfg["interpolation"] == "bilinear"
    with torch.device("meta"):
        typed, raw = build_model(cfg), build_model(_student())
    assert _parameters(typed) == _parameters(raw)
    with pytest.raises(ConfigError, match=r"text_cfg: unknown key 'width_'"):  # the dict form is checked too
        build_text_tower({"width_": 128}, 16)


@pytest.mark.parametrize("section, key, value", [
    ("text_cfg", "block_types", ["rep", "attn"]),  # a typo'd / unsupported text key
    ("vision_cfg", "timm_pol", "avg"),
    (None, "image_size", 64),  # belongs in vision_cfg: at the top level it used to be dropped without a word
    ("preprocess_cfg", "interpolate", "bicubic"),
])
def test_an_unknown_key_fails_naming_it_and_the_model(section, key, value):
    cfg = _student()
    (cfg[section] if section else cfg)[key] = value
    with pytest.raises(ConfigError, match=rf"'my-model'.*unknown key '{key}' \(known keys: .*"):
        ModelConfig.from_dict(cfg, "model config 'my-model'")
    override = {section: {key: value}} if section else {key: value}
    with pytest.raises(ConfigError, match=rf"config of model '{STUDENT}' with overrides .*unknown key '{key}'"):
        edgevl.create_model(STUDENT, device="meta", **override)


def test_wrong_value_types_and_text_model_types_fail_naming_the_key():
    with pytest.raises(ConfigError, match=r"x: text_cfg: 'layers' must be int, got '2'"):
        ModelConfig.from_dict({**_student(), "text_cfg": {"layers": "2"}}, "x")
    with pytest.raises(ConfigError, match=r"x: 'quick_gelu' must be bool, got 1"):
        ModelConfig.from_dict({**_student(), "quick_gelu": 1}, "x")
    with pytest.raises(ConfigError, match=r"x: vision_cfg must be a JSON object"):
        ModelConfig.from_dict({**_student(), "vision_cfg": [64]}, "x")
    with pytest.raises(ConfigError, match=r"x: text_cfg: unknown text model_type 'rnn'"):
        ModelConfig.from_dict({**_student(), "text_cfg": {"model_type": "rnn"}}, "x")
    with pytest.raises(ConfigError, match=r"x lacks required keys \['text_cfg'\]"):
        ModelConfig.from_dict({"embed_dim": 8, "vision_cfg": {}}, "x")


def test_open_clip_compatibility_keys_are_accepted_and_ignored():
    assert "timm_pool" in IGNORED_KEYS["vision_cfg"] and "mode" in IGNORED_KEYS["preprocess_cfg"]
    cfg = _student()
    plain = ModelConfig.from_dict(cfg, STUDENT)
    cfg["vision_cfg"].update(timm_pool="token", timm_drop_path=0.1, timm_model_pretrained=True)
    cfg["preprocess_cfg"]["mode"] = "RGB"
    assert ModelConfig.from_dict(cfg, STUDENT) == plain
    assert VisionConfig.from_dict({"timm_proj": None}) == VisionConfig()
    with pytest.raises(ConfigError, match=r"accepted and ignored \(open_clip\): timm_model_pretrained, timm_pool"):
        VisionConfig.from_dict({"timm_poll": "avg"})


def test_registry_names_a_broken_file_instead_of_skipping_it(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "good-one.json").write_text(json.dumps(_student()))
    (folder / "broken.json").write_text('{"embed_dim": 8, "vision_cfg": ')
    with pytest.raises(ConfigError, match=r"cannot read model config '.*broken\.json'"):
        edgevl.add_model_config(folder)
    (folder / "broken.json").write_text(json.dumps({**_student(), "text_cfg": {"widht": 32}}))
    with pytest.raises(ConfigError, match=r"model config '.*broken\.json': text_cfg: unknown key 'widht'"):
        edgevl.add_model_config(folder)
    (folder / "broken.json").unlink()
    lightcap = registry.CONFIG_DIR / "lightcap-tiny.json"
    (folder / "lightcap-tiny.json").write_text(lightcap.read_text())
    edgevl.add_model_config(folder)  # another model family in the folder is passed over, by its `architecture`
    assert "good-one" in edgevl.list_models() and "lightcap-tiny" not in edgevl.list_models()
    with pytest.raises(ConfigError, match=r"lightcap-tiny\.json' is a 'lightcap' config, not a CLIP model"):
        edgevl.add_model_config(folder / "lightcap-tiny.json")


def test_a_broken_builtin_config_fails_loudly(tmp_path, monkeypatch):
    (tmp_path / "ok.json").write_text(json.dumps(_student()))
    (tmp_path / "typo.json").write_text("{not json")
    monkeypatch.setattr(registry, "CONFIG_DIR", tmp_path)
    monkeypatch.setattr(registry, "_CONFIGS", {})
    monkeypatch.setattr(registry, "_LOADED_BUILTIN", False)
    with pytest.raises(ConfigError, match=r"cannot read model config '.*typo\.json'"):
        registry.list_models()
