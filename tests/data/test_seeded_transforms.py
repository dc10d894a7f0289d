"""Readers seed a random train transform per (seed, epoch, key): same augmentation in any order or resumed run."""

from __future__ import annotations

import torch

from edgevl.cli import main
from edgevl.data.augment import AugmentConfig, TrainTransform
from edgevl.data.readers import open_dataset


def test_train_transform_is_seeded_per_sample(tmp_path):
    assert main(["world", "make", "--out", str(tmp_path), "--n", "6", "--format", "csv"]) == 0
    spec = f"csv:{next(tmp_path.glob('*.csv'))}"
    transform = TrainTransform(AugmentConfig(size=32, interpolation="bilinear"))
    ds = open_dataset(spec, transform=transform, seed=3)
    forward = [ds[i].image for i in range(6)]
    backward = [ds[i].image for i in reversed(range(6))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    assert not torch.equal(forward[0], forward[1])
    again = open_dataset(spec, transform=TrainTransform(AugmentConfig(size=32, interpolation="bilinear")), seed=3)
    assert torch.equal(again[2].image, forward[2])
    ds.set_epoch(1)
    assert not torch.equal(ds[0].image, forward[0])
    other_seed = open_dataset(spec, transform=transform, seed=4)
    assert not torch.equal(other_seed[0].image, forward[0])
