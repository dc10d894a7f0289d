"""`train(cfg)`, the entry point of `edgevl train` and of the demo: its training-augmentation overrides and the
loop it builds."""

from __future__ import annotations

from typing import Any

import pytest

from edgevl.data.world import make
from edgevl.errors import ConfigError
from edgevl.train.config import TrainConfig
from edgevl.train.launch import train


class RecordingLoop:
    """Takes `Trainer`'s arguments and records them instead of training."""

    seen: dict[str, Any] = {}

    def __init__(self, cfg: TrainConfig, model: Any, train_data: Any, **kwargs: Any) -> None:
        RecordingLoop.seen = {"cfg": cfg, "model": model, "data": train_data, **kwargs}

    def fit(self) -> dict[str, float]:
        return {"fitted": 1.0}


def test_train_applies_aug_cfg_and_runs_the_given_loop(tmp_path):
    make(tmp_path / "data", 4, split="train", seed=0, fmt="wds", shard_size=4)
    cfg = TrainConfig(model="world-student-mci", train_data=str(tmp_path / "data" / "00000.tar"), eval_every=5,
                      logs=str(tmp_path / "runs"), device="cpu")
    aug = {"scale": (0.9, 1.0), "num_ops": 0, "interpolation": "bicubic"}
    assert train(cfg, aug_cfg=aug, trainer=RecordingLoop) == {"fitted": 1.0}
    augment = RecordingLoop.seen["data"].transform.config
    assert (augment.scale, augment.num_ops, augment.interpolation, augment.size) == ((0.9, 1.0), 0, "bicubic", 64)
    assert RecordingLoop.seen["val_data"] is None and RecordingLoop.seen["tokenizer"] is not None
    train(cfg, trainer=RecordingLoop)
    default = RecordingLoop.seen["data"].transform.config
    assert (default.scale, default.num_ops, default.interpolation) == ((0.08, 1.0), 2, "bilinear")
    with pytest.raises(ConfigError, match="--eval-every needs --val-data"):  # the plain loop evaluates on val data
        train(cfg)
