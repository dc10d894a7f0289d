"""The start-of-training check that reinforced data fits the run: its manifest's teachers against the stored
embeddings of its first sample (the manifest itself is `edgevl.data.readers.reinforced_manifest`).
"""

from __future__ import annotations

from pathlib import Path

from edgevl.data.readers import parse_spec
from edgevl.data.readers.base import SkipLog
from edgevl.data.readers.reinforced import load_embeddings
from edgevl.data.readers.reinforced_manifest import ReinforcedManifest, TeacherRecord
from edgevl.data.readers.webdataset import IMAGE_EXTS, SkipSample, expand_urls, read_shard
from edgevl.errors import ConfigError, DataError

REQUIRED_MEMBERS = ("paug.json", "syn.json")
LAYOUT_SAMPLES = 100  # samples looked at for one whose embeddings show the stored layout


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
    teachers = list(ReinforcedManifest.read(Path(first).parent).teachers)
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
