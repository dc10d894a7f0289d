"""Reproducible training augmentations: RandomResizedCrop + RandAugment with DataCompDR parameter records.

`sample` draws the parameters exactly as torchvision's `RandomResizedCrop.get_params` and `RandAugment`
do (same RNG calls in the same order, so a seeded generator reproduces the reference records) and returns
them as a compact record `[[top, left, height, width], [[op_index, magnitude], ...]]`. `replay` re-applies a
record to the original image at any output size/interpolation with the ops computed as torchvision's PIL
backend does, which makes replay bit-exact against stored DataCompDR augmentations. See docs/augmentations.md.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image

from edgevl.data.augment_ops import apply_op
from edgevl.data.transforms import (
    OPENAI_MEAN,
    OPENAI_STD,
    ImageSource,
    load_image,
    resampling,
    to_rgb,
)
from edgevl.errors import ConfigError, DataError

OP_NAMES = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)
SIGNED_OPS = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9})

# A record: [[top, left, height, width], [[op_index, magnitude], ...]]; either part may be None (skipped).
Record = list
Generator = torch.Generator | int | None


# ------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class AugmentConfig:
    """RandomResizedCrop + RandAugment settings (defaults: the DataCompDR generation config)."""

    size: int = 224
    interpolation: str = "bicubic"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    num_ops: int = 2
    magnitude: int = 9
    num_bins: int = 31
    rand_augment_p: float = 1.0
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD

    def __post_init__(self) -> None:
        for name in ("scale", "ratio", "mean", "std"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        try:
            resampling(self.interpolation)
        except ValueError as exc:
            raise ConfigError(f"AugmentConfig.interpolation: {exc}") from None
        checks = [
            (_is_int(self.size) and self.size >= 1, f"size must be an integer >= 1, got {self.size!r}"),
            (
                len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1],
                f"scale must be 0 < lo <= hi: {self.scale}",
            ),
            (
                len(self.ratio) == 2 and 0 < self.ratio[0] <= self.ratio[1],
                f"ratio must be 0 < lo <= hi: {self.ratio}",
            ),
            (self.num_ops >= 0, f"num_ops must be >= 0, got {self.num_ops}"),
            (self.num_bins >= 2, f"num_bins must be >= 2, got {self.num_bins}"),
            (0 <= self.magnitude < self.num_bins, f"magnitude must be in [0, num_bins): {self.magnitude}"),
            (0.0 <= self.rand_augment_p <= 1.0, f"rand_augment_p must be in [0, 1]: {self.rand_augment_p}"),
            (
                len(self.mean) == 3 and len(self.std) == 3 and min(self.std) > 0,
                "mean/std need 3 values, std > 0",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"AugmentConfig: {message}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists), e.g. for a dataset manifest."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AugmentConfig:
        """Inverse of `to_dict`; unknown keys are a ConfigError."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"AugmentConfig: unknown keys {unknown}")
        return cls(**data)


# ------------------------------------------------------------------------------------- magnitudes
@lru_cache(maxsize=64)
def op_magnitudes(num_bins: int, magnitude: int, height: int, width: int) -> tuple[float, ...]:
    """Unsigned magnitude of each of the 14 ops at bin `magnitude` for an image of height x width.

    The bins are float32 (torch.linspace), widened to float64 exactly as torchvision's RandAugment does, so
    values carry float32 rounding (e.g. 0.26999998092651367).
    """

    def linear(hi: float) -> float:
        return float(torch.linspace(0.0, hi, num_bins)[magnitude].item())

    posterize = 8 - (torch.arange(num_bins) / ((num_bins - 1) / 4)).round().int()
    return (
        0.0,
        linear(0.3),
        linear(0.3),
        linear(150.0 / 331.0 * width),
        linear(150.0 / 331.0 * height),
        linear(30.0),
        linear(0.9),
        linear(0.9),
        linear(0.9),
        linear(0.9),
        float(posterize[magnitude].item()),
        float(torch.linspace(255.0, 0.0, num_bins)[magnitude].item()),
        0.0,
        0.0,
    )


# --------------------------------------------------------------------------------------- sampling
def _as_generator(generator: Generator) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(int(generator))
    kind = type(generator).__name__
    raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {kind}")


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return torch.empty(1).uniform_(lo, hi, generator=generator).item()


def _randint(high: int, generator: torch.Generator | None, low: int = 0) -> int:
    return int(torch.randint(low, high, (1,), generator=generator).item())


def sample_crop_box(
    width: int, height: int, scale: Sequence[float], ratio: Sequence[float], generator: Generator = None
) -> list[int]:
    """torchvision's RandomResizedCrop box [top, left, height, width]: 10 area/log-ratio attempts, then a
    centered crop with the aspect ratio clamped to `ratio`."""
    gen = _as_generator(generator)
    area = height * width
    log_lo, log_hi = torch.log(torch.tensor(tuple(ratio))).tolist()
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], gen)
        aspect = torch.exp(torch.empty(1).uniform_(log_lo, log_hi, generator=gen)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(height - h + 1, gen)
            left = _randint(width - w + 1, gen)
            return [top, left, h, w]
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return [(height - h) // 2, (width - w) // 2, h, w]


def sample_ops(config: AugmentConfig, height: int, width: int, generator: Generator = None) -> list | None:
    """RandAugment's draws: None (skipped) with probability 1 - p, else `num_ops` x [op index, signed
    magnitude]; `height` x `width` is the crop output size (it scales the translations)."""
    gen = _as_generator(generator)
    if bool(torch.rand(1, generator=gen) > config.rand_augment_p):  # float32 comparison, as torchvision
        return None
    magnitudes = op_magnitudes(config.num_bins, config.magnitude, height, width)
    ops = []
    for _ in range(config.num_ops):
        op = _randint(len(OP_NAMES), gen)
        value = magnitudes[op]
        if op in SIGNED_OPS and _randint(2, gen):
            value *= -1.0
        ops.append([op, value])
    return ops


def _output_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        hw = (int(size), int(size))
    elif isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, numbers.Integral) for s in size):
        hw = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    if min(hw) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return hw


def sample_record(width: int, height: int, config: AugmentConfig | None = None, generator: Generator = None) -> Record:
    """Draw one record for a width x height image without touching pixels (same RNG stream as `sample`)."""
    cfg = config or AugmentConfig()
    gen = _as_generator(generator)
    box = sample_crop_box(width, height, cfg.scale, cfg.ratio, gen)
    out_h, out_w = _output_hw(cfg.size)
    return [box, sample_ops(cfg, out_h, out_w, gen)]


def sample(
    image: Image.Image, generator: Generator = None, config: AugmentConfig | None = None
) -> tuple[Image.Image, Record]:
    """Augment `image` randomly; returns (uint8 RGB image, record) with `replay(image, record) == image`.

    `generator` is a torch.Generator, an int seed, or None for torch's global RNG (as the reference does).
    """
    cfg = config or AugmentConfig()
    rgb = to_rgb(image)
    record = sample_record(rgb.width, rgb.height, cfg, generator)
    return replay(rgb, record, cfg.size, cfg.interpolation), record


# ------------------------------------------------------------------------------------ records
def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_record(record: Any) -> Record:
    """Validate a compressed record and return it as plain Python ints/floats; DataError names the problem."""
    if not isinstance(record, Sequence) or isinstance(record, str) or len(record) != 2:
        raise DataError(f"augmentation record must be [crop_box, ops], got {record!r}")
    box, ops = record
    if box is not None:
        if not isinstance(box, Sequence) or len(box) != 4 or not all(_is_int(v) for v in box):
            raise DataError(f"crop box must be 4 integers [top, left, height, width], got {box!r}")
        box = [int(v) for v in box]
        if box[0] < 0 or box[1] < 0 or box[2] <= 0 or box[3] <= 0:
            raise DataError(f"crop box needs top, left >= 0 and height, width > 0, got {box}")
    if ops is not None:
        if not isinstance(ops, Sequence) or isinstance(ops, str):
            raise DataError(f"RandAugment ops must be a list of [op_index, magnitude], got {ops!r}")
        ops = [_check_op(op) for op in ops]
    return [box, ops]


def _check_op(op: Any) -> list:
    if not isinstance(op, Sequence) or isinstance(op, str) or len(op) != 2:
        raise DataError(f"RandAugment op must be [op_index, magnitude], got {op!r}")
    index, magnitude = op
    if not _is_int(index) or not 0 <= index < len(OP_NAMES):
        raise DataError(f"RandAugment op index must be an integer in [0, {len(OP_NAMES)}), got {index!r}")
    if not isinstance(magnitude, numbers.Real) or isinstance(magnitude, bool) or not math.isfinite(magnitude):
        raise DataError(f"magnitude of {OP_NAMES[index]} must be a finite number, got {magnitude!r}")
    if OP_NAMES[index] == "Posterize" and not 0 <= int(magnitude) <= 8:
        raise DataError(f"Posterize keeps 0..8 bits, got magnitude {magnitude!r}")
    return [int(index), float(magnitude)]


def decompress_record(record: Any) -> dict[str, Any]:
    """Spell a record out: {"random_resized_crop": {top, left, height, width}, "rand_augment": [{op_index, op,
    magnitude}, ...]} (a skipped part is None)."""
    box, ops = check_record(record)
    crop = dict(zip(("top", "left", "height", "width"), box)) if box is not None else None
    steps = None if ops is None else [{"op_index": i, "op": OP_NAMES[i], "magnitude": m} for i, m in ops]
    return {"random_resized_crop": crop, "rand_augment": steps}


def compress_record(params: Mapping[str, Any]) -> Record:
    """Inverse of `decompress_record` (the "op" names are checked against the indices)."""
    try:
        crop, steps = params["random_resized_crop"], params["rand_augment"]
        box = None if crop is None else [crop[k] for k in ("top", "left", "height", "width")]
        ops = None if steps is None else [[s["op_index"], s["magnitude"]] for s in steps]
    except (KeyError, TypeError) as exc:
        raise DataError(f"decompressed augmentation record is missing {exc}: {params!r}") from None
    record = check_record([box, ops])
    for step, (index, _) in zip(steps or (), record[1] or ()):
        if "op" in step and step["op"] != OP_NAMES[index]:
            raise DataError(f"op name {step['op']!r} does not match op_index {index} ({OP_NAMES[index]})")
    return record


def encode_paug(records: Sequence[Record], string_form: bool = False) -> str:
    """Text of a sample's `paug.json`: `{"param_aug": [records]}` as the reference dataset writer writes
    it, or with `string_form=True` the published-metadata variant where `param_aug` is a JSON string."""
    checked = [check_record(r) for r in records]
    return json.dumps({"param_aug": json.dumps(checked) if string_form else checked})


def decode_paug(data: str | bytes | Mapping[str, Any]) -> list[Record]:
    """Records from a `paug.json` (text, bytes or parsed dict), accepting the list and the string form."""
    try:
        obj = json.loads(data) if isinstance(data, (str, bytes, bytearray)) else data
        if not isinstance(obj, Mapping) or "param_aug" not in obj:
            raise DataError(f"paug.json must be an object with a 'param_aug' key, got {str(data)[:80]!r}")
        records = obj["param_aug"]
        if isinstance(records, (str, bytes)):
            records = json.loads(records)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"paug.json is not valid JSON: {exc}") from None
    if not isinstance(records, list):
        raise DataError(f"paug.json 'param_aug' must be a list of records, got {type(records).__name__}")
    return [check_record(r) for r in records]


# ---------------------------------------------------------------------------------------- replay
def replay(
    image: Image.Image, record: Any, size: int | Sequence[int] = 224, interpolation: str = "bicubic"
) -> Image.Image:
    """Re-apply a record to the original image: crop its box, resize to `size` (int or (h, w)) with
    `interpolation`, then its RandAugment ops with the stored magnitudes. Returns uint8 RGB."""
    box, ops = check_record(record)
    img = to_rgb(image)
    out_h, out_w = _output_hw(size)
    if box is not None:
        top, left, h, w = box
        if top + h > img.height or left + w > img.width:
            raise DataError(f"crop box {box} (top, left, height, width) exceeds the {img.width}x{img.height} image")
        img = img.crop((left, top, left + w, top + h))
    if img.size != (out_w, out_h):
        img = img.resize((out_w, out_h), resampling(interpolation))
    for op, magnitude in ops or ():
        img = apply_op(img, op, magnitude)
    return img


# ------------------------------------------------------------------------------- batched loading
def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 RGB PIL image -> uint8 CHW tensor (no float conversion; see `to_float_batch`)."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


def to_float_batch(
    batch: torch.Tensor, mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD
) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> normalized float32, identical to per-image `to_tensor` + `normalize`."""
    x = batch.to(torch.float32).div_(255)
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


class TrainTransform:
    """Training preprocessing: a fresh random-resized crop + RandAugment per call, then to-tensor and normalize.

    This is the `preprocess_train` of `create_model_and_transforms`. `seed` fixes one call's augmentation
    (the dataset readers pass one derived from (seed, epoch, sample key)); otherwise `generator` draws them
    (None: torch's global RNG).
    """

    seeded_per_sample = True

    def __init__(self, config: AugmentConfig | None = None, generator: Generator = None) -> None:
        self.config = config or AugmentConfig()
        self.generator = _as_generator(generator)

    def __call__(self, image: Image.Image, seed: int | None = None) -> torch.Tensor:
        img, _ = sample(image, self.generator if seed is None else seed, self.config)
        return to_float_batch(to_uint8_tensor(img)[None], self.config.mean, self.config.std)[0]

    def __repr__(self) -> str:
        return f"TrainTransform({self.config.to_dict()})"


class AugmentDataset(torch.utils.data.Dataset):
    """Images (PIL, paths or bytes) -> (uint8 CHW tensor, record), replaying `records[i]` when given, else
    sampling a fresh record. Use with `collate_augmented` in a multi-worker DataLoader.

    When sampling, `seed=None` uses torch's global RNG (DataLoader seeds each worker, so augmentations change
    every epoch); an int seed gives sample i a generator seeded with (seed, i): the same records whatever the
    worker count.
    """

    def __init__(
        self,
        images: Sequence[ImageSource],
        records: Sequence[Record] | None = None,
        config: AugmentConfig | None = None,
        seed: int | None = None,
    ) -> None:
        if records is not None and len(records) != len(images):
            raise DataError(f"got {len(images)} images but {len(records)} augmentation records")
        self.images = images
        self.records = records
        self.config = config or AugmentConfig()
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Record]:
        source = self.images[index]
        img = to_rgb(source) if isinstance(source, Image.Image) else load_image(source)
        cfg = self.config
        if self.records is not None:
            record = self.records[index]
            out = replay(img, record, cfg.size, cfg.interpolation)
        else:
            gen = None if self.seed is None else torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            out, record = sample(img, gen, cfg)
        return to_uint8_tensor(out), record


def collate_augmented(batch: Sequence[tuple[torch.Tensor, Record]]) -> tuple[torch.Tensor, list[Record]]:
    """Stack (uint8 image, record) pairs into a uint8 [N, 3, H, W] batch and the list of records."""
    return torch.stack([item[0] for item in batch]), [item[1] for item in batch]
