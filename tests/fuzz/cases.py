"""Fuzz cases for edgevl's bad-input handling: generators per family and `run_case`, which checks the invariants.

Every generator is a pure function of a `random.Random` and a scratch folder: it writes real files and returns
a `Case` saying which samples are intact and must come out (see `common.Case`). `run_case` runs the system
under test in-process under a time limit and returns None when every invariant holds, else one line naming
the problem: 'traceback', 'hang', 'fatal', 'lost', 'duplicate', 'extra', 'uncounted', 'skip-kind',
'pickle-executed', 'loaded-damaged', 'wrong-tensors', 'bad-error'.
"""

from __future__ import annotations

import math
import random
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .cases_checkpoint import training_case, weights_case
from .cases_files import image_case, table_case
from .cases_reinforced import reinforced_case
from .cases_tar import tar_case, tar_cut_case, tar_cut_cases
from .common import Case

__all__ = ["FAMILIES", "Case", "make_case", "run_case", "tar_cut_cases"]

TIME_LIMIT_S = 20.0


def checkpoint_case(rng: random.Random, tmp: Path) -> Case:
    """A damaged or intact weights file (load_state_dict) or training checkpoint folder (load_training_checkpoint)."""
    return (weights_case if rng.random() < 0.6 else training_case)(rng, tmp)


FAMILIES: dict[str, Callable[[random.Random, Path], Case]] = {
    "image": image_case,
    "tar": tar_case,
    "tar-cut": tar_cut_case,
    "table": table_case,
    "reinforced": reinforced_case,
    "checkpoint": checkpoint_case,
}


def make_case(family: str, seed: int, tmp: Path) -> Case:
    """The case number `seed` of `family`, written under `tmp` (deterministic in (family, seed))."""
    folder = tmp / f"{family}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    return FAMILIES[family](random.Random(f"{family}:{seed}"), folder)


class FuzzTimeout(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` in the code under test swallows it."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise `FuzzTimeout` in the main thread when the block runs longer than `seconds`."""

    def alarm(signum: int, frame: Any) -> None:
        raise FuzzTimeout(f"no result after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(exc).__name__}: {line[:limit]}"


def _short(keys: set[str] | list[str], limit: int = 3) -> str:
    items = sorted(keys)
    shown = ", ".join(repr(k[:40]) for k in items[:limit])
    return f"{len(items)} [{shown}{', ...' if len(items) > limit else ''}]"


def _run_dataset(case: Case) -> str | None:
    from edgevl.data.readers import SkipLog, open_dataset
    from edgevl.errors import EdgevlError

    log = SkipLog()
    try:
        with time_limit(TIME_LIMIT_S):
            keys = [sample.key for sample in open_dataset(case.spec_or_path, skip_log=log)]
    except FuzzTimeout as exc:
        return f"hang: {exc}"
    except EdgevlError as exc:
        if "\n" in str(exc).strip():
            return f"bad-error: multi-line {_first_line(exc)}"
        if case.fatal_ok:
            return None
        return f"fatal: {_first_line(exc)} (the whole dataset was given up)"
    except Exception as exc:
        return f"traceback {_first_line(exc)}"
    out = set(keys)
    if len(out) != len(keys):
        repeated = {k for k in keys if keys.count(k) > 1}
        return f"duplicate: keys out more than once {_short(repeated)}"
    lost = case.good_keys - out
    if lost:
        return f"lost: good samples missing {_short(lost)} (skips {dict(log.counts)})"
    extra = out - case.good_keys - case.optional_keys - case.cut_keys
    if extra:
        return f"extra: unexpected samples out {_short(extra)}"
    missing_kinds = {k for k in case.skip_kinds if not log.counts.get(k)}
    if missing_kinds:
        return f"skip-kind: no {sorted(missing_kinds)} skip counted (skips {dict(log.counts)})"
    needed = case.min_skips + len(case.optional_keys - out)
    counted = sum(log.counts.values())
    if counted < needed:
        return f"uncounted: {counted} skips counted for {needed} dropped samples (skips {dict(log.counts)})"
    return None


def _same(a: Any, b: Any) -> bool:
    """Equal values, tensors compared exactly (dtype, shape and contents)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _run_checkpoint(case: Case) -> str | None:
    from edgevl.errors import CheckpointError
    from edgevl.models.checkpoint import load_state_dict
    from edgevl.train.checkpoint import load_training_checkpoint

    load = load_state_dict if case.kind == "weights" else load_training_checkpoint
    try:
        with time_limit(TIME_LIMIT_S):
            result = load(case.spec_or_path)
    except FuzzTimeout as exc:
        return f"hang: {exc}"
    except CheckpointError as exc:
        message = str(exc)
        if "\n" in message.strip():
            return f"bad-error: multi-line message {_first_line(exc)}"
        if case.error_path not in message:
            return f"bad-error: message does not name {case.error_path!r}: {_first_line(exc)}"
        if case.expected is not None:
            return f"fatal: intact checkpoint refused: {_first_line(exc)}"
        return None
    except Exception as exc:
        return f"traceback {_first_line(exc)}"
    if case.expected is None:
        return "loaded-damaged: a damaged checkpoint loaded without an error"
    if not _same(result, case.expected):
        return "wrong-tensors: the loaded checkpoint differs from what was saved"
    return None


def run_case(case: Case) -> str | None:
    """None when every invariant holds for `case`, else a one-line description of the first problem found."""
    if case.kind == "dataset":
        problem = _run_dataset(case)
    elif case.kind in ("weights", "training"):
        problem = _run_checkpoint(case)
    else:
        raise ValueError(f"unknown case kind {case.kind!r}")
    if case.marker and Path(case.marker).exists():
        return "pickle-executed: a pickle payload ran code while loading"
    return problem
