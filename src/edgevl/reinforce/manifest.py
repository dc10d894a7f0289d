"""What a reinforce run records in its `manifest.json`: what was stored, from what, with which models, and the
shard list, as a `ReinforcedManifest` (the type that reads and writes the file, `edgevl.data.readers`).

Teacher order is the order of the concatenated embedding blocks. See docs/reinforcement.md for the full schema.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgevl.data.readers.reinforced_manifest import FORMAT, ReinforcedManifest, ShardRecord, TeacherRecord
from edgevl.reinforce.captioner import Captioner, degenerate_counts, syn_key
from edgevl.version import __version__

if TYPE_CHECKING:
    from edgevl.data.augment import AugmentConfig
    from edgevl.reinforce.config import ReinforceConfig
    from edgevl.reinforce.inputs import InputShards
    from edgevl.reinforce.teachers import OnlineTeacher


def skip_totals(stats: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Skipped-sample counts by kind summed over shard statistics."""
    total: Counter = Counter()
    for s in stats:
        total.update(s["skipped"])
    return dict(sorted(total.items()))


def degenerate_totals(stats: Sequence[dict[str, Any]], key: str) -> dict[str, int]:
    """Degenerate-caption counts of captioner `key` summed over shard statistics (shards finished by an edgevl
    that did not count them add nothing)."""
    total: Counter = Counter()
    for s in stats:
        total.update(s.get("degenerate_captions", {}).get(key, {}))
    return degenerate_counts(total)


def text_rows(keys: Sequence[str], per_key: int) -> str:
    """The manifest's description of the `text_emb` rows for the synthetic keys `keys` in stored order."""
    if not keys:
        return "row 0: real caption (txt); no synthetic captions (teacher-only data)"
    if len(keys) == 1:
        return f"row 0: real caption (txt); row 1 + s: syn.json {keys[0]}[s]"
    rows = [f"rows {1 + k * per_key}..{(k + 1) * per_key}: syn.json {key}[s]" for k, key in enumerate(keys)]
    return "; ".join(["row 0: real caption (txt)", *rows])


def build_manifest(cfg: ReinforceConfig, inputs: InputShards, teachers: Sequence[OnlineTeacher],
                   captioners: Sequence[Captioner], aug: AugmentConfig,
                   stats: Sequence[dict[str, Any]]) -> ReinforcedManifest:
    """The manifest of a finished run from its settings, models (captioners in stored order) and per-shard
    statistics."""
    keys = [syn_key(k) for k in range(len(captioners))]
    per_key = cfg.syn_per_captioner
    settings = cfg.settings()
    width = sum(t.embed_dim for t in teachers)
    skipped = skip_totals(stats)
    open_skips = dict(sorted(inputs.open_log.counts.items()))
    written = sum(s["samples"] for s in stats)
    return ReinforcedManifest(
        format=FORMAT,
        edgevl_version=__version__,
        source={"data": cfg.data, "shards": len(inputs), "shard_size": cfg.shard_size,
                "skipped_when_opening": open_skips},
        teachers=tuple(TeacherRecord.from_dict(t.describe(), f"teacher {t.spec!r}") for t in teachers),
        captioners=tuple({"key": key, **c.describe(), "degenerate_captions": degenerate_totals(stats, key)}
                         for key, c in zip(keys, captioners)),
        augmentation=aug.to_dict(),
        num_augs=cfg.num_augs,
        num_syn_captions=per_key,
        seed=cfg.seed,
        compute_precision=cfg.precision,
        embeddings={
            "dtype": cfg.dtype,
            "member": settings["fmt"],
            "image_emb": [cfg.num_augs, width],
            "text_emb": [1 + len(keys) * per_key, width],
            "text_rows": text_rows(keys, per_key),
            "columns": "teacher blocks in the order of 'teachers', each L2-normalized",
        },
        images="included" if cfg.images else f"companion: join with {cfg.data} by key",
        members=(*(["<image>", "txt"] if cfg.images else []), "json", "paug.json", "syn.json", settings["fmt"]),
        settings=settings,
        shards=tuple(ShardRecord.from_dict(s, f"shard statistics {s.get('name')!r}") for s in stats),
        totals={"samples": written, "skipped": sum(skipped.values()) + sum(open_skips.values()),
                "input": written + sum(skipped.values()) + sum(open_skips.values()),
                "skipped_by_kind": skipped},
    )
