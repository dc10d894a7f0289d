"""Streaming reader for webdataset tar shards, sharded over DDP ranks x DataLoader workers.

URL opening (local paths, `pipe:`, http) comes from the `webdataset` library; tar reading and member grouping
are edgevl's own, so that one damaged sample is skipped and counted without losing its neighbours. The
module adds the deterministic epoch-seeded split, a shuffle buffer and the bad-data accounting: a corrupt or
truncated shard is logged once and reading goes on with the next shard.
"""

from __future__ import annotations

import json
import lzma
import os
import random
import re
import tarfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import braceexpand
from torch.utils.data import IterableDataset
from webdataset.gopen import gopen

from edgevl.data.readers.base import (
    Sample,
    SkipLog,
    SkipSample,
    Tokenizer,
    Transform,
    check_caption_mode,
    consumer,
    fill_captions,
    finish,
    open_image,
    read_one,
)
from edgevl.data.transforms import check_alpha
from edgevl.errors import ConfigError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
SHARD_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)
RawSample = dict[str, Any]
_META_MEMBER = re.compile(r"__[^/]*__($|/)")  # webdataset's reserved names, never sample data


def expand_urls(urls: str | os.PathLike | Sequence[str]) -> list[str]:
    """Shard list from a brace pattern (`shard-{000..009}.tar`), several joined by `::`, a path or a list."""
    if isinstance(urls, os.PathLike):
        urls = os.fspath(urls)
    parts = urls.split("::") if isinstance(urls, str) else [os.fspath(u) for u in urls]
    out = [url for part in parts for url in braceexpand.braceexpand(part.strip()) if url]
    if not out:
        raise ConfigError(f"no shards in {urls!r}")
    return out


def split_member_name(name: str) -> tuple[str, str] | None:
    """(key, suffix) of a tar member, split at the first dot of its base name (webdataset's rule); None if no dot."""
    folder, _, base = name.rpartition("/")
    stem, dot, suffix = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{folder}/{stem}" if folder else stem), suffix.lower()


class _CheckedTarInfo(tarfile.TarInfo):
    """A member header that must be followed by another header or by the zero block that ends an archive.

    `tarfile` takes a missing, partial or garbled header for the end of the archive, so a shard cut at a member
    boundary would look complete; here that is damage, as it is for every other cut.
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.EOFHeaderError:  # the zero block: a proper end
            raise
        except tarfile.HeaderError as exc:
            raise tarfile.ReadError(f"no end-of-archive block: the tar is cut or damaged ({exc})") from None


def _tar_members(stream: Any, problems: list[Exception]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the regular members of a tar stream; the first damage ends it and lands in `problems`."""
    try:
        with tarfile.open(fileobj=stream, mode="r|*", tarinfo=_CheckedTarInfo) as tar:
            for info in tar:
                if not info.isreg() or _META_MEMBER.match(info.name):
                    continue
                fh = tar.extractfile(info)
                data = fh.read() if fh is not None else b""
                if len(data) != info.size:
                    raise EOFError(f"member {info.name!r} is truncated")
                yield info.name, data
                tar.members = []  # a streamed tar keeps every header otherwise
    except SHARD_ERRORS as exc:
        problems.append(exc)


def read_shard(url: str, skip_log: SkipLog) -> Iterator[RawSample]:
    """Raw samples (`__key__`, `__url__` and one bytes value per member suffix) of one tar shard.

    Members are grouped by key while the key stays the same (the webdataset layout). A sample whose group
    holds the same suffix twice (`duplicate_member`) or whose key already occurred in this shard
    (`duplicate_key`) is skipped and counted, and reading goes on with the next sample. A shard that cannot be
    opened is a `missing_shard`; a truncated or otherwise damaged tar is logged once as `corrupt_shard` (every
    sample read before the damage is still yielded).
    """
    problems: list[Exception] = []
    try:
        stream = gopen(url)
    except SHARD_ERRORS as exc:
        skip_log.skip(url, "missing_shard", f"cannot open shard ({type(exc).__name__}: {exc})", url)
        return
    seen: set[str] = set()
    current: RawSample | None = None
    broken: str | None = None  # why the current group is unusable

    def finished() -> Iterator[RawSample]:
        if current is None:
            return
        key = current["__key__"]
        if broken:
            skip_log.skip(key, "duplicate_member", broken, url)
        elif key in seen:
            skip_log.skip(key, "duplicate_key", f"key {key!r} occurs again later in the shard", url)
        else:
            yield current
        seen.add(key)

    try:
        for name, data in _tar_members(stream, problems):
            parts = split_member_name(name)
            if parts is None:
                continue
            key, suffix = parts
            if current is None or key != current["__key__"]:
                yield from finished()
                current, broken = {"__key__": key, "__url__": url}, None
            if suffix in current:
                broken = broken or f"member {name!r} occurs twice in a row"
            current[suffix] = data
        yield from finished()
    finally:
        stream.close()
    if problems:
        exc = problems[0]
        detail = exc.args[0] if exc.args else exc
        skip_log.skip(url, "corrupt_shard", f"corrupt tar ({type(exc).__name__}: {detail})", url)


class ShardedTarReader(IterableDataset, ABC):
    """Iterable reader over tar shards: epoch-seeded shard order, split over consumers, shuffle buffer.

    With at least as many shards as consumers (ranks x workers) each consumer reads whole shards
    (`order[i::n]`); otherwise every consumer walks all shards and keeps every n-th sample. Either way each
    sample goes to exactly one consumer. Subclasses implement `decode(raw) -> Sample`.
    """

    def __init__(
        self,
        urls: str | os.PathLike | Sequence[str],
        *,
        transform: Transform | None = None,
        tokenizer: Tokenizer | None = None,
        caption_mode: str = "first",
        seed: int = 0,
        shuffle: bool = False,
        shuffle_buffer: int = 0,
        skip_log: SkipLog | None = None,
        alpha: str = "drop",
    ) -> None:
        self.urls = expand_urls(urls)
        self.transform = transform
        self.tokenizer = tokenizer
        self.caption_mode = check_caption_mode(caption_mode)
        self.seed = seed
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.skip_log = skip_log if skip_log is not None else SkipLog()
        self.alpha = check_alpha(alpha)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that seeds shard order, the shuffle buffer and random choices."""
        self.epoch = epoch

    def shard_samples(self, shard: int) -> Iterator[RawSample]:
        """Raw samples of shard number `shard` (overridden by readers that join several sources)."""
        return read_shard(self.urls[shard], self.skip_log)

    @abstractmethod
    def decode(self, raw: RawSample) -> Sample:
        """Turn one raw sample into a `Sample`; raise `SkipSample` when it is unusable."""

    def prepare(self, sample: Sample) -> Sample:
        """Apply the image transform and the tokenizer to a decoded sample."""
        return finish(sample, self.transform, self.tokenizer, self.seed, self.epoch)

    def shard_order(self) -> list[int]:
        """Shard indices in this epoch's order (the same in every consumer)."""
        order = list(range(len(self.urls)))
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}:shards").shuffle(order)
        return order

    def raw_share(self, index: int, count: int) -> Iterator[RawSample]:
        """Raw samples of consumer `index` out of `count`, before decoding and shuffling."""
        order = self.shard_order()
        if len(order) >= count:
            for shard in order[index::count]:
                yield from self.shard_samples(shard)
            return
        position = 0
        for shard in order:
            for raw in self.shard_samples(shard):
                if position % count == index:
                    yield raw
                position += 1

    def consumer_samples(self, index: int, count: int) -> Iterator[Sample]:
        """Decoded samples of consumer `index` out of `count` (what `__iter__` yields in that consumer)."""
        rng = random.Random(f"{self.seed}:{self.epoch}:buffer:{index}")
        buffer: list[Sample] = []
        for raw in self.raw_share(index, count):
            sample = read_one(self.skip_log, str(raw.get("__key__")), str(raw.get("__url__")),
                              lambda raw=raw: self.prepare(self.decode(raw)))
            if sample is None:
                continue
            if self.shuffle_buffer <= 1:
                yield sample
                continue
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                pick = rng.randrange(len(buffer))
                buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
                yield buffer.pop()
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[Sample]:
        return self.consumer_samples(*consumer())


class WebDatasetReader(ShardedTarReader):
    """Image-text (or image-label) samples from webdataset shards: `<key>.jpg|png|webp` + `<key>.txt`.

    `text_key=None` makes captions optional (classification shards); `label_key` (e.g. 'cls') reads an
    integer label; a `<key>.json` member goes to `meta`.
    """

    def __init__(
        self,
        urls: str | os.PathLike | Sequence[str],
        *,
        text_key: str | None = "txt",
        label_key: str | None = None,
        image_keys: Sequence[str] = IMAGE_EXTS,
        **kwargs: Any,
    ) -> None:
        super().__init__(urls, **kwargs)
        self.text_key = text_key
        self.label_key = label_key
        self.image_keys = tuple(image_keys)

    def decode(self, raw: RawSample) -> Sample:
        key, url = raw["__key__"], raw["__url__"]
        ext = next((e for e in self.image_keys if e in raw), None)
        if ext is None:
            raise SkipSample("incomplete_sample", f"no image member ({'/'.join(self.image_keys)})")
        sample = Sample(key=key, meta={"url": url})
        if self.text_key:
            fill_captions(sample, [raw.get(self.text_key)], self.caption_mode, self.seed, self.epoch)
        if self.label_key:
            sample.label = parse_label(raw.get(self.label_key))
        if "json" in raw:
            sample.meta.update(parse_json_member(raw["json"], "json"))
        sample.image = open_image(raw[ext], f"{url}:{key}.{ext}", self.alpha)
        return sample


def parse_label(raw: bytes | None) -> int:
    """Integer class label from a `cls` member."""
    if raw is None:
        raise SkipSample("incomplete_sample", "no label member")
    try:
        return int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise SkipSample("bad_metadata", f"label is not an integer: {raw[:20]!r}") from None


def parse_json_member(raw: bytes, name: str) -> dict:
    """A JSON-object member of a sample; anything else is a `bad_metadata` skip."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SkipSample("bad_metadata", f"{name} member is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise SkipSample("bad_metadata", f"{name} member is not a JSON object")
    return value
