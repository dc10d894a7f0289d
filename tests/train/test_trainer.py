"""Trainer: weight-decay groups, schedule, kill-and-resume bit-for-bit, atomic checkpoints, NaN stop."""

from __future__ import annotations

import json
import math

import pytest
import torch
from train_helpers import TEACHER_DIMS, ToyPairs, tiny_clip

from edgevl.errors import CheckpointError, ConfigError
from edgevl.train import checkpoint as ckpt
from edgevl.train.losses import DistillConfig
from edgevl.train.schedule import cosine_lr
from edgevl.train.trainer import NonFiniteLossError, Trainer, param_groups

DISTILL = DistillConfig(TEACHER_DIMS, (100.0, 60.0), lam=0.5)


def _trainer(cfg, seed: int = 0) -> Trainer:
    reinforced = cfg.mode == "reinforced"
    return Trainer(cfg, tiny_clip(seed), ToyPairs(40, reinforced=reinforced),
                   distill=DISTILL if reinforced else None)


def _losses(run_dir) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["train/loss"] for r in map(json.loads, lines) if "train/loss" in r}


def test_weight_decay_groups_exclude_norms_biases_and_logit_scale():
    model = tiny_clip()
    groups = param_groups(model, wd=0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] == 0.2 for p in g["params"]}
    plain = {names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert "logit_scale" in plain and "visual.2.weight" in plain  # LayerNorm gain
    assert "text.ln_final.weight" in plain and "visual.1.bias" in plain
    assert "visual.1.weight" in decayed and "text.token_embedding.weight" in decayed
    assert decayed.isdisjoint(plain) and len(decayed | plain) == len(list(model.parameters()))
    scaled = param_groups(model, wd=0.2, pretrained_lr_scale=0.1)
    heads = {names[id(p)] for g in scaled if g["lr_scale"] == 1.0 for p in g["params"]}
    assert heads == {"logit_scale", "text.text_projection"}


def test_cosine_schedule_values():
    assert cosine_lr(0, 1e-3, 10, 110) == pytest.approx(1e-4)
    assert cosine_lr(9, 1e-3, 10, 110) == pytest.approx(1e-3)
    assert cosine_lr(60, 1e-3, 10, 110, min_lr=1e-6) == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6))
    assert cosine_lr(110, 1e-3, 10, 110, min_lr=1e-6) == pytest.approx(1e-6)
    assert cosine_lr(35, 1.0, 10, 110) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


@pytest.mark.parametrize("mode", ["clip", "reinforced"])
def test_kill_and_resume_is_bit_for_bit(make_config, monkeypatch, mode):
    full = _trainer(make_config(name="full", mode=mode, ema=0.9, accum_freq=2, save_every=3))
    full.fit()
    reference = _losses(full.run_dir)

    killed = _trainer(make_config(name="killed", mode=mode, ema=0.9, accum_freq=2, save_every=3))
    original = Trainer.train_step

    def dying_step(self):
        if self.step == 4:
            raise KeyboardInterrupt  # killed in step 5, after step 4 was logged but not checkpointed
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    monkeypatch.setattr(Trainer, "train_step", original)

    resumed = _trainer(make_config(name="killed", mode=mode, ema=0.9, accum_freq=2, save_every=3,
                                   resume="latest"), seed=123)  # different init: must be overwritten
    resumed.fit()
    assert resumed.step == 6
    assert _losses(resumed.run_dir) == reference  # exact equality, steps 4-6 recomputed after the resume
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(full.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)


def test_failed_checkpoint_write_keeps_previous(make_config, monkeypatch):
    trainer = _trainer(make_config(steps=2, save_every=1))
    trainer.fit()
    before = [p.name for p in ckpt.list_checkpoints(trainer.run_dir)]
    assert before == ["step_1", "step_2"]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", disk_full)  # model.safetensors already written at that point
    trainer.step = 3
    with pytest.raises(CheckpointError, match="step_3.*No space left.*kept step_2"):
        trainer.save()
    root = trainer.run_dir / ckpt.CHECKPOINT_DIR
    assert sorted(p.name for p in root.iterdir()) == before  # no half-written folder left behind
    model_state, _, state = ckpt.load_training_checkpoint(root / "step_2")
    assert state["step"] == 2 and set(model_state) == set(trainer.model.state_dict())


def test_keep_last_prunes_old_checkpoints(make_config):
    trainer = _trainer(make_config(steps=4, save_every=1, keep_last=2))
    trainer.fit()
    assert [p.name for p in ckpt.list_checkpoints(trainer.run_dir)] == ["step_3", "step_4"]


def test_nan_loss_stops_with_checkpoint_naming_the_step(make_config, monkeypatch):
    trainer = _trainer(make_config(steps=5))
    original = Trainer.forward_loss

    def poisoned(self, batch):
        out = original(self, batch)
        return {"loss": out["loss"] * float("nan")} if self.step == 2 else out

    monkeypatch.setattr(Trainer, "forward_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"at step 3.*step_2"):
        trainer.fit()
    saved = ckpt.list_checkpoints(trainer.run_dir)
    assert [p.name for p in saved] == ["step_2"]
    model_state, _, state = ckpt.load_training_checkpoint(saved[0])
    assert state["step"] == 2 and state["ranks"][0]["data"] == {"epoch": 0, "position": 2}
    assert all(torch.isfinite(v).all() for v in model_state.values())


def test_bad_options_and_resume_path(make_config, tmp_path):
    with pytest.raises(ConfigError, match="--mode"):
        make_config(mode="distill").validate()
    with pytest.raises(ConfigError, match="--teachers"):
        make_config(mode="online-distill").validate()
    with pytest.raises(ConfigError, match="teacher 'MobileCLIP-S0' needs weights"):  # as edgevl reinforce
        make_config(mode="online-distill", teachers=["MobileCLIP-S0"]).validate()
    with pytest.raises(ConfigError, match="unknown pretrained tag 'laion'.*known tags: openai"):  # tags as reinforce
        make_config(mode="online-distill", teachers=["ViT-L-14:laion"]).validate()
    make_config(mode="online-distill", teachers=["ViT-L-14:openai", "hf-hub:apple/MobileCLIP-B-OpenCLIP"]).validate()
    with pytest.raises(ConfigError, match="captioner 'lightcap-tiny' needs weights"):
        make_config(mode="online-distill", teachers=[str(tmp_path)], captioner="lightcap-tiny").validate()
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        ckpt.resolve_resume(str(tmp_path / "nowhere"), tmp_path)
    assert ckpt.resolve_resume("latest", tmp_path / "fresh") is None
