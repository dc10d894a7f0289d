"""`manifest.json` of a reinforced dataset: what was stored, from what, with which models, and the shard list.

The `teachers` entries carry `name`, `embed_dim` and `logit_scale` as the trainer's manifest check expects
(`edgevl.train.manifest`); their order is the order of the concatenated embedding blocks. See
docs/reinforcement.md for the full schema.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgevl.errors import DataError
from edgevl.io import atomic_write_text
from edgevl.reinforce.captioner import Captioner, syn_key
from edgevl.run_layout import REINFORCED_MANIFEST
from edgevl.version import __version__

if TYPE_CHECKING:
    from edgevl.data.augment import AugmentConfig
    from edgevl.reinforce.config import ReinforceConfig
    from edgevl.reinforce.inputs import InputShards
    from edgevl.reinforce.teachers import OnlineTeacher

SIZES = "sizes.json"
FORMAT = "edgevl-reinforced/1"


def skip_totals(stats: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Skipped-sample counts by kind summed over shard statistics."""
    total: Counter = Counter()
    for s in stats:
        total.update(s["skipped"])
    return dict(sorted(total.items()))


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
                   stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The manifest of a finished run from its settings, models (captioners in stored order) and per-shard
    statistics."""
    keys = [syn_key(k) for k in range(len(captioners))]
    per_key = cfg.syn_per_captioner
    settings = cfg.settings()
    width = sum(t.embed_dim for t in teachers)
    skipped = skip_totals(stats)
    open_skips = dict(sorted(inputs.open_log.counts.items()))
    written = sum(s["samples"] for s in stats)
    return {
        "format": FORMAT,
        "edgevl_version": __version__,
        "source": {"data": cfg.data, "shards": len(inputs), "shard_size": cfg.shard_size,
                   "skipped_when_opening": open_skips},
        "teachers": [t.describe() for t in teachers],
        "captioners": [{"key": key, **c.describe()} for key, c in zip(keys, captioners)],
        "augmentation": aug.to_dict(),
        "num_augs": cfg.num_augs,
        "num_syn_captions": per_key,
        "seed": cfg.seed,
        "compute_precision": cfg.precision,
        "embeddings": {
            "dtype": cfg.dtype,
            "member": settings["fmt"],
            "image_emb": [cfg.num_augs, width],
            "text_emb": [1 + len(keys) * per_key, width],
            "text_rows": text_rows(keys, per_key),
            "columns": "teacher blocks in the order of 'teachers', each L2-normalized",
        },
        "images": "included" if cfg.images else f"companion: join with {cfg.data} by key",
        "members": [*(["<image>", "txt"] if cfg.images else []), "json", "paug.json", "syn.json", settings["fmt"]],
        "settings": settings,
        "shards": list(stats),
        "totals": {"samples": written, "skipped": sum(skipped.values()) + sum(open_skips.values()),
                   "input": written + sum(skipped.values()) + sum(open_skips.values()),
                   "skipped_by_kind": skipped},
    }


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Write `manifest.json` and the webdataset `sizes.json` ({shard: samples}) atomically."""
    atomic_write_text(out / REINFORCED_MANIFEST, json.dumps(manifest, indent=1) + "\n")
    sizes = {s["name"]: s["samples"] for s in manifest["shards"]}
    atomic_write_text(out / SIZES, json.dumps(sizes, indent=1) + "\n")


def synthetic_keys(manifest: dict[str, Any]) -> list[str]:
    """The `syn.json` keys a manifest's captioners wrote, in stored order (`syn_text` for a one-captioner
    manifest written before `captioners` was a list)."""
    if "captioners" in manifest:
        return [str(c["key"]) for c in manifest["captioners"]]
    return ["syn_text"] if manifest.get("num_syn_captions") else []


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The parsed manifest of a reinforced dataset folder; DataError if missing or not an edgevl manifest."""
    path = Path(folder) / REINFORCED_MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"no {REINFORCED_MANIFEST} in {folder} (is the run finished?)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"{path} is not an edgevl reinforcement manifest (format {FORMAT!r})")
    return data
