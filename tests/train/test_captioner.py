"""`edgevl train-captioner`: losses against direct formulas, head-by-head ensemble distillation, SCST math,
exact resume and the CLI, on a micro LightCap and a few world samples."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgevl.cli import main
from edgevl.data.readers.base import Sample
from edgevl.data.world import make
from edgevl.errors import ConfigError
from edgevl.eval.captioning import CiderD, cider_d
from edgevl.models.lightcap.config import get_lightcap_config
from edgevl.models.lightcap.fusion import SelfAttention, seq2seq_mask
from edgevl.models.lightcap.model import create_lightcap
from edgevl.models.lightcap.vocab import WordVocab
from edgevl.train.captioner import CaptionerTrainConfig, CaptionerTrainer, phase_of
from edgevl.train.captioner_data import caption_ids, concept_targets, reference_captions
from edgevl.train.captioner_losses import (
    attention_maps,
    kd_hidden,
    kd_logits,
    layer_map,
    mean_of_others_baseline,
    scst_loss,
    softened_log_probs,
)

MICRO = {"name": "lightcap-micro", "backbone": {"type": "clip_resnet", "layers": [1, 1, 1, 1], "width": 8},
         "image_size": 64, "hidden": 32, "layers": 2, "heads": 2, "ffn": 64, "max_caption_tokens": 16,
         "num_concepts": 16, "concept_top_k": 4, "concept_joint_dim": 16, "concept_hidden": 16, "num_heads": 2}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """12 world images (64 px, 5 clean captions each) as one shard, plus micro student/teacher configs."""
    root = tmp_path_factory.mktemp("captioner")
    make(root / "train", 12, split="train", seed=0, size=64, caption="clean", shard_size=12)
    base = get_lightcap_config("lightcap-tiny").to_dict()
    student, teacher = root / "student.json", root / "teacher.json"
    student.write_text(json.dumps({**base, **MICRO}))
    teacher.write_text(json.dumps({**base, **MICRO, "name": "micro-teacher", "hidden": 48, "layers": 4}))
    return {"spec": f"wds:{root / 'train'}/00000.tar", "student": str(student), "teacher": str(teacher),
            "root": root}


def config(world, out, **changes) -> CaptionerTrainConfig:
    values = {"config": world["student"], "train_data": world["spec"], "out": str(out), "steps": 4,
              "batch_size": 8, "warmup": 1, "lr": 3e-3, "progress": False, "log_every": 1}
    return CaptionerTrainConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def teacher_dir(world):
    cfg = config(world, world["root"] / "teacher-run", config=world["teacher"], steps=3)
    CaptionerTrainer(cfg).fit()
    return str(world["root"] / "teacher-run" / "model")


# ------------------------------------------------------------------------------------------------ data
def test_reference_captions_and_targets():
    sample = Sample(key="k", caption='["a red star.", "a star"]', meta={})
    assert reference_captions(sample) == ["a red star.", "a star"]
    assert reference_captions(Sample(key="k", captions=["x"], meta={"captions": ["a", "b"]})) == ["a", "b"]
    vocab = WordVocab.from_captions(["a red star ."])
    ids = caption_ids(vocab, ["a red star.", "a red star star star", "a star"], 5)
    assert ids[0].tolist() == [vocab.bos_id, *vocab.encode("a red star."), vocab.eos_id]
    assert ids[1].tolist() == [vocab.bos_id, *vocab.encode("a red star star"), vocab.eos_id]  # cut to 4 words
    assert ids[2].tolist() == [vocab.bos_id, *vocab.encode("a star"), vocab.eos_id, vocab.pad_id, vocab.pad_id]
    assert concept_targets(["red", "blue", "red star"], [["a red star."], ["blue"]]).tolist() == [
        [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]


# ---------------------------------------------------------------------------------------------- losses
def test_kd_logits_matches_direct_kl():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 4, 7, generator=g), torch.randn(3, 3, 4, 7, generator=g)
    mask = torch.rand(3, 4, generator=g) > 0.3
    temp = 2.5
    got = kd_logits(student, softened_log_probs(teacher, temp), mask, temp)
    target = torch.stack([F.softmax(t / temp, -1) for t in teacher.double()]).mean(0)
    terms = []
    for h in range(2):
        for b in range(3):
            for t in range(4):
                if mask[b, t]:
                    p, q = target[b, t], F.softmax(student[h, b, t].double() / temp, -1)
                    terms.append(float((p * (p / q).log()).sum()) * temp**2)
    assert got.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_kd_hidden_matches_direct_mse():
    g = torch.Generator().manual_seed(1)
    student = [torch.randn(2, 5 + 3, 4, generator=g) for _ in range(3)]
    teacher = [torch.randn(2, 6 + 3, 6, generator=g) for _ in range(5)]
    proj = torch.nn.Linear(4, 6)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    pairs = layer_map(2, 4)
    assert pairs == [(0, 0), (1, 2), (2, 4)]
    got = kd_hidden(student, teacher, proj, pairs, (5, 6), mask)
    expected = []
    for s, t in pairs:
        errs = [((proj(student[s][b, 5 + i]) - teacher[t][b, 6 + i]) ** 2).mean() for b in range(2) for i in range(3)
                if mask[b, i]]
        expected.append(torch.stack(errs).mean())
    assert got.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


def test_attention_maps_reproduce_the_layer_output():
    """With one head, maps @ V through the output projection equals the layer's own attention (SDPA)."""
    torch.manual_seed(0)
    attn = SelfAttention(8, 1)
    layer = torch.nn.Module()
    layer.attention = attn
    x, prefix = torch.randn(2, 7, 8), 4
    maps = attention_maps(layer, x, prefix)
    assert maps.shape == (2, 3, 7)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 3))
    assert (maps[:, 0, prefix + 1:] == 0).all()  # first caption token sees no later caption token
    via_maps = attn.out(maps @ attn.value(x))
    direct = attn(x, seq2seq_mask(prefix, 3))[:, prefix:]
    assert torch.allclose(via_maps, direct, atol=1e-5)


def test_scst_baseline_and_policy_gradient():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    assert mean_of_others_baseline(rewards).tolist() == [[2.5, 2.0, 1.5], [3.0, 3.0, 0.0]]
    log_probs = torch.tensor([[-1.0, -2.0, -9.0]] * 6)
    mask = torch.tensor([[True, True, False]] * 6)
    advantage = [-1.5, 0.0, 1.5, -3.0, -3.0, 6.0]
    expected = -sum(a * -3.0 for a in advantage) / 6
    assert scst_loss(log_probs, mask, rewards).item() == pytest.approx(expected)
    with pytest.raises(ConfigError, match="at least 2 samples"):
        mean_of_others_baseline(torch.ones(2, 1))


def test_scst_reward_uses_training_document_frequencies():
    corpus = [["a red star", "a star"], ["a blue circle", "a circle"], ["a red circle"]]
    scorer = CiderD(corpus)
    _, per_image = cider_d({i: refs for i, refs in enumerate(corpus)}, {0: "a red star", 1: "a circle", 2: "red"})
    assert np.allclose(scorer(["a red star", "a circle", "red"], corpus), per_image)


# ------------------------------------------------------------------------------------------- training
def test_cross_entropy_decreases_on_tiny_overfit(world, tmp_path):
    trainer = CaptionerTrainer(config(world, tmp_path, steps=40, train_samples=4, lr=5e-3))
    losses = [trainer.train_step()["caption"] for _ in range(40)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_ablation_switches_change_the_prefix(world, tmp_path):
    for changes, tokens in (({}, 4 + 4), ({"no_modulator": True}, 4 + 4), ({"no_concepts": True}, 4)):
        trainer = CaptionerTrainer(config(world, tmp_path, **changes))
        prefix, _ = trainer.model.encode_grid(trainer.train.grids[:2])
        assert prefix.shape[1] == tokens  # top-4 concept tokens + a 2x2 grid
    assert trainer.model.config.use_concepts is False
    assert "concept" not in trainer.train_step()


def test_distillation_terms_are_logged(world, tmp_path, teacher_dir):
    trainer = CaptionerTrainer(config(world, tmp_path, teacher=teacher_dir))
    parts = trainer.train_step()
    assert {"kd_logits", "kd_hidden", "kd_attn", "caption", "concept"} <= set(parts)
    assert parts["loss"] == pytest.approx(sum(parts[k] for k in ("caption", "concept", "kd_logits", "kd_hidden",
                                                                 "kd_attn")), rel=1e-5)


def test_ensemble_distillation_trains_one_head_at_a_time(world, tmp_path, teacher_dir):
    cfg = config(world, tmp_path, teacher=teacher_dir, steps=1, ensemble_distill=True, ensemble_steps=4)
    trainer = CaptionerTrainer(cfg)
    assert [phase_of(cfg, s, 2).head for s in range(5)] == [-1, 0, 0, 1, 1]
    trainer.train_step()  # main phase
    for head in (0, 0, 1, 1):
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        assert trainer.train_step()["head"] == head
        changed = {k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])}
        assert changed and all(k.startswith(f"head.heads.{head}.") for k in changed), changed


def test_scst_step_runs(world, tmp_path):
    trainer = CaptionerTrainer(config(world, tmp_path, steps=1, scst_steps=1, scst_samples=3))
    trainer.train_step()
    parts = trainer.train_step()
    assert parts["phase"] == "scst" and 0.0 <= parts["reward"] and math.isfinite(parts["loss"])


def test_resume_continues_identically(world, tmp_path):
    CaptionerTrainer(config(world, tmp_path / "a", steps=6, save_every=3)).fit()
    CaptionerTrainer(config(world, tmp_path / "b", steps=6, save_every=3)).fit()
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_6")  # as if killed after step_3 was saved
    CaptionerTrainer(config(world, tmp_path / "b", steps=6, save_every=3, resume="latest")).fit()
    lines = [(tmp_path / d / "metrics.jsonl").read_text().splitlines() for d in ("a", "b")]
    assert len(lines[0]) == 6 and lines[0] == lines[1]


def test_config_errors(world, tmp_path):
    with pytest.raises(ConfigError, match="--teacher"):
        config(world, tmp_path, ensemble_distill=True).validate()
    with pytest.raises(ConfigError, match="--scst-samples"):
        config(world, tmp_path, scst_steps=2, scst_samples=1).validate()
    with pytest.raises(ConfigError, match="nothing to train"):
        config(world, tmp_path, steps=0).validate()
    assert config(world, tmp_path, steps=0, scst_steps=1).validate().total_steps == 1  # SCST-only fine-tuning


def test_cli_smoke(world, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train-captioner", "--config", world["student"], "--train-data", world["spec"], "--val-data",
                 world["spec"], "--val-samples", "4", "--steps", "3", "--batch-size", "4", "--out", str(out),
                 "--heads", "1", "--threads", "1"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["steps"] == 3 and 0.0 <= printed["val"]["CIDEr"]
    model = create_lightcap(out / "model")
    assert model.config.num_heads == 1 and len(model.concept_names) == MICRO["num_concepts"]
    assert (out / "checkpoints" / "step_3").is_dir() and (out / "result.json").is_file()


def test_distillation_projection_resumes_from_new_and_old_checkpoints(world, tmp_path, teacher_dir):
    """The projection is saved in state.pt (the weights stay a LightCap model folder); a checkpoint from before,
    with the projection among the weights under its prefix, still resumes."""
    from safetensors.torch import load_file, save_file

    from edgevl.train.captioner import PROJECTION_PREFIX

    trainer = CaptionerTrainer(config(world, tmp_path / "new", teacher=teacher_dir, steps=1))
    assert trainer.projection is not None
    trainer.train_step()
    path = trainer.save()
    assert create_lightcap(path).state_dict().keys() == trainer.model.state_dict().keys()
    saved = {k: v.clone() for k, v in trainer.projection.state_dict().items()}
    assert saved  # a real (Linear) projection: student and teacher widths differ
    for folder in ("new", "old"):
        if folder == "old":  # rewrite the checkpoint in the earlier layout
            state = torch.load(path / "state.pt", weights_only=True)
            weights = {**load_file(str(path / "model.safetensors")),
                       **{PROJECTION_PREFIX + k: v for k, v in state.pop("projection").items()}}
            save_file(weights, str(path / "model.safetensors"))
            torch.save(state, path / "state.pt")
        fresh = CaptionerTrainer(config(world, tmp_path / folder, teacher=teacher_dir, steps=1))
        fresh.load(path)
        assert all(torch.equal(fresh.projection.state_dict()[k], v) for k, v in saved.items()), folder
