"""The 14 RandAugment image operations on Pillow images, indexed as `augment.OP_NAMES`, each taking its signed
magnitude: the pixel-level half of augmentation replay, kept apart from sampling and the record format."""

from __future__ import annotations

import math
from collections.abc import Callable

from PIL import Image, ImageEnhance, ImageOps


def _inverse_affine(center: tuple[float, float], translate: tuple[float, float], shear: tuple[float, float]):
    """Pillow AFFINE data (output -> input) for a shear/translation about `center`, as torchvision computes it
    (rotation 0, scale 1); the degree/radian round trip of the shear angle is kept on purpose."""
    rot = 0.0
    sx, sy = math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty)
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty)
    m[2] += cx
    m[5] += cy
    return m


def _affine(img: Image.Image, center=None, translate=(0.0, 0.0), shear=(0.0, 0.0)) -> Image.Image:
    if center is None:
        center = (img.width * 0.5, img.height * 0.5)
    matrix = _inverse_affine(center, translate, shear)
    return img.transform(img.size, Image.Transform.AFFINE, matrix, Image.Resampling.NEAREST, fillcolor=(0, 0, 0))


def _shear_x(img: Image.Image, m: float) -> Image.Image:
    return _affine(img, center=(0, 0), shear=(math.degrees(math.atan(m)), 0.0))


def _shear_y(img: Image.Image, m: float) -> Image.Image:
    return _affine(img, center=(0, 0), shear=(0.0, math.degrees(math.atan(m))))


def _translate_x(img: Image.Image, m: float) -> Image.Image:
    return _affine(img, translate=(int(m), 0))


def _translate_y(img: Image.Image, m: float) -> Image.Image:
    return _affine(img, translate=(0, int(m)))


def _rotate(img: Image.Image, m: float) -> Image.Image:
    return img.rotate(m, Image.Resampling.NEAREST, expand=False, fillcolor=(0, 0, 0))


def _enhance(kind: type) -> Callable[[Image.Image, float], Image.Image]:
    return lambda img, m: kind(img).enhance(1.0 + m)


_OPS: tuple[Callable[[Image.Image, float], Image.Image], ...] = (
    lambda img, m: img,
    _shear_x,
    _shear_y,
    _translate_x,
    _translate_y,
    _rotate,
    _enhance(ImageEnhance.Brightness),
    _enhance(ImageEnhance.Color),
    _enhance(ImageEnhance.Contrast),
    _enhance(ImageEnhance.Sharpness),
    lambda img, m: ImageOps.posterize(img, int(m)),
    lambda img, m: ImageOps.solarize(img, m),
    lambda img, m: ImageOps.autocontrast(img),
    lambda img, m: ImageOps.equalize(img),
)


def apply_op(img: Image.Image, op: int, magnitude: float) -> Image.Image:
    """Apply RandAugment op `op` (index into OP_NAMES) with its signed magnitude to an RGB image."""
    return _OPS[op](img, magnitude)
