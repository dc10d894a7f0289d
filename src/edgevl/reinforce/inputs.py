"""The input side: any reader spec split into numbered shards of image-caption samples with their source bytes.

Webdataset input keeps its own shards (input shard i -> output shard i, same keys, so the output can also be
joined back onto it). Map-style readers (tables, COCO/Karpathy, image folders) are cut into virtual shards of
`shard_size` consecutive samples. Every shard gets a fresh `SkipLog`, so skips are counted per output shard.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from edgevl.data.readers import SkipLog, open_dataset, parse_spec
from edgevl.data.readers.base import MapReader, Sample, read_one
from edgevl.data.readers.webdataset import IMAGE_EXTS, ShardedTarReader, SkipSample
from edgevl.errors import ConfigError

_SAFE_KEY = re.compile(r"[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*")


@dataclass
class InputSample:
    """One usable input sample: RGB image, its encoded bytes (stored as-is), the real caption, metadata."""

    key: str
    image: Image.Image
    image_bytes: bytes
    image_ext: str
    caption: str
    meta: dict[str, Any] = field(default_factory=dict)
    label: int | None = None


def member_key(key: str, shard: int, position: int) -> str:
    """A tar-safe sample key: the input key when it has no dots or odd characters, else `<shard>_<position>`."""
    return key if _SAFE_KEY.fullmatch(key) else f"{shard:08d}_{position:06d}"


def seed_for(seed: int, key: str, stream: str) -> int:
    """A 63-bit seed that depends only on (seed, stream, sample key)."""
    digest = hashlib.sha256(f"{seed}:{stream}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _encode_png(image: Image.Image) -> bytes:
    from edgevl.data.world.writers import encode_png

    return encode_png(image)


def _caption(sample: Sample) -> str:
    if sample.caption:
        return sample.caption
    if sample.captions:
        return sample.captions[0]
    if "class" in sample.meta:  # image folders: the class name stands in for a caption
        return f"a photo of a {sample.meta['class']}."
    raise SkipSample("missing_caption", "no caption")


class InputShards:
    """A reader spec seen as `len(self)` shards; `samples(i)` yields shard i's good samples in order."""

    def __init__(self, spec: str, shard_size: int = 1000, strict: bool = False) -> None:
        if parse_spec(spec).kind == "reinforced":
            raise ConfigError("reinforce needs raw image-caption data, not reinforced shards; give the image dataset")
        if shard_size < 1:
            raise ConfigError(f"--shard-size must be >= 1, got {shard_size}")
        self.spec, self.shard_size = spec, shard_size
        self.open_log = SkipLog(strict=strict)
        self.reader = open_dataset(spec, skip_log=self.open_log)
        if isinstance(self.reader, ShardedTarReader):
            self.count = len(self.reader.urls)
        elif isinstance(self.reader, MapReader):
            self.count = -(-len(self.reader) // shard_size)
        else:
            raise ConfigError(f"cannot split {type(self.reader).__name__} input into shards")
        if self.count == 0:
            raise ConfigError(f"input {spec!r} has no samples")

    def __len__(self) -> int:
        return self.count

    @property
    def is_tar(self) -> bool:
        """True for webdataset input, whose shards and keys the output keeps (so it can be joined back)."""
        return isinstance(self.reader, ShardedTarReader)

    def total_samples(self) -> int | None:
        """Number of input samples when known up front (map readers, or a webdataset with sizes.json)."""
        if isinstance(self.reader, MapReader):
            return len(self.reader)
        sizes = Path(self.reader.urls[0]).parent / "sizes.json"
        try:
            table = json.loads(sizes.read_text(encoding="utf-8"))
            return sum(int(table[Path(url).name]) for url in self.reader.urls)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def source(self, shard: int) -> str:
        """Where shard `shard` comes from: a tar URL or a row range of the table/annotations."""
        if isinstance(self.reader, ShardedTarReader):
            return self.reader.urls[shard]
        lo = shard * self.shard_size
        hi = min(lo + self.shard_size, len(self.reader))
        return f"{self.reader.source}[{lo}:{hi}]"

    def samples(self, shard: int, skip_log: SkipLog) -> Iterator[InputSample]:
        """Good samples of shard `shard`; bad ones are counted in `skip_log` (which the reader then uses)."""
        self.reader.skip_log = skip_log
        if isinstance(self.reader, ShardedTarReader):
            yield from self._tar_samples(shard, skip_log)
        else:
            yield from self._map_samples(shard, skip_log)

    def _tar_samples(self, shard: int, skip_log: SkipLog) -> Iterator[InputSample]:
        reader = self.reader

        def decode(raw: dict[str, Any]) -> InputSample:
            sample = reader.decode(raw)
            ext = next(e for e in IMAGE_EXTS if e in raw)
            meta = json.loads(raw["json"].decode("utf-8")) if "json" in raw else {}
            return InputSample(sample.key, sample.image, raw[ext], ext, _caption(sample), meta, sample.label)

        for raw in reader.shard_samples(shard):
            item = read_one(skip_log, str(raw.get("__key__")), str(raw.get("__url__")), lambda raw=raw: decode(raw))
            if item is not None:
                yield item

    def _map_samples(self, shard: int, skip_log: SkipLog) -> Iterator[InputSample]:
        reader = self.reader
        lo = shard * self.shard_size
        for index in range(lo, min(lo + self.shard_size, len(reader))):
            sample = reader[index]
            if sample is None:
                continue
            item = read_one(skip_log, sample.key, reader.source, lambda sample=sample: _from_map_sample(sample))
            if item is not None:
                yield item


def _from_map_sample(sample: Sample) -> InputSample:
    """An `InputSample` of a map reader's sample: the original file's bytes when it is a known image type."""
    caption = _caption(sample)
    path = sample.meta.get("path")
    ext = Path(path).suffix.lower().lstrip(".") if path else ""
    if ext in IMAGE_EXTS:
        data = Path(path).read_bytes()
    else:
        data, ext = _encode_png(sample.image), "png"
    meta = {k: v for k, v in sample.meta.items() if isinstance(v, (str, int, float, bool))}
    return InputSample(sample.key, sample.image, data, ext, caption, meta, sample.label)
