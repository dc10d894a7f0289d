"""The reinforced dataset's `manifest.json` and the start-of-training check that it fits the run.

Expected next to the reinforcement shards (the folder of the first shard):
    {"teachers": [{"name": "ViT-L-14:openai", "embed_dim": 768, "logit_scale": 100.0}, ...], ...}
TeacherRecord order is the order of the concatenated embedding blocks. Other keys are ignored here, except that the
reader takes `"num_syn_captions": 0` for teacher-only data (`edgevl.data.readers.reinforced`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgevl.data.readers import parse_spec
from edgevl.data.readers.base import SkipLog
from edgevl.data.readers.reinforced import load_embeddings
from edgevl.data.readers.webdataset import IMAGE_EXTS, SkipSample, expand_urls, read_shard
from edgevl.errors import ConfigError, DataError
from edgevl.run_layout import REINFORCED_MANIFEST

REQUIRED_MEMBERS = ("paug.json", "syn.json")
LAYOUT_SAMPLES = 100  # samples looked at for one whose embeddings show the stored layout


@dataclass(frozen=True)
class TeacherRecord:
    name: str
    embed_dim: int
    logit_scale: float


def read_teacher_records(path: str | Path) -> list[TeacherRecord]:
    """The teacher list of a manifest file, validated (positive dims and scales)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"reinforced data has no {REINFORCED_MANIFEST}: expected {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    entries = data.get("teachers") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: 'teachers' must be a non-empty list of {{name, embed_dim, logit_scale}}")
    teachers = []
    for i, entry in enumerate(entries):
        try:
            teacher = TeacherRecord(str(entry["name"]), int(entry["embed_dim"]), float(entry["logit_scale"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: teacher {i} needs name, embed_dim and logit_scale ({exc!r})") from None
        if teacher.embed_dim <= 0 or teacher.logit_scale <= 0:
            raise ConfigError(f"{path}: teacher {teacher.name!r} has non-positive embed_dim or logit_scale")
        teachers.append(teacher)
    return teachers


def check_reinforced_data(spec: str, scales: list[float] | None) -> tuple[list[TeacherRecord], tuple[float, ...]]:
    """Read the manifest of reinforced data `spec` and check its first sample against it.

    Fails with a message naming the file when the manifest is missing, a member (image, paug.json, syn.json,
    npz/pth.gz) is absent, or the stored embedding width differs from the sum of the teacher dims.
    Returns the teachers and the KD logit scales (`scales` overrides the manifest's, one per teacher).
    """
    parsed = parse_spec(spec)
    if parsed.kind != "reinforced":
        raise ConfigError(f"--mode reinforced needs reinforced data ('reinforced:...'), got {spec!r}")
    first = expand_urls(parsed.path)[0]
    teachers = read_teacher_records(Path(first).parent / REINFORCED_MANIFEST)
    if scales:
        if len(scales) != len(teachers):
            raise ConfigError(f"--distill-logit-scale gives {len(scales)} values for {len(teachers)} teachers")
        kd_scales = tuple(float(s) for s in scales)
    else:
        kd_scales = tuple(t.logit_scale for t in teachers)
    raw, emb = _first_readable(first)
    images = parsed.options.get("images")
    has_image = any(e in raw for e in IMAGE_EXTS) or images is not None
    missing = [m for m in REQUIRED_MEMBERS if m not in raw]
    missing += [] if has_image else ["image (jpg/png/webp, or ?images=...)"]
    if missing:
        raise DataError(f"reinforced sample {raw['__key__']!r} in {first} lacks members: {', '.join(missing)}")
    width = sum(t.embed_dim for t in teachers)
    for key in ("image_emb", "text_emb"):
        if key not in emb or emb[key].ndim != 2:
            raise DataError(f"reinforced sample {raw['__key__']!r} in {first} has no 2-D {key}")
        if emb[key].shape[1] != width:
            dims = [t.embed_dim for t in teachers]
            raise DataError(f"{first}: {key} has width {emb[key].shape[1]} but the manifest's teachers {dims} "
                            f"sum to {width}")
    return teachers, kd_scales


def _first_readable(shard: str, look: int = LAYOUT_SAMPLES) -> tuple[dict, dict]:
    """The first of the first `look` samples of `shard` whose embeddings load, with them.

    A damaged sample before it is the reader's business (one counted `bad_embeddings` skip during training);
    only when none of them loads is the layout unknowable, and that is an error naming the first problem.
    """
    problem = None
    for count, raw in enumerate(read_shard(shard, SkipLog()), start=1):
        if "npz" not in raw and "pth.gz" not in raw:
            problem = problem or f"reinforced sample {raw['__key__']!r} in {shard} lacks members: npz or pth.gz"
        else:
            try:
                return raw, load_embeddings(raw)
            except SkipSample as exc:
                problem = problem or f"reinforced sample {raw['__key__']!r} in {shard}: {exc.reason}"
        if count == look:
            break
    raise DataError(problem or f"reinforced shard {shard} is empty or unreadable")
