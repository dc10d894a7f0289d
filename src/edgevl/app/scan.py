"""Finding the image files under a folder and decoding one for the index, with a reason for every file skipped.

Decoding applies the EXIF orientation, takes the first frame of animations, and asks JPEG decoders for a reduced
image (Pillow's draft mode: libjpeg scales by 1/2, 1/4 or 1/8 while decoding) that is still at least the model's
input size, so a 12-megapixel photo costs little more than a small one. Every problem with one file goes through
`edgevl.data.readers.base.read_one` and comes back as a `Skip` with a kind and a reason, never as an exception.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from edgevl.data.files import IMAGE_SUFFIXES
from edgevl.data.readers.base import SkipLog, SkipSample, read_one
from edgevl.data.transforms import ImageTransform, PreprocessCfg, load_image
from edgevl.errors import ImageLoadError

HEIF_SUFFIXES = frozenset({".heic", ".heif"})
PHOTO_SUFFIXES = IMAGE_SUFFIXES | HEIF_SUFFIXES | {".avif"}
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112


def heif_available() -> bool:
    """Register the pillow-heif opener (the `heif` extra) once; False when it is not installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


@dataclass(frozen=True)
class FileStat:
    """An image file found by `walk`: absolute path, size in bytes and modification time in nanoseconds."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Skip:
    """A file that could not be indexed: `kind` groups the summary (empty, corrupt, ...), `reason` says why."""

    path: str
    size: int
    mtime_ns: int
    kind: str
    reason: str


@dataclass
class Decoded:
    """A decoded file: its hash and upright size, the model input, and the captioner's square crop (or None).

    `pixels` is None when the content hash equals `known_hash` (a touched but unchanged file)."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int = 0
    height: int = 0
    pixels: torch.Tensor | None = None
    caption_image: Image.Image | None = None


@dataclass(frozen=True)
class DecodeJob:
    """What a decoding worker needs (picklable, so process pools work too)."""

    file: FileStat
    preprocess: PreprocessCfg
    caption_preprocess: PreprocessCfg | None = None
    known_hash: str | None = None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def walk(root: str | os.PathLike) -> tuple[list[FileStat], list[Skip]]:
    """Image files under `root` by suffix, sorted by path, and the ones refused before reading (a symlink to a
    file outside `root`, a broken link, a FIFO). Hidden files and folders are left out, linked folders not entered."""
    base = Path(root).resolve()
    heif = heif_available()
    found, refused = [], []
    for folder, dirs, names in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            suffix = os.path.splitext(name)[1].lower()
            if name.startswith(".") or suffix not in PHOTO_SUFFIXES or (suffix in HEIF_SUFFIXES and not heif):
                continue
            path = Path(folder) / name
            try:
                st = path.stat()
            except OSError as exc:
                refused.append(Skip(str(path), 0, 0, "unreadable", f"broken link or unreadable ({exc.strerror})"))
                continue
            if path.is_symlink() and not _inside(path.resolve(), base):
                refused.append(Skip(str(path), st.st_size, st.st_mtime_ns, "outside_root",
                                    "symbolic link to a file outside the indexed folder"))
            elif not path.is_file():
                refused.append(Skip(str(path), 0, 0, "not_a_file", "not a regular file"))
            else:
                found.append(FileStat(str(path), st.st_size, st.st_mtime_ns))
    found.sort(key=lambda f: f.path)
    refused.sort(key=lambda s: s.path)
    return found, refused


def _upright_size(img: Image.Image) -> tuple[int, int]:
    width, height = img.size
    orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    return (height, width) if orientation in _ROTATED else (width, height)


def open_photo(data: bytes, name: str, min_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """(upright RGB image with its short side still >= `min_side` where the file allows, original upright size).

    Raises `SkipSample` (not_an_image, too_large, corrupt) for files that cannot be used."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            size = _upright_size(img)
            if img.format == "JPEG":
                img.draft("RGB", (min_side, min_side))
            img.load()
    except UnidentifiedImageError:
        raise SkipSample("not_an_image", "not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SkipSample("too_large", str(exc)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise SkipSample("corrupt", f"corrupt or truncated image ({type(exc).__name__}: {exc})") from None
    try:
        return load_image(img, name=name), size  # EXIF orientation and RGB conversion
    except ImageLoadError as exc:
        raise SkipSample("corrupt", exc.reason) from None


def _read(job: DecodeJob) -> Decoded:
    file = job.file
    try:
        data = Path(file.path).read_bytes()
    except FileNotFoundError:
        raise SkipSample("vanished", "deleted while indexing") from None
    except OSError as exc:
        raise SkipSample("unreadable", f"cannot read the file ({exc.strerror or exc})") from None
    if not data:
        raise SkipSample("empty", "file is empty (0 bytes)")
    if os.path.splitext(file.path)[1].lower() in HEIF_SUFFIXES:
        heif_available()  # a spawned decoding process registers the HEIF opener itself
    digest = hashlib.sha256(data).hexdigest()
    out = Decoded(file.path, file.size, file.mtime_ns, digest)
    if digest == job.known_hash:
        return out
    caption_size = job.caption_preprocess.size if job.caption_preprocess else 0
    img, (out.width, out.height) = open_photo(data, file.path, max(job.preprocess.size, caption_size))
    out.pixels = ImageTransform(job.preprocess)(img)
    if job.caption_preprocess is not None:
        out.caption_image = ImageTransform(job.caption_preprocess).geometric(img)
    return out


class _LastSkip(SkipLog):
    """A SkipLog that remembers the one skip of one decode call."""

    kind = reason = ""

    def skip(self, key: str, kind: str, reason: str, source: str = "") -> None:
        self.kind, self.reason = kind, reason


def decode(job: DecodeJob) -> Decoded | Skip:
    """Read, hash and decode one file; any problem with it (including ones nobody foresaw) becomes a `Skip`."""
    log = _LastSkip()
    out = read_one(log, job.file.path, "", lambda: _read(job))
    return out if out is not None else Skip(job.file.path, job.file.size, job.file.mtime_ns, log.kind, log.reason)


def decode_image(path: str, preprocess: PreprocessCfg) -> Decoded | Skip:
    """Decode one image outside an index run (a query image) the same way the index decodes its files."""
    st = os.stat(path)
    return decode(DecodeJob(FileStat(path, st.st_size, st.st_mtime_ns), preprocess))
