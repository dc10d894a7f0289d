"""Tiny stand-ins for the training tests: a few-thousand-parameter CLIP and an in-memory paired dataset.

A uniquely named module (not conftest) so `tests/train` and `tests/reinforce` can run in one pytest session.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from edgevl.data.readers.base import Sample
from edgevl.data.readers.reinforced import ReinforcedSample
from edgevl.models.clip import CLIP
from edgevl.models.factory import build_text_tower
from edgevl.train.config import TrainConfig

TEXT_CFG = {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}
TEACHER_DIMS = (6, 10)


class TinyVisual(nn.Sequential):
    """A 16x16-image tower with a norm, biases and weight matrices (enough to exercise every param group)."""

    def __init__(self) -> None:
        super().__init__(nn.Flatten(), nn.Linear(3 * 16 * 16, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 8))


def tiny_clip(seed: int = 0) -> CLIP:
    """The real CLIP wrapper and text tower, with a tiny MLP image tower (8-d embeddings)."""
    torch.manual_seed(seed)
    return CLIP(TinyVisual(), build_text_tower(TEXT_CFG, 8)).train()


class ToyPairs(Dataset):
    """`n` random (image, token) pairs, plus synthetic tokens and teacher embeddings when `reinforced`."""

    def __init__(self, n: int = 32, reinforced: bool = False, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, 16, 16, generator=g)
        self.tokens = torch.randint(1, 63, (n, 8), generator=g)
        self.syn = torch.randint(1, 63, (n, 8), generator=g)
        self.tokens[:, -1] = self.syn[:, -1] = 63  # "eot" = the argmax the text tower pools at
        width = sum(TEACHER_DIMS)
        self.emb = [torch.nn.functional.normalize(torch.randn(n, width, generator=g), dim=-1) for _ in range(3)]
        self.reinforced = reinforced

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Sample:
        if not self.reinforced:
            return Sample(key=str(i), image=self.images[i], caption=f"c{i}", tokens=self.tokens[i])
        return ReinforcedSample(key=str(i), image=self.images[i], caption=f"c{i}", tokens=self.tokens[i],
                                syn_tokens=self.syn[i], image_emb=self.emb[0][i], text_emb=self.emb[1][i],
                                syn_text_emb=self.emb[2][i])


def config(tmp_path, **overrides) -> TrainConfig:
    base = dict(model="tiny", train_data="memory", logs=str(tmp_path), name="run", steps=6, batch_size=8,
                lr=1e-2, warmup=2, log_every=1, device="cpu", keep_last=5)
    return TrainConfig(**{**base, **overrides})
