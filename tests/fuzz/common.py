"""Shared pieces of the fuzz generators: the `Case` record, tiny images, damaged bytes, tar writing, payloads."""

from __future__ import annotations

import io
import os
import pickle
import random
import struct
import tarfile
import warnings
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


@dataclass
class Case:
    """One generated input and what must come out of it.

    `kind` says how `run_case` runs it: 'dataset' (open_dataset + iterate), 'weights' (load_state_dict) or
    'training' (load_training_checkpoint). For datasets, `good_keys` must each come out exactly once;
    `optional_keys` may come out (at most once; when absent they need a counted skip); `cut_keys` (samples a
    truncation cut through) may come out or vanish under the shard's own skip; nothing else may come out; at
    least `min_skips` skips (plus one per absent optional key) must be counted, including every kind in
    `skip_kinds`. `fatal_ok` allows a one-line `EdgevlError` for a dataset that is unreadable as a whole.
    For checkpoints, `expected` holds what must load (None: a one-line `CheckpointError` naming `error_path`
    is required). `marker` is a file a pickle payload would create: it must never appear.
    """

    kind: str
    spec_or_path: str
    good_keys: set[str]
    description: str
    optional_keys: set[str] = field(default_factory=set)
    cut_keys: set[str] = field(default_factory=set)
    min_skips: int = 0
    skip_kinds: set[str] = field(default_factory=set)
    fatal_ok: bool = False
    expected: Any = None
    error_path: str = ""
    marker: str = ""


class Verdicts:
    """Accumulates the expected outcome of each generated sample while a case is built."""

    def __init__(self) -> None:
        self.good: set[str] = set()
        self.optional: set[str] = set()
        self.bad = 0
        self.notes: list[str] = []

    def add(self, key: str, verdict: str, note: str) -> None:
        """Record sample `key` as 'good', 'optional', 'bad' (must be skipped and counted) or 'ignored'."""
        if verdict == "good":
            self.good.add(key)
        elif verdict == "optional":
            self.optional.add(key)
        elif verdict == "bad":
            self.bad += 1
        if not note.endswith(" good"):
            self.notes.append(note)

    def describe(self, head: str) -> str:
        """One-line description: the container plus the damage notes (deduplicated, in order)."""
        notes = list(dict.fromkeys(self.notes))
        return f"{head}; {len(self.good)} good; " + (", ".join(notes) if notes else "no damage")


# ------------------------------------------------------------------------------------------------ images
def pixels(rng: random.Random, size: tuple[int, int] = (8, 8), channels: int = 3) -> np.ndarray:
    """Random uint8 pixels (h, w, channels) from `rng`."""
    data = bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * channels))
    return np.frombuffer(data, dtype=np.uint8).reshape(size[1], size[0], channels)


def image_bytes(rng: random.Random, fmt: str = "PNG", mode: str = "RGB", size: tuple[int, int] = (8, 8)) -> bytes:
    """A small valid image of `mode` encoded as `fmt` (CMYK goes to JPEG, F to TIFF, as PNG cannot hold them)."""
    rgb = Image.fromarray(pixels(rng, size))
    if mode == "I;16":
        arr = (pixels(rng, size, 1)[..., 0].astype(np.uint16) * 257).astype(np.uint16)
        img = Image.fromarray(arr)
    elif mode == "F":
        img = Image.fromarray(pixels(rng, size, 1)[..., 0].astype(np.float32) / 255.0)
        fmt = "TIFF"
    elif mode == "P":
        img = rgb.quantize(8)
        if rng.random() < 0.5:
            img.info["transparency"] = 0
    else:
        img = rgb.convert(mode)
    if mode == "CMYK":
        fmt = "JPEG"
    buf = io.BytesIO()
    img.save(buf, fmt, **({"transparency": 0} if mode == "P" and "transparency" in img.info else {}))
    return buf.getvalue()


def png_chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def bomb_png(rng: random.Random) -> bytes:
    """A tiny PNG whose header declares a decompression-bomb size (over Pillow's warning or error limit)."""
    width, height = rng.choice([(20000, 20000), (10000, 10000), (1 << 30, 2), (65535, 65535), (100000, 1000)])
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * rng.randint(1, 64))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def random_bytes(rng: random.Random, low: int = 1, high: int = 400) -> bytes:
    """`low..high` random bytes."""
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(low, high)))


def pil_decodes(data: bytes) -> bool:
    """Whether plain Pillow fully decodes `data` to RGB (the oracle for randomly damaged images)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
            img.convert("RGB")
        return True
    except Exception:
        return False


def exif_image(rng: random.Random) -> tuple[bytes, str, str]:
    """An image with an EXIF orientation (any 16-bit value) or a garbage EXIF block."""
    img = Image.fromarray(pixels(rng, (rng.randint(1, 9), rng.randint(1, 9))))
    fmt = rng.choice(["JPEG", "PNG", "WEBP", "TIFF"])
    buf = io.BytesIO()
    if rng.random() < 0.5:
        exif = Image.Exif()
        exif[0x0112] = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 255, 65535])
        img.save(buf, fmt, exif=exif)
        return buf.getvalue(), "good", "EXIF orientation"
    head = rng.choice([b"Exif\x00\x00MM\x00*\x00\x00\x00\x08", b"Exif\x00\x00II*\x00\x08\x00\x00\x00", b""])
    fmt = "JPEG" if fmt == "TIFF" else fmt  # Pillow parses EXIF when writing TIFF: garbage cannot be written
    img.save(buf, fmt, exif=head + random_bytes(rng, 0, 80))
    return buf.getvalue(), "optional", "garbage EXIF"


def other_format(rng: random.Random) -> tuple[bytes, str, str]:
    """A valid image in a less common format or shape: WebP, animated GIF, BMP, TIFF, PPM, 1-pixel-wide."""
    fmt = rng.choice(["WEBP", "GIF", "BMP", "TIFF", "PPM", "PNG"])
    size = rng.choice([(1, 1), (1, 40), (40, 1), (8, 8)])
    frames = [Image.fromarray(pixels(rng, size)) for _ in range(rng.randint(1, 3))]
    buf = io.BytesIO()
    if fmt == "GIF" and len(frames) > 1:
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:])
    else:
        frames[0].save(buf, fmt)
    return buf.getvalue(), "good", f"{fmt} {size[0]}x{size[1]}"


def damaged_image(rng: random.Random) -> tuple[bytes, str, str]:
    """(bytes, verdict, note) of a randomly damaged or valid-but-unusual image."""
    choice = rng.choice(["zero", "trunc", "trunc", "random", "bomb", "mode", "mode", "textfile", "prefix", "exif",
                         "format"])
    if choice == "exif":
        return exif_image(rng)
    if choice == "format":
        return other_format(rng)
    if choice == "zero":
        return b"", "bad", "zero-byte image"
    if choice == "bomb":
        return bomb_png(rng), "bad", "bomb header"
    if choice == "textfile":
        return b"this is not an image\n", "bad", "text as image"
    if choice == "mode":
        mode = rng.choice(["L", "LA", "RGBA", "P", "I;16", "CMYK", "1", "F"])
        return image_bytes(rng, mode=mode), "good", f"mode {mode}"
    if choice == "random":
        data = random_bytes(rng)
    elif choice == "prefix":
        data = random_bytes(rng, 1, 16) + image_bytes(rng)
    else:
        full = image_bytes(rng, fmt=rng.choice(["PNG", "JPEG"]))
        data = full[: rng.randrange(len(full))]
    return data, ("optional" if pil_decodes(data) else "bad"), f"{choice} image"


# -------------------------------------------------------------------------------------------------- tars
Entry = tuple[str, bytes, str]  # (member name, data, type: 'file' | 'dir' | 'symlink' | 'hardlink')


def tar_bytes(entries: list[Entry]) -> tuple[bytes, list[int]]:
    """A tar of `entries` and, per entry, the offset where its data (or header, for non-files) ends."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
                info.linkname = "" if kind == "dir" else data.decode()
                tar.addfile(info)
    blob = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        ends = [m.offset_data + (m.size if m.isreg() else 0) for m in tar.getmembers()]
    if len(ends) != len(entries):
        raise AssertionError(f"tar holds {len(ends)} members for {len(entries)} entries")
    return blob, ends


# ------------------------------------------------------------------------------------------ pickle bombs
class _Payload:
    """Unpickling this would create `marker` (by `open` or by `os.system`)."""

    def __init__(self, marker: str, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self) -> tuple:
        if self.how == "system":
            return os.system, (f"touch '{self.marker}'",)
        return open, (self.marker, "w")


class _MarkerDict(OrderedDict):
    """An OrderedDict subclass pickled by reference; unpickling it would create the file named in its state."""

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).touch()


def pickle_payload(rng: random.Random, marker: str | Path, tensors: dict | None = None) -> bytes:
    """Bytes that execute code when unpickled without restrictions: torch.save zip or plain pickle."""
    import torch

    marker = str(marker)
    choice = rng.choice(["torch-open", "torch-system", "plain", "dict-subclass"])
    if choice == "dict-subclass":
        obj: Any = _MarkerDict(tensors or {})
        obj.marker = marker
    else:
        obj = {**(tensors or {}), "evil": _Payload(marker, "system" if choice == "torch-system" else "open")}
    if choice == "plain" or (choice == "dict-subclass" and rng.random() < 0.5):
        return pickle.dumps(obj, protocol=rng.choice([2, 4]))
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
