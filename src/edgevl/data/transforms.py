"""Image loading and inference preprocessing on Pillow + torch (no torchvision).

The numerics follow the reference pipeline exactly on uint8 inputs: Pillow resize, integer center crop,
`uint8 / 255` to float32, then `(x - mean) / std`. Every decoding problem becomes one `ImageLoadError`
that names the file.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from edgevl.errors import ConfigError, ImageLoadError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
NO_NORM_MEAN = (0.0, 0.0, 0.0)
NO_NORM_STD = (1.0, 1.0, 1.0)

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
RESIZE_MODES = ("shortest", "longest", "squash")
# How images with transparency become RGB: "drop" is Pillow's `convert("RGB")` (the official open_clip /
# MobileCLIP preprocessing: transparent pixels show whatever colour they store), the others composite the
# image onto that background colour. docs/data.md explains the choice of default.
ALPHA_BACKGROUNDS: dict[str, tuple[int, int, int] | None] = {
    "drop": None,
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "PA")

ImageSource = str | os.PathLike | bytes | BinaryIO | Image.Image


def resampling(name: str) -> Image.Resampling:
    """Pillow resampling filter for an interpolation name ('bilinear', 'bicubic', ...)."""
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; choose from {sorted(INTERPOLATIONS)}") from None


# ------------------------------------------------------------------------------------------ loading
def check_alpha(alpha: str) -> str:
    """Validate an alpha handling name (`ALPHA_BACKGROUNDS`)."""
    if alpha not in ALPHA_BACKGROUNDS:
        raise ConfigError(f"unknown alpha={alpha!r} (how transparent images become RGB); "
                          f"choose from {list(ALPHA_BACKGROUNDS)}")
    return alpha


def has_alpha(img: Image.Image) -> bool:
    """Whether the image has an alpha channel or a transparent colour/palette entry."""
    return img.mode in _ALPHA_MODES or (img.mode in ("P", "L", "RGB") and "transparency" in img.info)


def to_rgb(img: Image.Image, alpha: str = "drop") -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    16/32-bit integer modes are scaled to 8 bits (Pillow's own conversion would clip them), float images are
    taken as [0, 1], and palette images with transparency go through RGBA first so Pillow does not warn.
    Transparency is dropped (`alpha="drop"`) or composited onto a background colour (`"white"`, ...).
    """
    background = ALPHA_BACKGROUNDS[check_alpha(alpha)]
    if background is not None and has_alpha(img):
        canvas = Image.new("RGBA", img.size, (*background, 255))
        return Image.alpha_composite(canvas, img.convert("RGBA")).convert("RGB")
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = np.clip(np.rint(np.nan_to_num(arr) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ValueError(f"unsupported image mode {mode!r}: {exc}") from exc


# A transparent region hides content when its stored colour is flat (95 % of it within _FLAT of the median)
# and at least _HIDDEN_SHARE of the opaque pixels are within _NEAR of that colour. Regions under
# _MIN_CLEAR of the image are ignored.
_MIN_CLEAR, _FLAT, _NEAR, _HIDDEN_SHARE = 0.01, 24, 40, 0.5


def alpha_risk(source: str | os.PathLike | Image.Image) -> str | None:
    """What dropping alpha does to an image: None (no transparent region), "visible" (content stays visible)
    or "hidden" (the colour stored under the transparent pixels matches most of the visible content)."""
    if isinstance(source, (str, os.PathLike)):
        with Image.open(source) as img:  # lazy: only images with transparency are decoded
            return alpha_risk(img)
    img = source
    if not has_alpha(img):
        return None
    rgba = np.asarray(img.convert("RGBA"), dtype=np.int16)
    clear, opaque = rgba[..., 3] == 0, rgba[..., 3] >= 128
    if clear.mean() < _MIN_CLEAR:
        return None
    stored = rgba[..., :3][clear]
    colour = np.median(stored, axis=0)
    if np.percentile(np.abs(stored - colour).max(axis=1), 95) > _FLAT:
        return "visible"  # not a flat mask: dropping alpha shows varied stored content
    if not opaque.any():
        return "hidden"
    near = np.abs(rgba[..., :3][opaque] - colour).max(axis=1) <= _NEAR
    return "hidden" if near.mean() >= _HIDDEN_SHARE else "visible"


def _describe(source: ImageSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return getattr(source, "name", None) or f"<{type(source).__name__}>"


def load_image(
    source: ImageSource, *, name: str | None = None, exif_transpose: bool = True, alpha: str = "drop"
) -> Image.Image:
    """Decode an image fully and return it as 8-bit RGB.

    `source` is a path, raw bytes, a binary file object or a PIL image; `name` is used in error messages
    (e.g. the key of a tar member). EXIF orientation is applied unless `exif_transpose=False`; `alpha` says how
    transparency becomes RGB (`to_rgb`). Any failure (missing, empty, truncated, corrupt, unsupported,
    decompression bomb) raises `ImageLoadError`.
    """
    check_alpha(alpha)
    label = _describe(source, name)
    try:
        if isinstance(source, Image.Image):
            img = source
        else:
            if isinstance(source, (str, os.PathLike)):
                path = Path(source)
                if not path.is_file():
                    raise ImageLoadError(label, "no such file")
                if path.stat().st_size == 0:
                    raise ImageLoadError(label, "file is empty")
                fp: BinaryIO = open(path, "rb")  # closed below
            elif isinstance(source, bytes):
                if not source:
                    raise ImageLoadError(label, "file is empty")
                fp = io.BytesIO(source)
            else:
                fp = source
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(fp)
                img.load()
            if fp is not source:
                fp.close()
        if exif_transpose:
            img = ImageOps.exif_transpose(img)
        return to_rgb(img, alpha)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(label, f"image too large ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(label, "not a recognised image format") from exc
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise ImageLoadError(label, f"corrupt or truncated image ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------------------------- geometric ops
def resize_shortest(img: Image.Image, size: int, interpolation: str = "bicubic") -> Image.Image:
    """Resize so the shorter side equals `size`, keeping the aspect ratio (long side truncated to int)."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return img
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    return img.resize((new_w, new_h), resampling(interpolation))


def resize_longest(img: Image.Image, size: int, interpolation: str = "bicubic") -> Image.Image:
    """Resize so the longer side equals `size`, keeping the aspect ratio (sides rounded)."""
    w, h = img.size
    ratio = max(w / size, h / size)
    new_w, new_h = max(1, round(w / ratio)), max(1, round(h / ratio))
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), resampling(interpolation))


def center_crop(img: Image.Image, size: int | tuple[int, int], fill: int = 0) -> Image.Image:
    """Center-crop to `size` (h, w), padding with `fill` first where the image is smaller."""
    ch, cw = (size, size) if isinstance(size, int) else size
    w, h = img.size
    if w < cw or h < ch:
        left, top = max(0, (cw - w) // 2), max(0, (ch - h) // 2)
        canvas = Image.new(img.mode, (max(w, cw), max(h, ch)), (fill,) * len(img.getbands()))
        canvas.paste(img, (left, top))
        img, (w, h) = canvas, canvas.size
        if (w, h) == (cw, ch):
            return img
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return img.crop((left, top, left + cw, top + ch))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 HWC RGB image -> float32 CHW tensor in [0, 1] (exactly `uint8 / 255`)."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32).div(255)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel; identity (no copy) for mean 0 / std 1."""
    if tuple(mean) == NO_NORM_MEAN and tuple(std) == NO_NORM_STD:
        return x
    shape = (-1, 1, 1)
    m = torch.as_tensor(mean, dtype=x.dtype).view(shape)
    s = torch.as_tensor(std, dtype=x.dtype).view(shape)
    return x.sub(m).div(s)


# ----------------------------------------------------------------------------------- pipelines
@dataclass(frozen=True)
class PreprocessCfg:
    """How a model wants its images: size, resize mode, interpolation and normalization."""

    size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize_mode {self.resize_mode!r}; choose from {RESIZE_MODES}")
        resampling(self.interpolation)
        if self.size < 1:
            raise ValueError(f"image size must be positive, got {self.size}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


class ImageTransform:
    """Inference preprocessing: PIL (or path/bytes) -> normalized float32 CHW tensor."""

    def __init__(self, cfg: PreprocessCfg) -> None:
        self.cfg = cfg

    def geometric(self, img: Image.Image) -> Image.Image:
        """Resize + crop/pad to the model's square input, still a uint8 PIL image."""
        c = self.cfg
        if c.resize_mode == "shortest":
            return center_crop(resize_shortest(img, c.size, c.interpolation), c.size)
        if c.resize_mode == "longest":
            return center_crop(resize_longest(img, c.size, c.interpolation), c.size, fill=c.fill_color)
        return img.resize((c.size, c.size), resampling(c.interpolation))

    def __call__(self, image: ImageSource) -> torch.Tensor:
        img = image if isinstance(image, Image.Image) and image.mode == "RGB" else load_image(image)
        return normalize(to_tensor(self.geometric(img)), self.cfg.mean, self.cfg.std)

    def batch(self, images: Sequence[ImageSource]) -> torch.Tensor:
        """Preprocess several images into one [N, 3, size, size] tensor."""
        return torch.stack([self(im) for im in images])

    def __repr__(self) -> str:
        return f"ImageTransform({self.cfg.to_dict()})"
