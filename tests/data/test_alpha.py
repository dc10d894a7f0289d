"""Transparent images: the default drops alpha exactly as Pillow's convert("RGB") (official preprocessing),
`alpha=white|black|gray` composites onto a background, and data-check counts images whose content vanishes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgevl.cli import main
from edgevl.data.readers import open_dataset
from edgevl.data.transforms import ALPHA_BACKGROUNDS, alpha_risk, load_image
from edgevl.errors import ConfigError


def icon(colour, size: int = 16, stored=(0, 0, 0)) -> Image.Image:
    """A centred opaque square of `colour` on fully transparent pixels that store the colour `stored`."""
    arr = np.zeros((size, size, 4), np.uint8)
    arr[..., :3] = stored
    arr[4:12, 4:12] = (*colour, 255)
    return Image.fromarray(arr, "RGBA")


def test_default_drops_alpha_like_convert_rgb():
    for img in (icon((0, 0, 0)), icon((200, 30, 30)).convert("LA"), icon((0, 90, 0)).convert("PA")):
        got = np.asarray(load_image(img))
        assert np.array_equal(got, np.asarray(img.convert("RGB")))
    assert np.asarray(load_image(icon((0, 0, 0))))[0, 0].tolist() == [0, 0, 0]  # the black shape vanishes


@pytest.mark.parametrize("alpha", ["white", "black", "gray"])
def test_background_composite(alpha):
    arr = np.asarray(icon((10, 200, 30))).copy()
    arr[0, 1] = (250, 0, 0, 128)  # half transparent red
    out = np.asarray(load_image(Image.fromarray(arr, "RGBA"), alpha=alpha)).astype(int)
    background = np.array(ALPHA_BACKGROUNDS[alpha])
    assert out[0, 0].tolist() == background.tolist()
    assert out[8, 8].tolist() == [10, 200, 30]
    expected = (np.array([250, 0, 0]) * 128 + background * 127) / 255
    assert np.abs(out[0, 1] - expected).max() <= 1


def test_palette_and_colour_key_transparency_composite():
    pal = icon((0, 0, 0)).convert("RGB").convert("P")
    pal.info["transparency"] = pal.getpixel((0, 0))
    assert np.asarray(load_image(pal, alpha="white"))[0, 0].tolist() == [255, 255, 255]
    keyed = Image.new("RGB", (4, 4), (7, 7, 7))
    keyed.info["transparency"] = (7, 7, 7)
    assert np.asarray(load_image(keyed, alpha="gray"))[0, 0].tolist() == [128, 128, 128]
    assert np.asarray(load_image(keyed))[0, 0].tolist() == [7, 7, 7]


def test_unknown_alpha_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown alpha='pink'"):
        load_image(icon((0, 0, 0)), alpha="pink")
    (tmp_path / "a").mkdir()
    icon((0, 0, 0)).save(tmp_path / "a" / "0.png")
    with pytest.raises(ConfigError, match="unknown alpha='pink'"):
        open_dataset(f"folder:{tmp_path}?alpha=pink")


def test_alpha_risk():
    assert alpha_risk(icon((0, 0, 0))) == "hidden"
    assert alpha_risk(icon((20, 20, 20), stored=(0, 0, 0))) == "hidden"
    assert alpha_risk(icon((250, 250, 250))) == "visible"
    assert alpha_risk(icon((250, 250, 250), stored=(255, 255, 255))) == "hidden"
    assert alpha_risk(icon((0, 0, 0)).convert("RGB")) is None
    noisy = np.asarray(icon((0, 0, 0))).copy()
    noisy[..., :3] = np.random.default_rng(0).integers(0, 256, (16, 16, 3))  # a cut-out photo keeps its pixels
    noisy[4:12, 4:12, 3] = 255
    assert alpha_risk(Image.fromarray(noisy, "RGBA")) == "visible"
    nearly_opaque = np.asarray(icon((0, 0, 0), size=16)).copy()
    nearly_opaque[..., 3] = 255
    nearly_opaque[0, 0, 3] = 0  # 1 of 256 pixels
    assert alpha_risk(Image.fromarray(nearly_opaque, "RGBA")) is None


@pytest.fixture
def clipart(tmp_path):
    (tmp_path / "star").mkdir()
    (tmp_path / "sun").mkdir()
    icon((0, 0, 0)).save(tmp_path / "star" / "0.png")
    icon((10, 10, 10)).save(tmp_path / "star" / "1.png")
    icon((250, 200, 0)).save(tmp_path / "sun" / "0.png")
    Image.new("RGB", (16, 16), (0, 0, 0)).save(tmp_path / "sun" / "1.png")
    return tmp_path


def test_folder_reader_alpha_option(clipart):
    dropped = [np.asarray(s.image)[0, 0].tolist() for s in open_dataset(f"folder:{clipart}")]
    white = [np.asarray(s.image)[0, 0].tolist() for s in open_dataset(f"folder:{clipart}?alpha=white")]
    assert dropped == [[0, 0, 0]] * 4
    assert white == [[255, 255, 255]] * 3 + [[0, 0, 0]]  # the opaque RGB image is unchanged


def test_data_check_counts_hidden_content(clipart, capsys):
    assert main(["data-check", f"folder:{clipart}"]) == 0
    captured = capsys.readouterr()
    assert "transparency: 3 of 4 images have transparent pixels" in captured.out
    assert "in 2 the stored colour" in captured.out
    assert "warning: 2 of 4 images lose their content" in captured.err and "?alpha=white" in captured.err
    assert main(["data-check", f"folder:{clipart}?alpha=white"]) == 0
    captured = capsys.readouterr()
    assert "transparency" not in captured.out and "warning" not in captured.err
    assert "alpha=white" in captured.out.splitlines()[0]


def test_every_reader_takes_the_alpha_option(tmp_path):
    """A black square on transparent black: dropped alpha shows an all-black image, alpha=white shows the square."""
    import io
    import tarfile

    from edgevl.data.readers import open_dataset

    icon = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    icon.paste((0, 0, 0, 255), (2, 2, 6, 6))
    icon.save(tmp_path / "icon.png")
    (tmp_path / "t.csv").write_text("filepath,title\nicon.png,a black square\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("icon.png", (tmp_path / "icon.png").read_bytes()), ("icon.txt", b"a black square")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "s.tar").write_bytes(buf.getvalue())
    for spec in (f"csv:{tmp_path}/t.csv", f"wds:{tmp_path}/s.tar"):
        dropped = next(iter(open_dataset(spec))).image
        white = next(iter(open_dataset(f"{spec}?alpha=white"))).image
        assert dropped.getextrema() == ((0, 0),) * 3, spec
        assert white.getpixel((0, 0)) == (255, 255, 255) and white.getpixel((3, 3)) == (0, 0, 0), spec
