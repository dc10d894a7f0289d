"""Fuzzing edgevl's bad-input handling: no traceback, no hang, no good sample lost, nothing dropped uncounted.

The property tests (default suite) draw a seed per example and build one case of a family from it; the slow
corpus run (`pytest -m slow tests/fuzz -s`) tries a fixed number of seeds per family, collects every problem
and reports the counts (`EDGEVL_FUZZ_CASES` cases per family, JSON report to `EDGEVL_FUZZ_REPORT`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .cases import FAMILIES, Case, make_case, run_case, tar_cut_cases

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

# shrinking a seed means nothing (neighbouring seeds build unrelated cases), so the shrink phase is left out
FAST = settings(
    max_examples=30,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


def _check(family: str, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="edgevl-fuzz-") as tmp:
        case = make_case(family, seed, Path(tmp))
        problem = run_case(case)
    assert problem is None, f"{family} seed {seed}: {problem} [{case.description}]"


@FAST
@given(seed=SEEDS)
def test_images(seed: int) -> None:
    """Damaged and unusual images in an image folder or a CSV table."""
    _check("image", seed)


@FAST
@given(seed=SEEDS)
def test_tars(seed: int) -> None:
    """Webdataset shards with duplicate, missing, reordered and hostile members; truncated or missing shards."""
    _check("tar", seed)


@FAST
@given(seed=SEEDS)
def test_tar_truncated_at_a_block(seed: int) -> None:
    """A shard cut at a random 512-byte block boundary."""
    _check("tar-cut", seed)


@FAST
@given(seed=SEEDS)
def test_tables(seed: int) -> None:
    """CSV/TSV/JSONL captions tables with bad types, sizes, encodings and structure."""
    _check("table", seed)


@FAST
@given(seed=SEEDS)
def test_reinforced(seed: int) -> None:
    """Reinforced shards with damaged embeddings, pickle payloads, augmentation records and syn captions."""
    _check("reinforced", seed)


@FAST
@given(seed=SEEDS)
def test_checkpoints(seed: int) -> None:
    """Damaged weight files and training checkpoint folders."""
    _check("checkpoint", seed)


def test_the_harness_notices_problems(tmp_path: Path) -> None:
    """run_case is not vacuous: a lost key, an uncounted drop, an unexpected key and a hang are all reported."""
    from .cases import FuzzTimeout, time_limit
    from .common import image_bytes, tar_bytes

    rng = random.Random(0)
    shard = tmp_path / "0.tar"
    shard.write_bytes(tar_bytes([("a.png", image_bytes(rng), "file"), ("a.txt", b"caption", "file")])[0])
    spec = f"wds:{shard}"
    assert run_case(Case("dataset", spec, {"a"}, "intact")) is None
    assert run_case(Case("dataset", spec, {"a", "b"}, "b never written")).startswith("lost")
    assert run_case(Case("dataset", spec, set(), "a not expected")).startswith("extra")
    assert run_case(Case("dataset", spec, {"a"}, "a drop claimed", min_skips=1)).startswith("uncounted")
    with pytest.raises(FuzzTimeout), time_limit(0.2):
        while True:
            pass


def _corpus_cases(family: str, count: int, tmp: Path):
    """(label, case) pairs of the corpus: seeds 0..count-1, or for 'tar-cut' every block boundary of a few shards."""
    if family != "tar-cut":
        for seed in range(count):
            yield f"seed {seed}", make_case(family, seed, tmp)
        return
    made, seed = 0, 0
    while made < count:
        folder = tmp / f"tar-cut-sweep-{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        for case in tar_cut_cases(random.Random(f"tar-cut-sweep:{seed}"), folder):
            if made < count:
                made += 1
                yield f"sweep {seed}", case
        seed += 1


@pytest.mark.slow
def test_corpus(tmp_path: Path) -> None:
    """Every family over a fixed corpus; prints and (optionally) writes the per-family problem counts."""
    count = int(os.environ.get("EDGEVL_FUZZ_CASES", "300"))
    report: dict = {"cases_per_family": count, "families": {}}
    for family in FAMILIES:
        root = tmp_path / family
        tried, problems, kinds = 0, [], Counter()
        for label, case in _corpus_cases(family, count, root):
            tried += 1
            problem = _safe_run(case)
            if problem is not None:
                problems.append(f"{family} {label}: {problem} [{case.description}]")
                kinds[problem.split(":")[0]] += 1
        shutil.rmtree(root, ignore_errors=True)
        report["families"][family] = {"tried": tried, "problems": len(problems), "kinds": dict(kinds),
                                      "examples": problems[:25]}
    report["tried"] = sum(f["tried"] for f in report["families"].values())
    report["problems"] = sum(f["problems"] for f in report["families"].values())
    print(f"\nfuzz corpus, {count} cases per family")
    print(f"{'family':<12} {'tried':>6} {'problems':>9}  kinds")
    for family, row in report["families"].items():
        print(f"{family:<12} {row['tried']:>6} {row['problems']:>9}  {row['kinds']}")
    print(f"{'total':<12} {report['tried']:>6} {report['problems']:>9}")
    for row in report["families"].values():
        for line in row["examples"][:3]:
            print("  " + line[:300])
    if os.environ.get("EDGEVL_FUZZ_REPORT"):
        Path(os.environ["EDGEVL_FUZZ_REPORT"]).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    assert report["problems"] == 0, f"{report['problems']} of {report['tried']} fuzz cases found a problem"


def _safe_run(case: Case) -> str | None:
    """`run_case`, with a crash of the harness itself reported as a problem instead of ending the corpus run."""
    try:
        return run_case(case)
    except Exception as exc:  # a bug in the harness, not in edgevl: keep going, but count it
        return f"harness-error: {type(exc).__name__}: {exc}"
