"""Materialize a world split as webdataset shards, a captions table, a class-per-folder image tree, or a
photo-library-like tree of nested album folders (JPEG, PNG, WebP, GIF, a few broken files) for `edgevl index`.

Output is byte-identical for the same arguments: PNGs are encoded here with fixed settings, tar members are
written here with fixed mtime/uid/gid/mode, and every file goes to a temporary name and is moved into place.
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import zlib
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from edgevl.data.world.sample import DEFAULT_NOISE, DEFAULT_SIZE, WorldSample, check_params, generate, samples
from edgevl.data.world.tasks import HEADLINE_TASK, ZeroShotTask, get_task
from edgevl.data.world.vocab import GRAMMAR_VERSION
from edgevl.errors import ConfigError, DataError
from edgevl.io import atomic_write, atomic_write_bytes, atomic_write_text
from edgevl.version import __version__

FORMATS = ("wds", "csv", "tsv", "jsonl", "parquet", "folder", "photos")
PHOTOS_TABLE = "photos.jsonl"
CAPTION_KINDS = ("noisy", "clean")
WORLD_MANIFEST = "world.json"
_PROGRESS_MIN = 2000  # show a progress bar from this many samples on
_TAR_BLOCK, _TAR_RECORD = 512, 10240


# -------------------------------------------------------------------------------------------- bytes
def encode_png(image: Image.Image) -> bytes:
    """Deterministic 8-bit RGB PNG (filter 0, zlib level 1, no metadata chunks): fast for small images."""
    pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    height, width = pixels.shape[:2]
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # each scanline starts with filter type 0
    rows[:, 1:] = pixels.reshape(height, -1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
        + chunk(b"IEND", b"")
    )


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True).encode("utf-8")


def _title(sample: WorldSample, caption: str) -> str:
    """The one caption a sample contributes as `txt`/`title`: the noisy one or its first clean caption."""
    return sample.noisy if caption == "noisy" else sample.captions[0]


# ------------------------------------------------------------------------------------ webdataset
def tar_member(name: str, data: bytes) -> bytes:
    """One POSIX ustar member (header + padded data) with fixed mode 0644, uid/gid 0, mtime 0, no owner names.

    Written by hand because tarfile's generic header code costs more than drawing the image.
    """
    encoded = name.encode("utf-8")
    if len(encoded) > 100:
        raise DataError(f"tar member name {name!r} is longer than 100 bytes")
    header = bytearray(_TAR_BLOCK)
    header[0 : len(encoded)] = encoded
    header[100:108] = b"0000644\0"
    header[108:116] = header[116:124] = b"0000000\0"
    header[124:136] = b"%011o\0" % len(data)
    header[136:148] = b"00000000000\0"
    header[148:156] = b" " * 8  # the checksum is computed with its own field as spaces
    header[156:157] = b"0"
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + data + b"\0" * (-len(data) % _TAR_BLOCK)


def _tar_end(written: int) -> bytes:
    """Two zero blocks, then zero padding to a whole 10240-byte record, as tar(1) and tarfile do."""
    end = written + 2 * _TAR_BLOCK
    return b"\0" * (2 * _TAR_BLOCK + (-end % _TAR_RECORD))


def _write_shard(job: dict[str, Any]) -> int:
    """Write one tar shard of samples [start, start+count); returns the sample count."""
    path = Path(job["path"])
    task = get_task(job["task"])

    def write(tmp: str) -> None:
        written = 0
        with open(tmp, "wb") as f:
            for s in samples(job["count"], job["split"], job["seed"], job["size"], job["noise"], job["start"]):
                for suffix, data in (
                    ("png", encode_png(s.image)),
                    ("txt", _title(s, job["caption"]).encode("utf-8")),
                    ("cls", str(task.label(s.labels)).encode("ascii")),
                    ("json", _json_bytes(s.to_json())),
                ):
                    written += f.write(tar_member(f"{s.key}.{suffix}", data))
            f.write(_tar_end(written))

    atomic_write(path, write)
    return job["count"]


def _write_webdataset(out: Path, params: dict[str, Any], shard_size: int, workers: int, bar: tqdm) -> dict:
    n = params["n"]
    jobs = [
        {**params, "path": str(out / f"{k:05d}.tar"), "start": params["start"] + lo,
         "count": min(shard_size, n - lo)}
        for k, lo in enumerate(range(0, n, shard_size))
    ]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for count in pool.map(_write_shard, jobs):
                bar.update(count)
    else:
        for job in jobs:
            bar.update(_write_shard(job))
    sizes = {Path(j["path"]).name: j["count"] for j in jobs}
    atomic_write_text(out / "sizes.json", json.dumps(sizes, indent=1) + "\n")
    atomic_write_text(out / "nshards.txt", f"{len(jobs)}\n")
    return {"shards": f"{{00000..{len(jobs) - 1:05d}}}.tar", "sizes": sizes}


# ---------------------------------------------------------------------------------------- table
def _table_rows(out: Path, params: dict[str, Any], task: ZeroShotTask, bar: tqdm) -> Iterable[dict]:
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for s in samples(params["n"], params["split"], params["seed"], params["size"], params["noise"],
                     params["start"]):
        atomic_write_bytes(image_dir / f"{s.key}.png", encode_png(s.image))
        bar.update(1)
        yield {
            "filepath": f"images/{s.key}.png",
            "title": _title(s, params["caption"]),
            "id": s.id,
            "label": task.label(s.labels),
            "captions": json.dumps(s.captions, ensure_ascii=False),
            "noisy": s.noisy,
            "labels": json.dumps(s.labels, ensure_ascii=False, sort_keys=True),
        }


def _write_table(out: Path, params: dict[str, Any], fmt: str, task: ZeroShotTask, bar: tqdm) -> dict:
    rows = list(_table_rows(out, params, task, bar))
    path = out / f"{params['split']}.{fmt}"
    if fmt in ("csv", "tsv"):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter="," if fmt == "csv" else "\t",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, buf.getvalue())
    elif fmt == "jsonl":
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    else:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError("--format parquet needs pyarrow: pip install 'edgevl[parquet]'") from None
        atomic_write(path, lambda tmp: pq.write_table(pa.Table.from_pylist(rows), tmp))
    return {"table": path.name, "columns": list(rows[0])}


# --------------------------------------------------------------------------------------- folder
def class_dir_name(index: int, classname: str) -> str:
    """'003_red_triangle': the index prefix keeps alphabetical order equal to class-index order."""
    return f"{index:03d}_{classname.replace(' ', '_')}"


def _write_folder(out: Path, params: dict[str, Any], task: ZeroShotTask, bar: tqdm) -> dict:
    dirs = [out / class_dir_name(i, c) for i, c in enumerate(task.classnames)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for s in samples(params["n"], params["split"], params["seed"], params["size"], params["noise"],
                     params["start"]):
        atomic_write_bytes(dirs[task.label(s.labels)] / f"{s.key}.png", encode_png(s.image))
        bar.update(1)
    return {"class_dirs": len(dirs)}


# --------------------------------------------------------------------------------------- photos
_ALBUM_SIZE = 50
_PLACES = ("beach", "garden", "city", "mountains", "party", "museum", "kitchen", "park")
_BROKEN = ("empty", "truncated", "not_an_image", "corrupt")
_EXIF_ORIENTATION = 0x0112


def _photo_name(index: int) -> tuple[str, str]:
    """(album folder, file stem) of photo `index`: '2021/03-party', 'IMG_00042'; albums of 50, one year per 4."""
    album = index // _ALBUM_SIZE
    return f"{2019 + album % 4}/{album:02d}-{_PLACES[album % len(_PLACES)]}", f"IMG_{index:05d}"


def encode_photo(image: Image.Image, index: int) -> tuple[str, bytes]:
    """(suffix, bytes) of photo `index`, deterministic: mostly JPEG (every 10th stored rotated with an EXIF
    orientation tag, so a viewer that ignores EXIF shows it sideways), every 3rd PNG, a few WebP and GIF."""
    buf = io.BytesIO()
    if index % _ALBUM_SIZE == 7:
        image.save(buf, format="WEBP", lossless=True, quality=100, method=0)
        return ".webp", buf.getvalue()
    if index % _ALBUM_SIZE == 13:
        image.save(buf, format="GIF")
        return ".gif", buf.getvalue()
    if index % 3 == 0:
        return ".png", encode_png(image)
    exif = Image.Exif()
    if index % 10 == 1:
        exif[_EXIF_ORIENTATION] = 6  # viewers rotate 90 degrees clockwise, so store it turned the other way
        image = image.transpose(Image.Transpose.ROTATE_90)
    image.save(buf, format="JPEG", quality=92, subsampling=0, exif=exif.tobytes())
    return ".jpg", buf.getvalue()


def broken_photo(kind: str, good: bytes) -> bytes:
    """Bytes of a deliberately broken image file from a good PNG: empty, cut in half, a text file, or a PNG
    whose compressed pixel data is scrambled (headers intact, so only decoding fails)."""
    if kind == "empty":
        return b""
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "not_an_image":
        return b"shopping list: eggs, milk, a red star\n"
    return good[:60] + bytes(b ^ 0x5A for b in good[60:-12]) + good[-12:]


def _write_photos(out: Path, params: dict[str, Any], bar: tqdm) -> dict:
    rows, broken = [], []
    for s in samples(params["n"], params["split"], params["seed"], params["size"], params["noise"],
                     params["start"]):
        album, stem = _photo_name(s.index)
        suffix, data = encode_photo(s.image, s.index)
        (out / album).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / album / f"{stem}{suffix}", data)
        rows.append({"path": f"{album}/{stem}{suffix}", "id": s.id, "captions": s.captions, "labels": s.labels})
        bar.update(1)
    for j in range(max(len(_BROKEN), params["n"] // 500)):  # a few broken files, spread over the albums
        kind = _BROKEN[j % len(_BROKEN)]
        album = _photo_name(params["start"] + j * _ALBUM_SIZE % params["n"])[0]
        name = f"{album}/broken_{j:02d}_{kind}" + (".jpg" if kind in ("empty", "not_an_image") else ".png")
        atomic_write_bytes(out / name, broken_photo(kind, encode_png(generate(j).image)))
        broken.append({"path": name, "kind": kind})
    atomic_write_text(out / PHOTOS_TABLE, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                                                  for r in rows))
    return {"table": PHOTOS_TABLE, "broken": broken}


# ----------------------------------------------------------------------------------------- entry
def make(
    out: str | os.PathLike,
    n: int,
    split: str = "train",
    seed: int = 0,
    fmt: str = "wds",
    size: int = DEFAULT_SIZE,
    noise: float = DEFAULT_NOISE,
    caption: str = "noisy",
    shard_size: int = 1000,
    task: str = HEADLINE_TASK,
    start: int = 0,
    workers: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Write samples start..start+n-1 of (split, seed) to `out` in `fmt`; returns the manifest (world.json).

    Every format also writes `classnames.txt` and `zeroshot_classification_templates.txt` for `task`.
    """
    check_params(split, seed, size, noise)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown world format {fmt!r}; choose from {list(FORMATS)}")
    if caption not in CAPTION_KINDS:
        raise ConfigError(f"unknown caption kind {caption!r}; choose from {list(CAPTION_KINDS)}")
    if n < 1 or start < 0:
        raise DataError(f"need n >= 1 and start >= 0 samples, got n={n}, start={start}")
    if shard_size < 1 or workers < 1:
        raise ConfigError(f"shard size and workers must be >= 1, got {shard_size} and {workers}")
    zs_task = get_task(task)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise DataError(f"world output {str(root)!r} exists and is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    params = {"n": n, "split": split, "seed": seed, "size": size, "noise": noise, "caption": caption,
              "task": task, "start": start}
    with tqdm(total=n, unit="img", desc=f"world {split}", disable=not progress or n < _PROGRESS_MIN) as bar:
        if fmt == "wds":
            extra = _write_webdataset(root, params, shard_size, workers, bar)
        elif fmt == "folder":
            extra = _write_folder(root, params, zs_task, bar)
        elif fmt == "photos":
            extra = _write_photos(root, params, bar)
        else:
            extra = _write_table(root, params, fmt, zs_task, bar)
    atomic_write_text(root / "classnames.txt", "".join(c + "\n" for c in zs_task.classnames))
    templates = "".join(t + "\n" for t in zs_task.templates)
    atomic_write_text(root / "zeroshot_classification_templates.txt", templates)
    manifest = {"generator": f"edgevl.data.world {__version__}", "grammar": GRAMMAR_VERSION, "format": fmt, **params,
                **extra}
    atomic_write_text(root / WORLD_MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest
