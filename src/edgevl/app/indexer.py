"""`index_folder`: bring a photo database up to date with a folder tree, incrementally and resumably.

A run walks the folder, compares it with the database (`Catalog.plan`), drops rows of deleted files, then decodes
new and changed files on a pool of worker threads (Pillow and libjpeg release the GIL; docs/benchmarks.md has the
threads-vs-processes measurement) while the model embeds, tags and captions the previous batch. Each batch is one
transaction, so a killed run loses at most one batch and the next run resumes.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgevl.app.catalog import Catalog
from edgevl.app.engine import Engine
from edgevl.app.scan import Decoded, DecodeJob, Skip, decode, walk
from edgevl.errors import ConfigError
from edgevl.progress import Progress


@dataclass
class Report:
    """What an index run did: counts of each outcome and every file skipped (this run or still from before)."""

    added: int = 0
    updated: int = 0
    touched: int = 0
    unchanged: int = 0
    deleted: int = 0
    retagged: int = 0
    reset_reason: str | None = None
    skipped: list[Skip] = field(default_factory=list)

    def summary(self) -> str:
        """'indexed 120 new and 3 changed images, 2 removed, 1000 unchanged; skipped 4 files: 2 corrupt, ...'."""
        parts = [f"indexed {self.added} new and {self.updated} changed images", f"{self.deleted} removed",
                 f"{self.unchanged + self.touched} unchanged"]
        if self.retagged:
            parts.append(f"{self.retagged} re-tagged")
        line = ", ".join(parts)
        if self.skipped:
            kinds = Counter(s.kind for s in self.skipped)
            line += f"; skipped {len(self.skipped)} files: " + ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        return line


def _decoded_in_order(executor: Executor, jobs: list[DecodeJob], ahead: int) -> Iterator[Decoded | Skip]:
    """Results of `decode(job)` in job order, with at most `ahead` jobs queued or running at a time."""
    pending: deque[Future] = deque()
    for job in jobs:
        pending.append(executor.submit(decode, job))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _embed(engine: Engine, batch: list[Decoded]) -> tuple[torch.Tensor | None, list[str], list]:
    fresh = [d for d in batch if d.pixels is not None]
    if not fresh:
        return None, [], []
    vectors = engine.encode_images(torch.stack([d.pixels for d in fresh]))  # type: ignore[misc]
    if not bool(torch.isfinite(vectors).all()):
        raise ConfigError("the model produced non-finite embeddings (NaN or infinity); its weights are broken")
    return vectors, engine.captions([d.caption_image for d in fresh]), engine.tags(vectors)


def index_folder(catalog: Catalog, engine: Engine, folder: str | os.PathLike, *, batch_size: int = 32,
                 workers: int = 2, processes: bool = False, progress: bool = True) -> Report:
    """Index every image under `folder` into `catalog` with `engine` and return what happened.

    A database made with other models (or another edgevl version) is emptied first and re-indexed, never mixed.
    `workers` threads decode (`processes=True`: worker processes instead)."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"{folder} is not a folder")
    report = Report()
    fingerprint = engine.fingerprint()
    reason = catalog.mismatch(fingerprint)
    if reason is not None or catalog.meta("fingerprint") is None:
        report.reset_reason = reason
        catalog.reset(fingerprint, engine.spec.to_json())
    root_id = catalog.add_root(root)
    files, refused = walk(root)
    plan = catalog.plan(root, files, refused)
    catalog.apply_refused_and_deleted(root_id, plan, refused)
    report.unchanged, report.deleted = plan.unchanged, len(plan.deleted)
    report.skipped = list(plan.still_skipped)
    report.retagged = catalog.retag(engine.labels_fingerprint(), engine.tags)
    jobs = [DecodeJob(f, engine.preprocess_cfg, engine.caption_cfg, known) for f, known in plan.todo]
    known_paths = {f.path for f, known in plan.todo if known is not None}
    # spawned, not forked: a child forked from a process whose OpenMP threads already ran can hang in torch
    pool: Executor = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
                      if processes else ThreadPoolExecutor(workers))
    with pool, Progress(len(jobs), desc="index", unit="image", enabled=progress and bool(jobs)) as bar:
        batch: list[Decoded] = []
        skips: list[Skip] = []

        def flush() -> None:
            vectors, captions, tags = _embed(engine, batch)
            catalog.write_batch(root_id, batch, None if vectors is None else vectors.numpy(), captions, tags, skips)
            for d in batch:
                if d.pixels is None:
                    report.touched += 1
                elif d.path in known_paths:
                    report.updated += 1
                else:
                    report.added += 1
            report.skipped.extend(skips)
            bar.update(len(batch) + len(skips))
            batch.clear()
            skips.clear()

        for result in _decoded_in_order(pool, jobs, ahead=batch_size + 2 * workers):
            (skips if isinstance(result, Skip) else batch).append(result)
            if len(batch) + len(skips) >= batch_size:
                flush()
        flush()
    report.skipped.sort(key=lambda s: s.path)
    return report
