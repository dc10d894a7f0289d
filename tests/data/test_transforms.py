"""Image loading and inference preprocessing: odd modes and sizes, EXIF, bad files, exact numerics."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from edgevl.data.transforms import (
    OPENAI_MEAN,
    OPENAI_STD,
    ImageTransform,
    PreprocessCfg,
    center_crop,
    load_image,
    resize_shortest,
    to_tensor,
)
from edgevl.errors import ImageLoadError


def _rand_rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def _png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    "mode", ["L", "LA", "RGBA", "P", "PA", "CMYK", "1", "I;16", "I", "F", "YCbCr"]
)
def test_every_mode_becomes_rgb(mode):
    base = _rand_rgb(17, 9)
    if mode == "I;16":
        img = Image.fromarray(np.arange(17 * 9, dtype=np.uint16).reshape(9, 17) * 400)
    elif mode == "F":
        img = Image.fromarray(np.linspace(0, 1, 17 * 9, dtype=np.float32).reshape(9, 17), "F")
    elif mode == "PA":
        img = base.convert("P")
        img.info["transparency"] = 0
    else:
        img = base.convert(mode)
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (17, 9)


def test_sixteen_bit_is_scaled_not_clipped():
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    out = np.asarray(load_image(Image.fromarray(arr)))[0, :, 0]
    assert out.tolist() == [0, 128, 255]
    png16 = load_image(_png_bytes(Image.fromarray(arr)))
    assert np.asarray(png16)[0, :, 0].tolist() == [0, 128, 255]


def test_alpha_palette_png_roundtrip(tmp_path):
    img = _rand_rgb(8, 8).convert("P")
    path = tmp_path / "pal.png"
    img.save(path, transparency=3)
    assert load_image(path).mode == "RGB"


def test_exif_rotation_is_applied(tmp_path):
    img = _rand_rgb(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    assert load_image(path).size == (20, 40)
    assert load_image(path, exif_transpose=False).size == (40, 20)


@pytest.mark.parametrize("size", [(1, 1), (1, 900), (900, 1), (3, 2)])
@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
def test_extreme_sizes(size, mode):
    t = ImageTransform(PreprocessCfg(size=32, resize_mode=mode))
    x = t(_rand_rgb(*size))
    assert x.shape == (3, 32, 32) and torch.isfinite(x).all()


def test_shortest_resize_then_center_crop_is_exact():
    img = _rand_rgb(301, 157, seed=3)
    cfg = PreprocessCfg(size=64, mean=(0, 0, 0), std=(1, 1, 1), interpolation="bilinear")
    got = ImageTransform(cfg)(img)
    # Independent formula: PIL resize (short side -> 64, long side truncated), integer crop offsets rounded.
    new_w = int(64 * 301 / 157)
    resized = np.asarray(img.resize((new_w, 64), Image.Resampling.BILINEAR))
    left = int(round((new_w - 64) / 2.0))
    expected = torch.from_numpy(resized[:, left : left + 64].astype(np.float32) / 255.0).permute(2, 0, 1)
    assert torch.equal(got, expected)


def test_normalization_exact():
    img = _rand_rgb(64, 64, seed=5)
    got = ImageTransform(PreprocessCfg(size=64, mean=OPENAI_MEAN, std=OPENAI_STD))(img)
    raw = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
    mean = torch.tensor(OPENAI_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(3, 1, 1)
    assert torch.equal(got, (raw - mean) / std)


def test_to_tensor_matches_division():
    img = _rand_rgb(5, 7)
    assert torch.equal(to_tensor(img), torch.from_numpy(np.asarray(img) / np.float32(255)).permute(2, 0, 1))


def test_center_crop_pads_small_images():
    out = center_crop(_rand_rgb(10, 4), 8)
    assert out.size == (8, 8)
    arr = np.asarray(out)
    assert (arr[:2] == 0).all() and (arr[-2:] == 0).all()


def test_resize_shortest_keeps_aspect():
    assert resize_shortest(_rand_rgb(200, 100), 50).size == (100, 50)
    assert resize_shortest(_rand_rgb(100, 300), 50).size == (50, 150)


def test_longest_mode_pads_with_fill():
    t = ImageTransform(PreprocessCfg(size=32, resize_mode="longest", fill_color=0, mean=(0, 0, 0), std=(1, 1, 1)))
    x = t(Image.new("RGB", (64, 16), (255, 255, 255)))
    assert x[:, 0].max() == 0 and x[:, 16].min() == 1


def test_batch():
    t = ImageTransform(PreprocessCfg(size=16))
    assert t.batch([_rand_rgb(20, 30), _png_bytes(_rand_rgb(9, 9))]).shape == (2, 3, 16, 16)


def test_bad_config():
    with pytest.raises(ValueError, match="resize_mode"):
        PreprocessCfg(resize_mode="crop")
    with pytest.raises(ValueError, match="interpolation"):
        PreprocessCfg(interpolation="cubic")


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a recognised image format"),
        (None, "truncated"),
    ],
)
def test_bad_files_raise_one_error_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "broken.jpg"
    if content is None:
        content = _png_bytes(_rand_rgb(64, 64), "JPEG")[:300]
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=reason) as info:
        load_image(path)
    assert "broken.jpg" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_bytes_source_uses_given_name():
    with pytest.raises(ImageLoadError, match="shard-3/key-17"):
        load_image(b"\x89PNG\r\n\x1a\n garbage", name="shard-3/key-17")
