"""What every reader shares: the `Sample` record, skipped-sample accounting, worker/rank sharding, collation.

Bad data never stops a job. Every reader decodes a sample inside `read_one`, the one place where a problem of
any kind with one sample (a `SkipSample` a reader raised, or any other exception its data provoked) becomes
a `SkipLog` entry: the log counts it by kind (and appends it to a per-process JSONL file when given a
directory), and the sample is dropped while its neighbours go on. With `strict=True` the first problem
raises `DataError` naming the sample and the reason instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler, get_worker_info

from edgevl.data.transforms import check_alpha, load_image
from edgevl.errors import ConfigError, DataError, ImageLoadError

CAPTION_MODES = ("first", "random", "all")
SKIP_LOG_GLOB = "skips-*.jsonl"

T = TypeVar("T")
Transform = Callable[[Image.Image], Any]
Tokenizer = Callable[[str | list[str]], torch.Tensor]


@dataclass
class Sample:
    """One image-text (or image-label) example as every reader returns it.

    `image` is an RGB PIL image, or whatever `transform` made of it; `caption` is the selected caption and
    `captions` all of them; `tokens` is set when a tokenizer is given ([ctx], or [n, ctx] for mode 'all').
    """

    key: str
    image: Any = None
    caption: str | None = None
    captions: list[str] | None = None
    label: int | None = None
    tokens: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)


class SkipSample(Exception):
    """Raised inside a reader for one bad sample; the reader's loop turns it into a `SkipLog` entry."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(f"{kind}: {reason}")


def read_one(skip_log: SkipLog, key: str, source: str, decode: Callable[[], T]) -> T | None:
    """Run `decode()` for one sample; any problem with that sample becomes a counted skip and None.

    A `SkipSample` keeps its kind; any other exception (a new kind of damage no reader anticipated) is counted
    as `bad_sample` with its type and message, so it can neither crash a run nor drop the samples after it.
    Configuration errors and strict-mode `DataError`s are not about one sample and propagate.
    """
    try:
        return decode()
    except SkipSample as exc:
        skip_log.skip(key, exc.kind, exc.reason, source)
    except (ConfigError, DataError):
        raise
    except Exception as exc:  # the point: unknown per-sample damage is counted, not fatal
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}"
        skip_log.skip(key, "bad_sample", reason[:500], source)
    return None


def image_problem(exc: ImageLoadError) -> SkipSample:
    """Classify an `ImageLoadError` as a missing file or an unreadable image."""
    kind = "missing_file" if exc.reason == "no such file" else "bad_image"
    return SkipSample(kind, exc.reason)


def consumer() -> tuple[int, int]:
    """(index, count) of this data consumer among all DDP ranks x DataLoader workers.

    Rank and world size come from an initialised `torch.distributed`, else the `RANK`/`WORLD_SIZE`
    environment variables (torchrun sets them), else 0/1; the worker from `get_worker_info()`.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * workers + worker, world * workers


class SkipLog:
    """Counts skipped samples by kind; optionally appends one JSON line per skip to `log_dir`.

    Each process (DDP rank x DataLoader worker) writes its own `skips-r<rank>-w<worker>-p<pid>.jsonl`, so
    the files never interleave; `merge_skip_logs(log_dir)` sums them for the end-of-job summary. In a
    single process `counts` is already the whole story. `strict=True` raises `DataError` instead.
    """

    def __init__(self, log_dir: str | os.PathLike | None = None, strict: bool = False) -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.strict = strict
        self.counts: Counter[str] = Counter()
        self._path: Path | None = None
        self._pid: int | None = None

    def skip(self, key: str, kind: str, reason: str, source: str = "") -> None:
        """Record that sample `key` from `source` was dropped because of `reason` (category `kind`)."""
        where = f"{source}: " if source else ""
        if self.strict:
            raise DataError(f"{where}sample {key!r}: {reason} ({kind})")
        self.counts[kind] += 1
        if self.log_dir is not None:
            record = {"key": key, "kind": kind, "reason": reason, "source": source}
            with open(self._file(), "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _file(self) -> Path:
        if self._path is None or self._pid != os.getpid():
            assert self.log_dir is not None
            self.log_dir.mkdir(parents=True, exist_ok=True)
            rank = int(os.environ.get("RANK", 0))
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank = torch.distributed.get_rank()
            info = get_worker_info()
            worker = info.id if info is not None else "main"
            self._pid = os.getpid()
            self._path = self.log_dir / f"skips-r{rank}-w{worker}-p{self._pid}.jsonl"
        return self._path

    def __getstate__(self) -> dict:
        # a worker starts its own file and its own counts
        state = dict(self.__dict__)
        state["_path"] = None
        return state

    def summary(self) -> str:
        """One line such as 'skipped 3 samples: 2 bad_image, 1 empty_caption'."""
        return format_skip_summary(self.counts)


def format_skip_summary(counts: Counter[str] | dict[str, int]) -> str:
    """Human-readable one-line summary of skip counts by kind."""
    total = sum(counts.values())
    if not total:
        return "skipped 0 samples"
    parts = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"skipped {total} sample{'s' if total != 1 else ''}: {parts}"


def merge_skip_logs(log_dir: str | os.PathLike) -> Counter[str]:
    """Sum the per-process JSONL skip logs under `log_dir` into counts by kind."""
    counts: Counter[str] = Counter()
    for path in sorted(Path(log_dir).glob(SKIP_LOG_GLOB)):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    counts[json.loads(line)["kind"]] += 1
    return counts


def decode_caption(raw: Any) -> str:
    """UTF-8 caption text, stripped; raises `SkipSample` for missing, non-text, non-UTF-8 or empty captions."""
    if raw is None:
        raise SkipSample("missing_caption", "no caption")
    if not isinstance(raw, (bytes, str)):
        raise SkipSample("bad_caption_type", f"caption is a {type(raw).__name__}, not text")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SkipSample("bad_caption_encoding", f"caption is not valid UTF-8 ({exc.reason})") from None
    elif any("\udc80" <= ch <= "\udcff" for ch in raw):  # surrogate-escaped bytes from a table file
        raise SkipSample("bad_caption_encoding", "caption is not valid UTF-8")
    text = raw.strip()
    if not text:
        raise SkipSample("empty_caption", "caption is empty")
    return text


def check_caption_mode(mode: str) -> str:
    """Validate a caption selection mode ('first', 'random' or 'all')."""
    if mode not in CAPTION_MODES:
        raise ConfigError(f"unknown caption mode {mode!r}; choose from {CAPTION_MODES}")
    return mode


def sample_rng(seed: int, epoch: int, key: str) -> random.Random:
    """A generator that depends only on (seed, epoch, key): same choice in any worker, rank or run."""
    return random.Random(f"{seed}:{epoch}:{key}")


def fill_captions(sample: Sample, raw: Sequence[Any], mode: str, seed: int, epoch: int) -> None:
    """Decode every caption of `sample`, dropping bad ones (skip only if none is left), then select one.

    Mode 'first' takes the first good caption, 'random' one chosen by (seed, epoch, key), 'all' keeps the
    list and leaves `caption` unset.
    """
    good: list[str] = []
    problem: SkipSample | None = None
    for item in raw:
        try:
            good.append(decode_caption(item))
        except SkipSample as exc:
            problem = problem or exc
    if not good:
        raise problem or SkipSample("missing_caption", "no caption")
    sample.captions = good
    if mode == "first":
        sample.caption = good[0]
    elif mode == "random":
        sample.caption = good[sample_rng(seed, epoch, sample.key).randrange(len(good))]


def sample_seed(seed: int, epoch: int, key: str) -> int:
    """A 63-bit integer that depends only on (seed, epoch, key), for seeding a sample's augmentation."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def finish(
    sample: Sample, transform: Transform | None, tokenizer: Tokenizer | None, seed: int = 0, epoch: int = 0
) -> Sample:
    """Apply the image transform and the tokenizer in place and return the sample.

    A random transform that declares `seeded_per_sample = True` (e.g. `edgevl.data.augment.TrainTransform`) is
    called with `seed=sample_seed(seed, epoch, key)`: a sample gets the same augmentation in any worker, rank
    or resumed run, which keeps `--resume` bit-for-bit.
    """
    if transform is not None and sample.image is not None:
        if getattr(transform, "seeded_per_sample", False):
            sample.image = transform(sample.image, seed=sample_seed(seed, epoch, sample.key))
        else:
            sample.image = transform(sample.image)
    if tokenizer is not None:
        if sample.caption is not None:
            sample.tokens = tokenizer(sample.caption)[0]
        elif sample.captions:
            sample.tokens = tokenizer(sample.captions)
    return sample


def open_image(source: Any, key: str, alpha: str = "drop") -> Image.Image:
    """`load_image` (transparency handled as `alpha` says) with failures turned into `SkipSample`."""
    try:
        return load_image(source, name=key, alpha=alpha)
    except ImageLoadError as exc:
        raise image_problem(exc) from None


class MapReader(Dataset, ABC):
    """Map-style reader over an in-memory index; `__getitem__` returns None for a skipped sample.

    `alpha` says how transparent images become RGB (`edgevl.data.transforms.ALPHA_BACKGROUNDS`; the spec
    option `?alpha=white`).

    Subclasses fill `self.items` and implement `load(item, key) -> Sample` (raising `SkipSample`). Use
    `collate_samples` (drops the Nones) with a DataLoader, and `RankSampler` to split indices over ranks.
    """

    source: str = ""

    def __init__(
        self,
        *,
        transform: Transform | None = None,
        tokenizer: Tokenizer | None = None,
        caption_mode: str = "first",
        seed: int = 0,
        skip_log: SkipLog | None = None,
        alpha: str = "drop",
    ) -> None:
        self.transform = transform
        self.tokenizer = tokenizer
        self.caption_mode = check_caption_mode(caption_mode)
        self.seed = seed
        self.epoch = 0
        self.skip_log = skip_log if skip_log is not None else SkipLog()
        self.alpha = check_alpha(alpha)
        self.items: list[Any] = []

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that seeds random caption choice."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def key(self, index: int) -> str:
        """The key of item `index` (used in skip records)."""
        return str(index)

    @abstractmethod
    def load(self, index: int) -> Sample:
        """Read item `index`; raise `SkipSample` when it is unusable."""

    def __getitem__(self, index: int) -> Sample | None:
        if not 0 <= index < len(self.items):
            raise IndexError(f"index {index} out of range for {len(self.items)} samples")
        return read_one(self.skip_log, self.key(index), self.source, lambda: self.prepare(self.load(index)))

    def prepare(self, sample: Sample) -> Sample:
        """Apply the image transform and the tokenizer to a loaded sample."""
        return finish(sample, self.transform, self.tokenizer, self.seed, self.epoch)

    def __iter__(self) -> Iterator[Sample]:
        """Iterate over the good samples of this consumer's share (rank x worker) in index order."""
        index, count = consumer()
        for i in range(index, len(self.items), count):
            sample = self[i]
            if sample is not None:
                yield sample


class RankSampler(Sampler[int]):
    """Splits indices over DDP ranks without padding: no sample lost or duplicated (shards differ by <= 1).

    Like `DistributedSampler`, call `set_epoch` each epoch for a fresh (seeded) shuffle common to all ranks.
    """

    def __init__(
        self,
        length: int,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if rank is None or world_size is None:
            env_rank, env_world = consumer() if get_worker_info() is None else (0, 1)
            rank = env_rank if rank is None else rank
            world_size = env_world if world_size is None else world_size
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world size {world_size}")
        self.length, self.rank, self.world_size = length, rank, world_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that seeds the shuffle."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        order = list(range(self.length))
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        return iter(order[self.rank :: self.world_size])

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def collate_samples(batch: Sequence[Sample | None]) -> dict[str, Any]:
    """Batch samples into a dict: tensors of equal shape are stacked, everything else stays a list.

    None entries (skipped samples of map-style readers) are dropped; fields that are None in every sample
    are left out.
    """
    samples = [s for s in batch if s is not None]
    out: dict[str, Any] = {}
    for f in fields(samples[0]) if samples else ():
        values = [getattr(s, f.name) for s in samples]
        if any(v is not None for v in values):
            out[f.name] = _stack(values)
    return out


def _stack(values: list[Any]) -> Any:
    if all(isinstance(v, torch.Tensor) for v in values) and len({v.shape for v in values}) == 1:
        return torch.stack(values)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return torch.tensor(values)
    return values
