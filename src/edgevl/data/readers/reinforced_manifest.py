"""`manifest.json` of a reinforced dataset: the one type that reads, checks and writes it (`ReinforcedManifest`).

Two forms exist. `edgevl reinforce run` writes the full one (`"format": "edgevl-reinforced/1"`, schema in
docs/reinforcement.md) through `edgevl.reinforce.manifest.build_manifest`. Next to other DataCompDR-layout
shards a user writes the minimal one, `{"teachers": [{"name", "embed_dim", "logit_scale"}, ...]}`, optionally
with `"num_syn_captions": 0` for teacher-only data. Both name the teachers in the column order of the stored
embeddings. Keys other than those of the full form are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgevl.errors import ConfigError
from edgevl.io import atomic_write_text
from edgevl.run_layout import REINFORCED_MANIFEST

FORMAT = "edgevl-reinforced/1"
SIZES = "sizes.json"  # the webdataset `{shard: samples}` file written beside the manifest
KEY_ORDER = ("format", "edgevl_version", "source", "teachers", "captioners", "augmentation", "num_augs",
             "num_syn_captions", "seed", "compute_precision", "embeddings", "images", "members", "settings", "shards",
             "totals")


def _typed(where: str, key: str, value: Any, kind: type) -> Any:
    """`value` if it is a `kind` (a bool does not count as an int), else a ConfigError naming `where` and `key`."""
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")


@dataclass(frozen=True)
class TeacherRecord:
    """One teacher of a reinforced dataset: its block of `embed_dim` embedding columns and the logit scale of its
    distillation term. `entry` is the whole entry as written (model, weights, image size, normalization, ...)."""

    name: str
    embed_dim: int
    logit_scale: float
    entry: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, entry: Any, where: str) -> TeacherRecord:
        """Parse one `teachers` entry; ConfigError naming `where` when a field is missing or not positive."""
        try:
            teacher = cls(str(entry["name"]), int(entry["embed_dim"]), float(entry["logit_scale"]), dict(entry))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where} needs name, embed_dim and logit_scale ({exc!r})") from None
        if teacher.embed_dim <= 0 or teacher.logit_scale <= 0:
            raise ConfigError(f"{where} ({teacher.name!r}) has non-positive embed_dim or logit_scale")
        return teacher

    def to_dict(self) -> dict[str, Any]:
        return {**self.entry, "name": self.name, "embed_dim": self.embed_dim, "logit_scale": self.logit_scale}


@dataclass(frozen=True)
class ShardRecord:
    """One output shard: its file name, the input it came from, samples written, skips by kind, size and hash."""

    name: str
    source: str
    samples: int
    skipped: dict[str, int]
    bytes: int
    sha256: str

    @classmethod
    def from_dict(cls, entry: Any, where: str) -> ShardRecord:
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be an object, got {entry!r}")
        missing = [f.name for f in fields(cls) if f.name not in entry]
        if missing:
            raise ConfigError(f"{where} lacks {missing}")
        types = {"name": str, "source": str, "samples": int, "skipped": dict, "bytes": int, "sha256": str}
        return cls(**{key: _typed(where, key, entry[key], kind) for key, kind in types.items()})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ReinforcedManifest:
    """A reinforced dataset's manifest. Only `teachers` is required (the minimal form); a full edgevl manifest
    (`format` == FORMAT) has every field, checked when read. `captioners` None: not recorded (the minimal form, or
    a manifest written before several captioners were possible). The descriptive blocks stay JSON objects."""

    teachers: tuple[TeacherRecord, ...]
    num_syn_captions: int | None = None
    format: str | None = None
    edgevl_version: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    captioners: tuple[dict[str, Any], ...] | None = None
    augmentation: dict[str, Any] = field(default_factory=dict)
    num_augs: int | None = None
    seed: int | None = None
    compute_precision: str | None = None
    embeddings: dict[str, Any] = field(default_factory=dict)
    images: str | None = None
    members: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    shards: tuple[ShardRecord, ...] = ()
    totals: dict[str, Any] = field(default_factory=dict)

    @property
    def is_full(self) -> bool:
        """Written by `edgevl reinforce run` (every field present), not a hand-written minimal manifest."""
        return self.format == FORMAT

    @property
    def stores_synthetic_captions(self) -> bool:
        """False for teacher-only data (`num_syn_captions` 0); a manifest that does not say has some."""
        return self.num_syn_captions != 0

    @property
    def synthetic_keys(self) -> list[str]:
        """The `syn.json` keys of the captioners in stored order (`syn_text` for a one-captioner manifest written
        before `captioners` was a list)."""
        if self.captioners is not None:
            return [str(c["key"]) for c in self.captioners]
        return ["syn_text"] if self.num_syn_captions else []

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ReinforcedManifest:
        """Parse and check a manifest's JSON content; ConfigError naming `where` and the offending key."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must hold a JSON object")
        entries = data.get("teachers")
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{where}: 'teachers' must be a non-empty list of {{name, embed_dim, logit_scale}}")
        teachers = tuple(TeacherRecord.from_dict(e, f"{where}: teacher {i}") for i, e in enumerate(entries))
        num_syn = data.get("num_syn_captions")
        if num_syn is not None and (_typed(where, "num_syn_captions", num_syn, int) < 0):
            raise ConfigError(f"{where}: 'num_syn_captions' must be >= 0, got {num_syn}")
        fmt = data.get("format")
        if fmt is None:
            return cls(teachers, num_syn)
        if fmt != FORMAT:
            raise ConfigError(f"{where} has format {fmt!r}; this edgevl reads {FORMAT!r}")
        return cls._full(data, teachers, where)

    @classmethod
    def _full(cls, data: dict[str, Any], teachers: tuple[TeacherRecord, ...], where: str) -> ReinforcedManifest:
        """The fields of a full manifest, each present and of its type."""
        types: dict[str, type] = {"edgevl_version": str, "source": dict, "augmentation": dict, "num_augs": int,
                                  "num_syn_captions": int, "seed": int, "compute_precision": str, "embeddings": dict,
                                  "images": str, "members": list, "settings": dict, "shards": list, "totals": dict}
        missing = [key for key in types if key not in data]
        if missing:
            raise ConfigError(f"{where} lacks {missing}")
        values = {key: _typed(where, key, data[key], kind) for key, kind in types.items()}
        for key in ("dtype", "member"):
            _typed(where, f"embeddings.{key}", values["embeddings"].get(key), str)
        _typed(where, "totals.samples", values["totals"].get("samples"), int)
        captioners = data.get("captioners")
        if captioners is not None:
            captioners = tuple(_typed(where, f"captioners[{i}]", c, dict)
                               for i, c in enumerate(_typed(where, "captioners", captioners, list)))
            for i, c in enumerate(captioners):
                _typed(where, f"captioners[{i}].key", c.get("key"), str)
        shards = tuple(ShardRecord.from_dict(s, f"{where}: shard {i}") for i, s in enumerate(values.pop("shards")))
        return cls(teachers=teachers, format=FORMAT, captioners=captioners, shards=shards,
                   members=tuple(values.pop("members")), **values)

    @classmethod
    def read(cls, folder: str | Path) -> ReinforcedManifest:
        """The manifest in dataset folder `folder`; ConfigError naming the file if missing, unreadable or invalid."""
        path = Path(folder) / REINFORCED_MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no {REINFORCED_MANIFEST} in {folder}: expected {path} (written when `edgevl "
                              "reinforce run` finishes)") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, Any]:
        """The JSON content of a full manifest, keys in the documented order."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(teachers=[t.to_dict() for t in self.teachers], shards=[s.to_dict() for s in self.shards],
                   members=list(self.members), captioners=None if self.captioners is None else list(self.captioners))
        return {key: out[key] for key in KEY_ORDER}

    def write(self, folder: str | Path) -> None:
        """Write `manifest.json` and the webdataset `sizes.json` ({shard: samples}) into `folder`, atomically."""
        folder = Path(folder)
        atomic_write_text(folder / REINFORCED_MANIFEST, json.dumps(self.to_dict(), indent=1) + "\n")
        sizes = {s.name: s.samples for s in self.shards}
        atomic_write_text(folder / SIZES, json.dumps(sizes, indent=1) + "\n")
