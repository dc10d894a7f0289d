"""One world sample: image, clean captions, noisy caption, labels and id, made from (split, seed, index).

Each sample draws from its own RNG streams derived from (seed, split, index, stream), so any sample can be
made alone, shards can be made in parallel, and the image and clean captions do not depend on the noise level.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image

from edgevl.data.world.captions import clean_captions, noisy_caption
from edgevl.data.world.scene import check_split, render, sample_labels, sample_rng
from edgevl.data.world.vocab import MAX_OBJECTS
from edgevl.errors import DataError

DEFAULT_SIZE = 64
DEFAULT_NOISE = 0.5
MIN_SIZE, MAX_SIZE = 16, 1024


@dataclass
class WorldSample:
    """A generated image with its reference captions, web-style caption and structured labels."""

    id: str
    split: str
    seed: int
    index: int
    image: Image.Image
    captions: list[str]
    noisy: str
    noisy_outcome: dict[str, Any]
    labels: dict[str, Any]

    @property
    def key(self) -> str:
        """Webdataset/file key (no dots): the id."""
        return self.id

    def to_json(self) -> dict[str, Any]:
        """Everything except the image, JSON-able (the `.json` member of a shard)."""
        return {
            "id": self.id,
            "split": self.split,
            "seed": self.seed,
            "index": self.index,
            "captions": self.captions,
            "noisy": self.noisy,
            "noisy_outcome": self.noisy_outcome,
            "labels": self.labels,
        }


def sample_id(split: str, seed: int, index: int) -> str:
    """Stable id of sample `index` of (split, seed), e.g. 'world-train-s0-00000042'."""
    return f"world-{split}-s{seed}-{index:08d}"


def check_params(split: str, seed: int, size: int, noise: float) -> None:
    """Raise DataError naming the bad generation parameter."""
    check_split(split)
    if not isinstance(seed, int) or seed < 0:
        raise DataError(f"world seed must be a non-negative integer, got {seed!r}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise DataError(f"world image size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
    if not 0.0 <= noise <= 1.0:
        raise DataError(f"world caption noise must be in [0, 1], got {noise}")


def generate(
    index: int, split: str = "train", seed: int = 0, size: int = DEFAULT_SIZE, noise: float = DEFAULT_NOISE,
    *, max_objects: int = MAX_OBJECTS,
) -> WorldSample:
    """Sample `index` of the (split, seed) world at `size` x `size` with caption noise level `noise`.

    `max_objects` < 4 draws simpler scenes (a training curriculum; the standard splits use the default)."""
    check_params(split, seed, size, noise)
    if index < 0:
        raise DataError(f"world sample index must be >= 0, got {index}")
    labels = sample_labels(sample_rng(seed, split, index, "scene"), split, size, max_objects)
    captions = clean_captions(labels, sample_rng(seed, split, index, "captions"))
    noisy, outcome = noisy_caption(
        labels, sample_rng(seed, split, index, "noisy"), noise, allow_heldout=split == "heldout"
    )
    return WorldSample(
        id=sample_id(split, seed, index),
        split=split,
        seed=seed,
        index=index,
        image=render(labels, size),
        captions=captions,
        noisy=noisy,
        noisy_outcome=outcome,
        labels=labels,
    )


def samples(
    n: int,
    split: str = "train",
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    noise: float = DEFAULT_NOISE,
    start: int = 0,
) -> Iterator[WorldSample]:
    """Samples start .. start+n-1 of (split, seed), in order."""
    check_params(split, seed, size, noise)
    for index in range(start, start + n):
        yield generate(index, split, seed, size, noise)
