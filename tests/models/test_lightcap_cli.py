"""`edgevl caption` CLI and the `edgevl.caption` API: smoke runs and bad input."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from PIL import Image

import edgevl
from edgevl.cli import build_parser, main
from edgevl.errors import EdgevlError, ImageLoadError


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    for i, color in enumerate(["red", "blue"]):
        Image.new("RGB", (120 + 30 * i, 90), color).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _huge_png(path):
    """A valid PNG header claiming 20000x20000 pixels (a decompression bomb for Pillow)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_cli_json_captions_for_files_and_folders(images, capsys):
    assert main(["caption", str(images), "--beam", "2", "--max-words", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [row["image"].rsplit("/", 1)[-1] for row in out] == ["img0.png", "img1.png"]  # the .txt is skipped
    assert all(isinstance(row["caption"], str) and 0 < len(row["caption"].split()) <= 5 for row in out)


def test_cli_sampling_and_text_output(images, capsys):
    assert main(["caption", str(images / "img0.png"), "--num-samples", "3", "--max-words", "4", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith(str(images / "img0.png") + "\t") for line in lines)


def test_cli_profile_without_images(capsys):
    assert main(["caption", "--profile", "--max-words", "3"]) == 0
    out = capsys.readouterr().out
    assert "backbone (frozen)" in out and "decoding, 3 tokens" in out and "total" in out


def test_cli_bad_input_is_one_line_error(images, tmp_path, capsys):
    assert main(["caption"]) == 2
    assert "no images to caption" in capsys.readouterr().err
    assert main(["caption", str(images / "notes.txt")]) == 3  # every input bad: nothing to caption
    err = capsys.readouterr().err
    assert "notes.txt" in err and "not a recognised image format" in err
    assert main(["caption", str(_huge_png(tmp_path / "huge.png"))]) == 3
    assert "image too large" in capsys.readouterr().err
    assert main(["caption", str(images / "img0.png"), "--model", "lightcap-nope"]) == 2
    assert "unknown LightCap model" in capsys.readouterr().err
    assert main(["caption", str(images / "img0.png"), "--beam", "0"]) == 2
    assert "beam size" in capsys.readouterr().err


def test_every_caption_flag_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["caption"]
    assert all(action.help for action in sub._actions)


def test_python_api(images):
    out = edgevl.caption(images / "img1.png", beam=1, max_words=6)
    assert len(out) == 1 and isinstance(out[0], str)
    samples = edgevl.caption([images / "img0.png", images / "img1.png"], num_samples=2, max_words=3, batch_size=1)
    assert [len(s) for s in samples] == [2, 2]
    with pytest.raises(EdgevlError, match="no images"):
        edgevl.caption([])
    with pytest.raises(ImageLoadError, match="no such file"):
        edgevl.caption([images / "missing.png"])


def test_cli_int8_decoder_captions(images, capsys):
    assert main(["caption", str(images / "img1.png"), "--int8", "--beam", "1", "--max-words", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 1 and 0 < len(out[0]["caption"].split()) <= 4
