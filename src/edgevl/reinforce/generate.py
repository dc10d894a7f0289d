"""The per-shard worker and the (optionally torchrun-distributed) driver of `edgevl reinforce run`.

Output shard i (`{i:08d}.tar`) holds input shard i. A shard is written under a temporary name and renamed when
complete; then its statistics go to `_state/{i:08d}.json`. A shard counts as done only when both exist and
the tar has the recorded size, so a restarted run skips finished shards and redoes partial ones. All random
choices are seeded from (seed, sample key) and batches never cross shards, so the bytes of a shard do not
depend on the number of processes. Rank 0 writes `manifest.json` and `sizes.json` after the last shard.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from edgevl.data.augment import AugmentConfig, encode_paug, sample_record
from edgevl.data.readers import SkipLog
from edgevl.data.readers.reinforced_manifest import ReinforcedManifest
from edgevl.distributed import DistInfo, barrier, cleanup, init_distributed
from edgevl.errors import ConfigError
from edgevl.io import atomic_write_text, sha256_file
from edgevl.locks import output_lock
from edgevl.progress import Progress
from edgevl.reinforce.captioner import Captioner, degenerate_counts, load_captioner, syn_key
from edgevl.reinforce.config import ReinforceConfig
from edgevl.reinforce.inputs import InputSample, InputShards, member_key, seed_for
from edgevl.reinforce.manifest import build_manifest
from edgevl.reinforce.storage import ShardWriter, check_storage, embedding_blob
from edgevl.reinforce.teachers import OnlineTeacher
from edgevl.run_layout import changed_settings

STATE_DIR = "_state"
SETTINGS = "settings.json"
BARRIER_TIMEOUT_S = 7 * 24 * 3600.0  # ranks that finish early wait for the slowest one at the final barrier
# settings a run started by an older edgevl did not record, with the value it used
SETTINGS_ADDED_LATER = {"aug_scale": list(AugmentConfig.scale), "aug_ops": AugmentConfig.num_ops,
                        "caption_redraws": 0}
WEIGHTS_KEY = "weights_sha256"  # the settings entry {teacher or captioner spec: sha256 of its weights file}


def shard_name(index: int) -> str:
    return f"{index:08d}.tar"


class ShardJob:
    """The loaded models and settings that turn one input shard into one output shard."""

    def __init__(self, cfg: ReinforceConfig, inputs: InputShards, teachers: Sequence[OnlineTeacher],
                 captioners: Sequence[Captioner], aug: AugmentConfig, out: Path) -> None:
        """`captioners` in stored order (side by side); none for teacher-only data."""
        self.cfg, self.inputs, self.teachers, self.captioners = cfg, inputs, list(teachers), list(captioners)
        self.aug, self.out = aug, out
        self.fmt = check_storage(cfg.dtype, cfg.fmt)

    def run(self, shard: int, progress: Any = None) -> dict[str, Any]:
        """Write output shard `shard` (temp name, then rename) and its state file; returns the statistics."""
        path = self.out / shard_name(shard)
        log = SkipLog(strict=self.cfg.strict)
        writer = ShardWriter(path)
        seen: set[str] = set()
        degenerate = {syn_key(k): Counter() for k in range(len(self.captioners))}
        try:
            batch: list[tuple[str, InputSample]] = []
            for position, sample in enumerate(self.inputs.samples(shard, log)):
                key = member_key(sample.key, shard, position)
                if key in seen:
                    log.skip(sample.key, "duplicate_key", f"key {key!r} occurs twice in the shard", path.name)
                    continue
                seen.add(key)
                batch.append((key, sample))
                if len(batch) == self.cfg.batch_size:
                    self._write_batch(writer, batch, degenerate, progress)
                    batch = []
            if batch:
                self._write_batch(writer, batch, degenerate, progress)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        stats = {
            "name": path.name,
            "source": self.inputs.source(shard),
            "samples": writer.samples,
            "skipped": dict(sorted(log.counts.items())),
            "degenerate_captions": {key: degenerate_counts(c) for key, c in degenerate.items()},
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }
        atomic_write_text(self.out / STATE_DIR / f"{path.stem}.json", json.dumps(stats, indent=1) + "\n")
        return stats

    def _write_batch(self, writer: ShardWriter, batch: list[tuple[str, InputSample]],
                     degenerate: dict[str, Counter], progress: Any) -> None:
        cfg = self.cfg
        samples = [s for _, s in batch]
        images = [s.image for s in samples]
        records = []
        for s in samples:
            gen = torch.Generator().manual_seed(seed_for(cfg.seed, s.key, "augment"))
            records.append([sample_record(s.image.width, s.image.height, self.aug, gen) for _ in range(cfg.num_augs)])
        synthetic = self._synthetic(samples, images, degenerate)
        texts = [t for s, syn in zip(samples, synthetic) for t in [s.caption, *itertools.chain(*syn.values())]]
        rows = 1 + len(self.captioners) * cfg.syn_per_captioner
        image_blocks, text_blocks = [], []
        replays: dict[tuple, torch.Tensor] = {}
        for teacher in self.teachers:
            view = (teacher.size, teacher.interpolation)
            if view not in replays:
                replays[view] = teacher.replay_batch(images, records)
            image_blocks.append(teacher.embed_images(replays[view]).view(len(batch), cfg.num_augs, -1))
            text_blocks.append(teacher.embed_texts(texts).view(len(batch), rows, -1))
        image_emb, text_emb = torch.cat(image_blocks, -1), torch.cat(text_blocks, -1)
        for i, (key, s) in enumerate(batch):
            meta = {**s.meta, "uid": s.meta.get("uid", s.key), "key": s.key,
                    "sha256": hashlib.sha256(s.image_bytes).hexdigest()}
            members = {}
            if cfg.images:
                members = {s.image_ext: s.image_bytes, "txt": s.caption.encode("utf-8")}
                if s.label is not None:
                    members["cls"] = str(s.label).encode("ascii")
            members["json"] = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
            members["paug.json"] = encode_paug(records[i], string_form=True).encode("utf-8")
            members["syn.json"] = json.dumps(synthetic[i], ensure_ascii=False).encode("utf-8")
            members[self.fmt] = embedding_blob({"image_emb": image_emb[i], "text_emb": text_emb[i]},
                                               cfg.dtype, self.fmt)
            writer.add(key, members)
        if progress is not None:
            progress.update(len(batch))

    def _synthetic(self, samples: list[InputSample], images: list,
                   degenerate: dict[str, Counter]) -> list[dict[str, list[str]]]:
        """Each sample's `syn.json` content: one key per captioner in order (`{"syn_text": []}` with none);
        degenerate captions are counted into `degenerate[key]`.

        Captioner k draws image i's captions from seed stream `caption` (k = 0) or `caption_<k>`, so the first
        captioner's captions do not depend on whether others are added.
        """
        if not self.captioners:
            return [{syn_key(0): []} for _ in samples]
        out: list[dict[str, list[str]]] = [{} for _ in samples]
        for k, captioner in enumerate(self.captioners):
            stream = "caption" if k == 0 else f"caption_{k}"
            seeds = [seed_for(self.cfg.seed, s.key, stream) for s in samples]
            captions = captioner.sample_checked(images, seeds, self.cfg.syn_per_captioner, self.cfg.caption_redraws,
                                                degenerate[syn_key(k)])
            for row, texts in zip(out, captions):
                row[syn_key(k)] = texts
        return out


def completed_stats(out: Path, shard: int) -> dict[str, Any] | None:
    """The statistics of shard `shard` if it was finished (state file present, tar of the recorded size)."""
    path = out / shard_name(shard)
    try:
        stats = json.loads((out / STATE_DIR / f"{path.stem}.json").read_text(encoding="utf-8"))
        return stats if path.stat().st_size == stats["bytes"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_settings(out: Path, settings: dict[str, Any], shards: int) -> None:
    """Refuse to resume a run whose finished shards were made with other settings or other model weights.

    Settings left by a start that finished no shard (e.g. it failed while loading a teacher) do not count. The
    weights' sha256 (`WEIGHTS_KEY`) are compared only when both sides have them: before the models are loaded,
    and for runs started before edgevl recorded them.
    """
    path = out / STATE_DIR / SETTINGS
    if not path.is_file() or all(completed_stats(out, i) is None for i in range(shards)):
        return
    old = {**SETTINGS_ADDED_LATER, **json.loads(path.read_text(encoding="utf-8"))}
    ignore = {WEIGHTS_KEY} - (set(old) & set(settings))
    changed = changed_settings(old, settings, ignore=ignore)
    if changed:
        raise ConfigError(f"{out} holds a run with different settings ({'; '.join(changed[:4])}); "
                          "use a new --out or the same arguments and weights to resume")


def _progress_total(inputs: InputShards, shards: Sequence[int]) -> int | None:
    """Samples this rank will read (estimated as its share of the input size), or None if unknown."""
    total = inputs.total_samples()
    return None if total is None else round(total * len(shards) / len(inputs))


def reinforce(cfg: ReinforceConfig) -> dict[str, Any]:
    """Reinforce `cfg.data` into `cfg.out`; under torchrun each rank takes a disjoint set of pending shards.

    Returns the manifest's JSON content (on every rank, after rank 0 wrote it). Rank 0 holds the output folder's
    lock, so a second run on the same `out` fails at once instead of mixing its shards in.
    """
    cfg.check()
    joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    info = init_distributed(cfg.device, timeout_s=BARRIER_TIMEOUT_S)
    try:
        with output_lock(cfg.out, "reinforce run", enabled=info.is_main):
            return _reinforce(cfg, info)
    finally:
        if not joined:  # leave a process group the caller created alone
            cleanup()


def _reinforce(cfg: ReinforceConfig, info: DistInfo) -> dict[str, Any]:
    """The body of `reinforce`, run while rank 0 holds the output folder's lock."""
    out = Path(cfg.out)
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    inputs = InputShards(cfg.data, cfg.shard_size, cfg.strict)
    if not cfg.images and not inputs.is_tar:
        raise ConfigError("--no-images needs webdataset input: the output is joined with the input shards by key")
    _check_settings(out, cfg.settings(), len(inputs))
    pending = [i for i in range(len(inputs)) if completed_stats(out, i) is None]
    scales = cfg.logit_scales or (None,) * len(cfg.teachers)
    teachers = [OnlineTeacher(spec, info.device, cfg.precision, scale) for spec, scale in zip(cfg.teachers, scales)]
    captioners = [load_captioner(spec, info.device, cfg.precision, cfg.top_p, cfg.temperature)
                  for spec in cfg.captioners]
    aug = AugmentConfig(size=cfg.aug_size or teachers[0].size, interpolation=teachers[0].interpolation,
                        scale=cfg.aug_scale, num_ops=cfg.aug_ops, mean=teachers[0].mean, std=teachers[0].std)
    settings = {**cfg.settings(), WEIGHTS_KEY: {m.spec: m.weights_sha256 for m in (*teachers, *captioners)}}
    _check_settings(out, settings, len(inputs))  # the same specs may now name other weights (a replaced file)
    if info.is_main:  # only now that everything loaded, so a failed start leaves no settings behind
        atomic_write_text(out / STATE_DIR / SETTINGS, json.dumps(settings, indent=1, sort_keys=True) + "\n")
    barrier()  # every rank listed the pending shards before any rank writes one
    mine = pending[info.rank::info.world_size]
    job = ShardJob(cfg, inputs, teachers, captioners, aug, out)
    show = cfg.progress and info.is_main
    with Progress(_progress_total(inputs, mine), desc="reinforce", unit="sample", enabled=show) as bar:
        for shard in mine:
            job.run(shard, bar)
    barrier()
    if info.is_main:
        stats = [completed_stats(out, i) for i in range(len(inputs))]
        missing = [shard_name(i) for i, s in enumerate(stats) if s is None]
        if missing:
            raise ConfigError(f"shards not finished: {', '.join(missing[:5])}; run again to complete them")
        build_manifest(cfg, inputs, teachers, captioners, aug, stats).write(out)
        for stray in out.glob(".*.tmp"):
            stray.unlink(missing_ok=True)
    barrier()
    return ReinforcedManifest.read(out).to_dict()
