"""Dataset readers behind one *reader spec* string that every CLI accepts.

A spec is `[kind:]path[?option=value&...]`, e.g. `wds:/data/shard-{000..009}.tar`, `csv:/data/train.csv`,
`coco:/ann/captions_val2014.json?images=/coco/val2014`, `karpathy:/data/dataset_coco.json?split=test`,
`folder:/data/imagenet_val`, `reinforced:/dr/{0..9}.tar?images=wds:/datacomp/{0..9}.tar`. Without a kind
the path decides (`.tar` or braces -> wds, `.csv` -> csv, `captions_*.json` -> coco, a folder -> folder...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from torch.utils.data import Dataset

from edgevl.data.readers.base import (
    RankSampler,
    Sample,
    SkipLog,
    collate_samples,
    format_skip_summary,
    merge_skip_logs,
)
from edgevl.data.readers.coco import CocoCaptions, KarpathySplit
from edgevl.data.readers.imagefolder import ImageFolder
from edgevl.data.readers.reinforced import ReinforcedReader, ReinforcedSample
from edgevl.data.readers.table import CaptionTable
from edgevl.data.readers.webdataset import WebDatasetReader
from edgevl.errors import ConfigError

__all__ = [
    "CaptionTable",
    "CocoCaptions",
    "ImageFolder",
    "KarpathySplit",
    "RankSampler",
    "ReaderSpec",
    "ReinforcedReader",
    "ReinforcedSample",
    "Sample",
    "SkipLog",
    "WebDatasetReader",
    "collate_samples",
    "format_skip_summary",
    "merge_skip_logs",
    "open_dataset",
    "parse_spec",
]

READER_KINDS = ("wds", "csv", "tsv", "jsonl", "parquet", "coco", "karpathy", "folder", "reinforced")
# spec option -> (constructor argument, type); options every reader takes are in _COMMON
_COMMON = {"caption": ("caption_mode", str), "seed": ("seed", int), "alpha": ("alpha", str)}
_STREAM = {"shuffle": ("shuffle", bool), "buffer": ("shuffle_buffer", int)}
_TABLE = {
    "img_key": ("img_key", str),
    "caption_key": ("caption_key", str),
    "key": ("key_col", str),
    "sep": ("sep", str),
    "images": ("images", str),
}
_OPTIONS: dict[str, dict[str, tuple[str, type]]] = {
    "wds": {**_STREAM, "text": ("text_key", str), "label": ("label_key", str)},
    "csv": _TABLE,
    "tsv": _TABLE,
    "jsonl": _TABLE,
    "parquet": _TABLE,
    "coco": {"images": ("images", str)},
    "karpathy": {"images": ("images", str), "split": ("split", str)},
    "folder": {"classnames": ("classnames", str), "templates": ("templates", str)},
    "reinforced": {
        **_STREAM,
        "images": ("images", str),
        "join": ("join", str),
        "size": ("size", int),
        "interpolation": ("interpolation", str),
        "sequential": ("sequential", bool),
        "syn_key": ("syn_key_regex", str),
    },
}
_SEPARATORS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class ReaderSpec:
    """A parsed reader spec: format kind, path (or shard pattern) and the string options."""

    kind: str
    path: str
    options: dict[str, str]


def detect_kind(path: str) -> str:
    """Reader kind implied by a path: shard patterns, table suffixes, COCO/Karpathy names, folders."""
    name = os.path.basename(path.rstrip("/")).lower()
    if "{" in path or ".tar" in name or name.endswith(".tgz"):
        return "wds"
    for suffix in ("csv", "tsv", "jsonl", "parquet"):
        if name.endswith("." + suffix):
            return suffix
    if name.endswith(".json") and name.startswith("captions_"):
        return "coco"
    if name.endswith(".json") and name.startswith("dataset_"):
        return "karpathy"
    if os.path.isdir(path):
        return "folder"
    raise ConfigError(f"cannot tell the data format of {path!r}; prefix it with one of {READER_KINDS} and ':'")


def parse_spec(spec: str) -> ReaderSpec:
    """Split `[kind:]path[?k=v&...]` into its parts (values are URL-unquoted)."""
    head, _, query = spec.partition("?")
    kind, colon, rest = head.partition(":")
    if colon and kind in READER_KINDS:
        path = rest
    else:
        kind, path = "", head
    if not path:
        raise ConfigError(f"reader spec {spec!r} has no path")
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        name, eq, value = part.partition("=")
        if not eq:
            raise ConfigError(f"reader spec option {part!r} in {spec!r} is not name=value")
        options[name] = unquote(value)
    return ReaderSpec(kind or detect_kind(path), path, options)


def _convert(name: str, value: Any, kind: type) -> Any:
    if not isinstance(value, str) or kind is str:
        return _SEPARATORS.get(value, value) if name == "sep" else value
    if kind is bool:
        if value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"option {name}={value!r} is not a boolean (use true/false)")
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"option {name}={value!r} is not an {kind.__name__}") from None


def open_dataset(
    spec: str,
    *,
    transform: Any = None,
    tokenizer: Any = None,
    strict: bool = False,
    skip_log: SkipLog | None = None,
    skip_log_dir: str | os.PathLike | None = None,
    **options: Any,
) -> Dataset:
    """Open the dataset named by a reader spec.

    `options` are spec options given in code (`caption='random'`, `images=...`, `split='test'`, ...);
    options written in the spec itself take precedence. Skips go to `skip_log`, or to a new `SkipLog`
    that writes per-process JSONL files under `skip_log_dir`; `strict=True` raises `DataError` instead.
    """
    parsed = parse_spec(spec)
    allowed = {**_COMMON, **_OPTIONS[parsed.kind]}
    kwargs: dict[str, Any] = {}
    for name, value in {**options, **parsed.options}.items():
        if name not in allowed:
            raise ConfigError(f"unknown option {name!r} for {parsed.kind} data; known: {sorted(allowed)}")
        arg, kind = allowed[name]
        kwargs[arg] = _convert(name, value, kind)
    log = skip_log if skip_log is not None else SkipLog(skip_log_dir, strict=strict)
    common = {"transform": transform, "tokenizer": tokenizer, "skip_log": log, **kwargs}
    path = parsed.path
    if parsed.kind == "wds":
        return WebDatasetReader(path, **{**common, "text_key": kwargs.get("text_key", "txt") or None})
    if parsed.kind in ("csv", "tsv", "jsonl", "parquet"):
        return CaptionTable(path, fmt=parsed.kind, **common)
    if parsed.kind == "coco":
        return CocoCaptions(path, **common)
    if parsed.kind == "karpathy":
        return KarpathySplit(path, **common)
    if parsed.kind == "folder":
        return ImageFolder(Path(path), **common)
    images = kwargs.get("images")
    if images is not None:
        companion = parse_spec(images)
        if companion.kind != "wds" or companion.options:
            raise ConfigError(f"reinforced images must be a plain webdataset shard pattern, got {images!r}")
        common["images"] = companion.path
    return ReinforcedReader(path, **common)
