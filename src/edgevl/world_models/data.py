"""In-memory world datasets for training on the fly: every sample is regenerated from (split, seed, index).

Generating a 64x64 sample costs well under a millisecond, so nothing is written to disk; the datasets return
the `Sample` records the generic trainer collates.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from edgevl.data.readers.base import Sample
from edgevl.data.transforms import normalize, to_tensor
from edgevl.data.world import WorldSample, generate
from edgevl.data.world.scene import sample_rng
from edgevl.data.world.tasks import get_task
from edgevl.data.world.vocab import MAX_OBJECTS
from edgevl.errors import ConfigError

CAPTION_KINDS = ("clean", "noisy")
Tokenizer = Callable[[str | list[str]], torch.Tensor]


def pixel_transform(mean: Sequence[float], std: Sequence[float]) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image at the model's size -> normalized float tensor (world images need no resize or crop)."""

    def transform(image: Image.Image) -> torch.Tensor:
        return normalize(to_tensor(image), mean, std)

    return transform


class WorldPairs(Dataset):
    """(image, caption, tokens) pairs of samples 0..n-1 of a world split.

    `caption="clean"` draws one of the five clean captions at random each time a sample is read (the global
    `random` stream, which the trainer seeds); `"noisy"` always gives the web-style caption.
    `single_object` is the fraction of samples (fixed per index) drawn as one-object scenes: in a batch of
    multi-object scenes the set of colours alone tells captions apart, so a contrastive model learns shapes
    only when some negatives differ by shape alone.
    `label_task` names a world task whose class index becomes each sample's `label` (the teachers' label-prompt
    term); None leaves it unset.
    """

    def __init__(self, n: int, transform: Callable[[Image.Image], torch.Tensor], tokenizer: Tokenizer, *,
                 split: str = "train", seed: int = 0, size: int = 64, noise: float = 0.5,
                 caption: str = "clean", single_object: float = 0.0, label_task: str | None = None) -> None:
        if caption not in CAPTION_KINDS:
            raise ConfigError(f"caption kind must be one of {CAPTION_KINDS}, got {caption!r}")
        if n < 1:
            raise ConfigError(f"a world dataset needs at least one sample, got n={n}")
        if not 0.0 <= single_object <= 1.0:
            raise ConfigError(f"single_object must be a fraction in [0, 1], got {single_object}")
        self.n, self.transform, self.tokenizer = n, transform, tokenizer
        self.split, self.seed, self.size, self.noise, self.caption = split, seed, size, noise, caption
        self.single_object = single_object
        self.label_of = get_task(label_task).label if label_task else None

    def __len__(self) -> int:
        return self.n

    def world_sample(self, index: int) -> WorldSample:
        simple = sample_rng(self.seed, self.split, index, "curriculum").random() < self.single_object
        return generate(index, self.split, self.seed, self.size, self.noise, max_objects=1 if simple else MAX_OBJECTS)

    def __getitem__(self, index: int) -> Sample:
        s = self.world_sample(index)
        text = random.choice(s.captions) if self.caption == "clean" else s.noisy
        label = self.label_of(s.labels) if self.label_of else None
        return Sample(key=s.id, image=self.transform(s.image), caption=text, label=label,
                      tokens=self.tokenizer(text)[0])
