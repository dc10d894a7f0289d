"""`edgevl reinforce verify DIR`: check a reinforced dataset against its manifest.

Checks the shard list (present, size and SHA-256, no unlisted or half-written shards), every sample's members,
the number of augmentation records and synthetic captions (per captioner key, or none for teacher-only data),
and the embedding shapes, dtype and per-teacher norms (1 within the storage dtype's rounding). Degenerate synthetic
captions (`caption_quality.degenerate_reason`) are counted, not problems: a run keeps those it could not re-draw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgevl.data.augment import decode_paug
from edgevl.data.readers import SkipLog
from edgevl.data.readers.reinforced import load_embeddings
from edgevl.data.readers.reinforced_manifest import ReinforcedManifest, ShardRecord
from edgevl.data.readers.webdataset import IMAGE_EXTS, RawSample, SkipSample, read_shard
from edgevl.errors import ConfigError, EdgevlError
from edgevl.io import sha256_file
from edgevl.reinforce.caption_quality import degenerate_reason
from edgevl.reinforce.storage import STORAGE_DTYPES

NORM_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-3, "bf16": 1e-2}
MAX_PROBLEMS_PER_SHARD = 5


@dataclass
class VerifyReport:
    """What `verify` found: counts checked and a list of problems (empty when the dataset is sound)."""

    shards: int = 0
    samples: int = 0
    degenerate_captions: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _sample_problems(raw: RawSample, manifest: ReinforcedManifest) -> list[str]:
    """Problems of one raw sample: missing members, record/caption counts, embedding shapes/dtype/norms."""
    member = manifest.embeddings["member"]
    with_images = manifest.images == "included"
    required = ("json", "paug.json", "syn.json", member, *(("txt",) if with_images else ()))
    missing = [m for m in required if m not in raw]
    missing += [] if any(e in raw for e in IMAGE_EXTS) or not with_images else ["image"]
    if missing:
        return [f"missing members {missing}"]
    problems = []
    num_augs, num_syn = manifest.num_augs, manifest.num_syn_captions
    try:
        records = decode_paug(raw["paug.json"])
        if len(records) != num_augs:
            problems.append(f"{len(records)} augmentation records, expected {num_augs}")
    except EdgevlError as exc:
        problems.append(f"paug.json: {exc}")
    keys = manifest.synthetic_keys
    problem = _synthetic_problem(raw["syn.json"], keys, num_syn)
    if problem:
        problems.append(problem)
    try:
        emb = load_embeddings(raw)
    except SkipSample as exc:
        return [*problems, exc.reason]
    dims = [t.embed_dim for t in manifest.teachers]
    dtype = manifest.embeddings["dtype"]
    for name, rows in (("image_emb", num_augs), ("text_emb", 1 + len(keys) * num_syn)):
        tensor = emb.get(name)
        if tensor is None or tuple(tensor.shape) != (rows, sum(dims)):
            shape = None if tensor is None else tuple(tensor.shape)
            problems.append(f"{name} has shape {shape}, expected {(rows, sum(dims))}")
            continue
        if tensor.dtype != STORAGE_DTYPES[dtype]:
            problems.append(f"{name} is {tensor.dtype}, manifest says {dtype}")
        norms = torch.stack([block.float().norm(dim=-1) for block in tensor.split(dims, dim=-1)])
        worst = float((norms - 1).abs().max())
        if worst > NORM_TOLERANCE[dtype]:
            problems.append(f"{name} teacher blocks are not unit-norm (off by {worst:.2e})")
    return problems


def _parse_syn(member: bytes) -> Any:
    """The JSON content of a `syn.json` member, or None when it is not UTF-8 JSON."""
    try:
        return json.loads(member.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _degenerate_captions(member: bytes) -> int:
    """The degenerate captions among the synthetic captions of a `syn.json` (0 when it is malformed)."""
    syn = _parse_syn(member)
    lists = [texts for texts in syn.values() if isinstance(texts, list)] if isinstance(syn, dict) else []
    return sum(isinstance(t, str) and degenerate_reason(t) is not None for texts in lists for t in texts)


def _synthetic_problem(member: bytes, keys: list[str], num_syn: int) -> str | None:
    """What is wrong with a `syn.json`: it must hold exactly the manifest's keys with `num_syn` non-empty
    captions each, or just an empty `syn_text` list for teacher-only data."""
    syn = _parse_syn(member)
    if not keys:
        return None if syn == {"syn_text": []} else "syn.json must be {\"syn_text\": []} (teacher-only data)"
    found = sorted(k for k in syn if k.startswith("syn_text")) if isinstance(syn, dict) else []
    if found != sorted(keys) or not all(
            isinstance(syn[k], list) and len(syn[k]) == num_syn and all(isinstance(t, str) and t for t in syn[k])
            for k in keys):
        return f"syn.json must hold {num_syn} non-empty captions under each of {keys}"
    return None


def verify(folder: str | Path) -> VerifyReport:
    """Check the reinforced dataset in `folder`; the report lists every problem found."""
    folder = Path(folder)
    manifest = ReinforcedManifest.read(folder)
    if not manifest.is_full:
        raise ConfigError(f"{folder}: its manifest is not one `edgevl reinforce run` wrote (no 'format'), so there is "
                          "nothing to verify against")
    report = VerifyReport()
    keys, num_syn = manifest.synthetic_keys, manifest.num_syn_captions
    if bool(keys) != bool(num_syn):
        report.problems.append(f"manifest: {num_syn} synthetic captions per image for the captioner keys {keys}")
    listed = {s.name for s in manifest.shards}
    report.problems += [f"{p.name}: shard not in the manifest" for p in sorted(folder.glob("*.tar"))
                        if p.name not in listed]
    report.problems += [f"{p.name}: leftover partial file" for p in sorted(folder.glob(".*.tmp"))]
    for stats in manifest.shards:
        report.problems += _check_shard(folder, stats, manifest, report)
    expected = manifest.totals["samples"]
    if report.samples != expected:
        report.problems.append(f"found {report.samples} samples, manifest totals say {expected}")
    return report


def _check_shard(folder: Path, stats: ShardRecord, manifest: ReinforcedManifest, report: VerifyReport) -> list[str]:
    name = stats.name
    path = folder / name
    if not path.is_file():
        return [f"{name}: missing"]
    if path.stat().st_size != stats.bytes or sha256_file(path) != stats.sha256:
        return [f"{name}: size or SHA-256 differs from the manifest"]
    report.shards += 1
    log = SkipLog()
    problems, count, keys = [], 0, set()
    for raw in read_shard(str(path), log):
        count += 1
        if raw["__key__"] in keys:
            problems.append(f"{name}:{raw['__key__']}: key occurs twice")
        keys.add(raw["__key__"])
        problems += [f"{name}:{raw['__key__']}: {p}" for p in _sample_problems(raw, manifest)]
        report.degenerate_captions += _degenerate_captions(raw["syn.json"]) if "syn.json" in raw else 0
    report.samples += count
    if log.counts:
        problems.append(f"{name}: unreadable tar ({log.summary()})")
    if count != stats.samples:
        problems.append(f"{name}: {count} samples, manifest says {stats.samples}")
    if len(problems) > MAX_PROBLEMS_PER_SHARD:
        problems = [*problems[:MAX_PROBLEMS_PER_SHARD], f"{name}: ... and {len(problems) - 5} more problems"]
    return problems
