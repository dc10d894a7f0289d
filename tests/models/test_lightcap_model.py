"""LightCap model: RN50 trunk layout, parameter budget, shapes, save/load and bad configs."""

from __future__ import annotations

import json

import pytest
import torch
from clip_fixture_models import key_listing

from edgevl.errors import CheckpointError, ConfigError
from edgevl.models.lightcap.concepts import concept_loss
from edgevl.models.lightcap.config import LightCapConfig, get_lightcap_config, list_lightcap_configs
from edgevl.models.lightcap.fusion import seq2seq_mask
from edgevl.models.lightcap.model import LightCap, create_lightcap
from edgevl.models.lightcap.resnet import CLIPResNetTrunk, clip_visual_trunk_state, load_clip_resnet_trunk
from edgevl.models.lightcap.vocab import WordVocab


@pytest.fixture(scope="module")
def rn50_listing():
    return key_listing("open_clip_RN50.train.txt")


def test_rn50_trunk_matches_open_clip_visual_keys_without_attnpool(rn50_listing):
    expected = {k[len("visual."):]: s for k, s in rn50_listing.items()
                if k.startswith("visual.") and not k.startswith("visual.attnpool.")}
    trunk = CLIPResNetTrunk()
    got = {k: tuple(v.shape) for k, v in trunk.state_dict().items()}
    assert got == expected
    params = sum(p.numel() for p in trunk.parameters())
    assert abs(params / 1e6 - 23.53) < 0.01  # spec 3.1: trunk 23.53 M


def test_rn50_trunk_loads_a_full_clip_state_dict(rn50_listing):
    torch.manual_seed(0)
    state = {k: torch.randn(s) if s else torch.tensor(0) for k, s in rn50_listing.items()}
    trunk = CLIPResNetTrunk()
    load_clip_resnet_trunk(trunk, state)
    assert torch.equal(trunk.layer4[2].conv3.weight, state["visual.layer4.2.conv3.weight"])
    assert "attnpool.c_proj.weight" not in clip_visual_trunk_state(state)
    with pytest.raises(CheckpointError, match="no 'visual"):
        load_clip_resnet_trunk(trunk, {"transformer.x": torch.zeros(1)})
    bad = dict(state)
    bad["visual.conv1.weight"] = torch.zeros(32, 3, 5, 5)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_clip_resnet_trunk(trunk, bad)


def test_rn50_trunk_grid_shape_and_macs():
    from torch.utils.flop_counter import FlopCounterMode

    trunk = CLIPResNetTrunk().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        grid = trunk(torch.randn(1, 3, 224, 224))
    assert grid.shape == (1, 2048, 7, 7)
    assert abs(counter.get_total_flops() / 2e9 - 5.37) < 0.05  # spec 3.1: 5.37 GMAC


def test_paper_size_parameter_budget():
    model = LightCap(get_lightcap_config("lightcap-rn50"))
    count = {name: sum(p.numel() for p in getattr(model, name).parameters()) / 1e6
             for name in ("backbone", "concepts", "modulator", "visual_proj", "fusion", "head")}
    assert abs(count["modulator"] - 0.094) < 0.001  # 312x39 + 39x2048 (+ biases)
    assert abs(count["concepts"] - 3.15) < 0.01  # alignment 2048x1024 + 1024x1024
    assert abs(count["visual_proj"] - 0.64) < 0.01
    assert 14.0 < count["fusion"] < 14.4  # TinyBERT-4 with a 30,522 table
    assert 0.1 < count["head"] < 0.4  # tied heads
    captioner = sum(count.values()) - count["concepts"]
    assert 38.0 < captioner < 40.0  # spec 2: trunk + TinyBERT-4 + projection + modulator + heads ~ 38.7-39.0 M


@pytest.fixture(scope="module")
def tiny() -> LightCap:
    torch.manual_seed(0)
    return create_lightcap("lightcap-tiny")


def test_forward_shapes_and_seq2seq_mask(tiny):
    cfg = tiny.config
    pixels = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    logits = tiny(pixels, torch.randint(4, cfg.vocab_size, (2, 5)))
    assert logits.shape == (cfg.num_heads, 2, 5, cfg.vocab_size)
    prefix, concepts = tiny.encode_prefix(pixels)
    assert prefix.shape == (2, cfg.concept_top_k + cfg.grid_tokens, cfg.hidden)
    assert concepts.indices.shape == (2, cfg.concept_top_k)
    mask = seq2seq_mask(2, 3)
    assert mask[:2, 2:].sum() == 0 and mask[2:, :2].all() and torch.equal(mask[2:, 2:], torch.ones(3, 3).tril().bool())
    with pytest.raises(ConfigError, match="visual tokens"):
        tiny.encode_prefix(torch.randn(1, 3, 64, 64))


def test_modulator_attention_in_unit_interval_and_backbone_frozen(tiny):
    attention = tiny.modulator.attention(torch.randn(3, 8, tiny.config.hidden))
    assert attention.shape == (3, tiny.backbone.out_channels)
    assert bool(((attention > 0) & (attention < 1)).all())
    tiny.train()
    assert not tiny.backbone.training and tiny.concepts.training
    assert not any(p.requires_grad for p in tiny.backbone.parameters())
    tiny.eval()


def test_concept_logits_train_towards_labels(tiny):
    grid = tiny.grid_features(torch.randn(2, 3, 96, 96))
    labels = torch.zeros(2, tiny.concepts.num_concepts)
    labels[0, :3] = 1
    opt = torch.optim.SGD(tiny.concepts.parameters(), lr=1.0)
    before = concept_loss(tiny.concepts.concept_logits(grid), labels).item()
    for _ in range(5):
        opt.zero_grad()
        concept_loss(tiny.concepts.concept_logits(grid), labels).backward()
        opt.step()
    assert concept_loss(tiny.concepts.concept_logits(grid), labels).item() < before


def test_save_load_roundtrip_with_word_vocab_and_concepts(tmp_path):
    torch.manual_seed(1)
    cfg = get_lightcap_config("lightcap-tiny")
    vocab = WordVocab.from_captions(["A red circle left of a blue square.", "two green triangles"])
    names = ["circle", "square", "green triangles"]
    model = LightCap(cfg, vocab, names).eval()
    model.set_concepts(names, torch.randn(3, cfg.concept_joint_dim))
    folder = model.save_pretrained(tmp_path / "cap")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    loaded = create_lightcap(folder)
    assert loaded.vocab.words == vocab.words and loaded.concept_names == names
    assert loaded.config == model.config
    assert loaded.concept_word_ids[2].tolist() == [vocab.index["green"], vocab.index["triangles"]]
    pixels = torch.randn(1, 3, 96, 96)
    ids = torch.tensor([[vocab.bos_id, 5, 6]])
    assert torch.equal(loaded(pixels, ids), model(pixels, ids))


def test_bad_configs_and_checkpoints(tmp_path):
    assert {"lightcap-rn50", "lightcap-mci0", "lightcap-tiny"} <= set(list_lightcap_configs())
    with pytest.raises(ConfigError, match="unknown LightCap model 'nope'"):
        create_lightcap("nope")
    with pytest.raises(ConfigError, match="concept vocabulary is empty"):
        LightCapConfig(num_concepts=0)
    with pytest.raises(ConfigError, match="unknown keys"):
        LightCapConfig.from_dict({"hiden": 3})
    model = create_lightcap("lightcap-tiny")
    with pytest.raises(ConfigError, match="concept vocabulary is empty"):
        model.set_concepts([], torch.zeros(0, 128))
    with pytest.raises(CheckpointError, match="does not exist"):
        LightCap.load_pretrained(tmp_path / "missing")
    folder = model.save_pretrained(tmp_path / "m")
    broken = model.save_pretrained(tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot read LightCap weights"):
        LightCap.load_pretrained(broken)
    vocab = json.loads((folder / "vocab.json").read_text())
    vocab["concepts"] = []
    (folder / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ConfigError, match="concept vocabulary is empty"):
        LightCap.load_pretrained(folder)


def test_mci0_backbone_gives_a_1024_channel_grid_and_folds():
    torch.manual_seed(0)
    cfg = get_lightcap_config("lightcap-mci0").replace(image_size=64, num_concepts=16, vocab_size=64)
    model = LightCap(cfg).eval()
    assert model.backbone.out_channels == 1024
    assert abs(sum(p.numel() for p in model.backbone.parameters()) / 1e6 - (11.406 - 0.524)) < 0.01  # spec 4
    pixels = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model(pixels, torch.tensor([[model.bos_id, 5]]))
        model.fold_backbone()
        after = model(pixels, torch.tensor([[model.bos_id, 5]]))
    assert before.shape == (cfg.num_heads, 1, 2, 64)
    assert torch.allclose(before, after, atol=1e-4)


def test_ensemble_log_probs_are_the_log_of_the_mean_head_distribution():
    from edgevl.models.lightcap.heads import EnsembleHead

    torch.manual_seed(0)
    head = EnsembleHead(16, 50, num_heads=3).double()
    for h in head.heads:
        torch.nn.init.normal_(h.bias, std=2.0)
    table, x = torch.randn(50, 16, dtype=torch.float64), torch.randn(2, 5, 16, dtype=torch.float64)
    expected = torch.stack([torch.softmax(logits, dim=-1) for logits in head(x, table)]).mean(0).log()
    torch.testing.assert_close(head.log_probs(x, table), expected, atol=1e-12, rtol=1e-12)
