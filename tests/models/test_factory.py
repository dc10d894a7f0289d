"""Factory behaviour: eval mode, reparameterize API, transforms, precision, tokenizer integration."""

from __future__ import annotations

import pytest
import torch
from clip_fixture_models import fixture_path, io_tensors, register

import edgevl
from edgevl.errors import CheckpointError, ConfigError


def test_reparameterize_copies_and_matches(tmp_path):
    name = register("oc_mobileclip2_s0_tiny", tmp_path)
    model = edgevl.create_model(name, pretrained=fixture_path("oc_mobileclip2_s0_tiny", "train")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = edgevl.reparameterize(model)
    assert model.training and not folded.training
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    io = io_tensors("oc_mobileclip2_s0_tiny")
    with torch.no_grad():
        ref = model.eval().encode_image(io["input.image_a"])
        assert (folded.encode_image(io["input.image_a"]) - ref).abs().max() <= 1e-5
        again = edgevl.reparameterize(folded)
        assert again.state_dict().keys() == folded.state_dict().keys()
        assert torch.equal(again.encode_image(io["input.image_a"]), folded.encode_image(io["input.image_a"]))


def test_mct_text_tower_folds_exactly():
    model = edgevl.create_model("MobileCLIP-S0", device="meta")
    assert "text.transformer.resblocks.0.token_mixer.mixer.conv_kxk.0.conv.weight" in model.state_dict()
    folded = edgevl.reparameterize(model)
    keys = folded.state_dict()
    assert keys["text.transformer.resblocks.5.token_mixer.reparam_conv.weight"].shape == (512, 1, 1, 11)


def test_create_model_and_transforms_uses_config_preprocessing():
    model, train, val = edgevl.create_model_and_transforms("world-student-mci")
    assert not model.training
    assert val.cfg.size == 64 and val.cfg.mean == (0.0, 0.0, 0.0) and val.cfg.interpolation == "bilinear"
    from PIL import Image

    x = val(Image.new("RGB", (90, 70), (255, 0, 0)))
    assert x.shape == (3, 64, 64) and x[0].min() == 1.0
    _, _, custom = edgevl.create_model_and_transforms("world-student-mci", image_interpolation="bicubic")
    assert custom.cfg.interpolation == "bicubic"


def test_preprocess_train_is_the_reproducible_augmentation():
    import numpy as np
    from PIL import Image

    from edgevl.data.augment import TrainTransform, replay, sample_record

    _, train, val = edgevl.create_model_and_transforms("world-student-mci")
    assert isinstance(train, TrainTransform)
    cfg = train.config
    assert (cfg.size, cfg.interpolation, cfg.mean, cfg.std) == (64, "bilinear", val.cfg.mean, val.cfg.std)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8))
    x = TrainTransform(cfg, generator=7)(img)
    # Same generator seed -> same record -> replaying it gives exactly the transform's output.
    record = sample_record(90, 70, cfg, 7)
    expected = torch.from_numpy(np.asarray(replay(img, record, 64, "bilinear"), dtype=np.float32) / 255)
    assert torch.equal(x, expected.permute(2, 0, 1))
    assert not torch.equal(train(img), train(img))  # a fresh augmentation per call
    _, mild, _ = edgevl.create_model_and_transforms("world-student-mci", aug_cfg={"scale": (0.9, 1.0)})
    assert mild.config.scale == (0.9, 1.0)


def test_precision_and_overrides():
    model = edgevl.create_model("world-student-mci", precision="bf16", text_cfg={"context_length": 16})
    assert model.text.text_projection.dtype == torch.bfloat16
    assert model.text.positional_embedding.shape[0] == 16
    with pytest.raises(ConfigError, match="fp8"):
        edgevl.create_model("world-student-mci", precision="fp8")


def test_pretrained_must_exist():
    with pytest.raises(CheckpointError, match="no/such/file"):
        edgevl.create_model("world-student-mci", pretrained="no/such/file.safetensors")
    with pytest.raises(CheckpointError, match="needs pretrained"):
        edgevl.create_model_from_pretrained("world-student-mci")


def test_tokenizer_context_length_follows_config():
    tok = edgevl.get_tokenizer("world-student-mci")
    ids = tok(["a photo of a dog"])
    assert ids.shape == (1, 32)
    model = edgevl.create_model("world-student-mci")
    with torch.no_grad():
        img, txt, scale = model(torch.rand(1, 3, 64, 64), ids)
    assert img.shape == txt.shape == (1, 64)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(1))


def test_lock_towers_and_grad_checkpointing():
    model = edgevl.create_model("world-teacher-vit")
    model.lock_text_tower(unlocked_layers=1)
    assert not model.text.token_embedding.weight.requires_grad and model.text.text_projection.requires_grad
    model.lock_image_tower()
    assert not any(p.requires_grad for p in model.visual.parameters())
    model.set_grad_checkpointing(True)
    assert model.text.transformer.grad_checkpointing
    model.train()
    loss = model(torch.rand(2, 3, 64, 64), edgevl.get_tokenizer("world-teacher-vit")(["a", "b"]))[1].sum()
    loss.backward()
    assert model.text.text_projection.grad is not None


def test_frozen_bn_stats_stay_in_eval():
    model = edgevl.create_model("world-student-mci")
    model.lock_image_tower(freeze_bn_stats=True)
    model.train()
    bns = [m for m in model.visual.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)


def test_parse_model_spec_forms(tmp_path):
    from edgevl.models.factory import parse_model_spec, split_model_specs

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    folder = tmp_path / "model"
    folder.mkdir()
    assert parse_model_spec(f"MobileCLIP-S0:{weights}") == ("MobileCLIP-S0", str(weights))
    assert parse_model_spec(f"MobileCLIP-S0:{folder}") == ("MobileCLIP-S0", str(folder))
    assert parse_model_spec(f"local-dir:{folder}") == (f"local-dir:{folder}", None)
    assert parse_model_spec(str(folder)) == (f"local-dir:{folder}", None)
    assert parse_model_spec("lightcap-tiny", require_weights=False) == ("lightcap-tiny", None)
    assert split_model_specs(f" A:{weights}, ,{folder},") == (f"A:{weights}", str(folder))


@pytest.mark.parametrize("spec, message", [
    ("", "empty teacher spec"),
    ("MobileCLIP-S0", "teacher 'MobileCLIP-S0' needs weights"),
    ("MobileCLIP-S0:", "needs weights"),
    (":weights.pt", "needs weights"),
    ("MobileCLIP-S0:/no/such/file.pt", "weights '/no/such/file.pt' not found"),
])
def test_parse_model_spec_refuses(spec, message):
    from edgevl.models.factory import parse_model_spec

    with pytest.raises(ConfigError, match=message):
        parse_model_spec(spec, "teacher")


def test_saved_folders_name_their_model_and_refuse_another(tmp_path):
    import json

    folder = edgevl.save_pretrained(edgevl.create_model("world-student-mci"), tmp_path / "named")
    assert json.loads((folder / "open_clip_config.json").read_text())["edgevl"] == {"model": "world-student-mci"}
    assert edgevl.create_model(None, pretrained=folder).model_name == "world-student-mci"
    with pytest.raises(ConfigError, match=r"made for model 'world-student-mci' \(.*open_clip_config.json\), not for "
                       r"--model world-teacher-vit; use --model world-student-mci or pass the folder without --model"):
        edgevl.create_model("world-teacher-vit", pretrained=folder)
    with pytest.raises(ConfigError, match="no model named"):
        edgevl.create_model(None)


def test_unnamed_folders_keep_the_explicit_model(tmp_path):
    model = edgevl.create_model("world-student-mci")
    folder = edgevl.save_pretrained(model, tmp_path / "plain", config=model.model_cfg, preprocess_cfg={"size": 48})
    assert "edgevl" not in (folder / "open_clip_config.json").read_text()  # as open_clip writes them
    assert edgevl.create_model(None, pretrained=folder).model_name is None
    assert edgevl.create_model("world-student-mci", pretrained=folder).preprocess_cfg["size"] == 48
    # a bare file takes only edgevl-written folder configs: this one may describe other weights
    bare = edgevl.create_model("world-student-mci", pretrained=folder / "model.safetensors")
    assert bare.preprocess_cfg["size"] == 64
