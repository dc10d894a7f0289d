"""METEOR 1.5 run the way coco-caption runs it (Java + meteor-1.5.jar); reported unavailable without them.

The jar is taken from $EDGEVL_METEOR_JAR or from an installed pycocoevalcap package (which bundles it with the
paraphrase table). Starting the JVM and loading the paraphrase table takes 10-40 s.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from edgevl.errors import EdgevlError
from edgevl.eval.captioning.inputs import Hypotheses, References, pair_up

METEOR_JAR_ENV = "EDGEVL_METEOR_JAR"


class MetricUnavailableError(EdgevlError):
    """A caption metric cannot run here (missing Java, jar or network); the message says why."""


def find_meteor_command() -> tuple[list[str], Path]:
    """The METEOR command line and its working directory, or MetricUnavailableError saying what is missing."""
    java = shutil.which("java")
    if java is None:
        raise MetricUnavailableError("METEOR needs Java: no `java` executable on PATH")
    jar = _meteor_jar()
    if not (jar.parent / "data" / "paraphrase-en.gz").is_file():
        raise MetricUnavailableError(f"METEOR needs data/paraphrase-en.gz next to {jar}")
    return [java, "-jar", "-Xmx2G", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"], jar.parent


def meteor(gts: References, res: Hypotheses) -> tuple[float, list[float]]:
    """METEOR 1.5 over tokenized captions: (corpus score, per-image scores in `gts` order)."""
    _, refs, hyps = pair_up(gts, res)
    command, workdir = find_meteor_command()
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            command, cwd=workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            text=True, encoding="utf-8",
        )  # fmt: skip
        try:
            stats = []
            for hyp, image_refs in zip(hyps, refs):
                _send(proc, stderr, "SCORE ||| " + " ||| ".join([*map(_clean, image_refs), _clean(hyp)]))
                stats.append(_read(proc, stderr))
            # EVAL is answered with one line per image, then the corpus score
            _send(proc, stderr, "EVAL ||| " + " ||| ".join(stats))
            per_image = [float(_read(proc, stderr)) for _ in stats]
            corpus = float(_read(proc, stderr))
        finally:
            proc.kill()
            proc.wait()
    return corpus, per_image


def _meteor_jar() -> Path:
    if os.environ.get(METEOR_JAR_ENV):
        jar = Path(os.environ[METEOR_JAR_ENV])
        if not jar.is_file():
            raise MetricUnavailableError(f"${METEOR_JAR_ENV} points to {jar}, which is not a file")
        return jar
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailableError(
            f"METEOR needs meteor-1.5.jar: install pycocoevalcap (pip install pycocoevalcap) or set ${METEOR_JAR_ENV}"
        )
    jar = Path(next(iter(spec.submodule_search_locations))) / "meteor" / "meteor-1.5.jar"
    if not jar.is_file():
        raise MetricUnavailableError(f"METEOR jar not found at {jar}")
    return jar


def _clean(text: str) -> str:
    """What coco-caption does to the hypothesis: no field separators, no double spaces (and one line)."""
    return " ".join(text.replace("|||", "").split())


def _send(proc: subprocess.Popen, stderr, line: str) -> None:
    try:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
    except BrokenPipeError:
        _fail(proc, stderr)


def _read(proc: subprocess.Popen, stderr) -> str:
    answer = proc.stdout.readline().strip()
    if not answer:
        _fail(proc, stderr)
    return answer


def _fail(proc: subprocess.Popen, stderr) -> None:
    proc.kill()
    proc.wait()
    stderr.seek(0)
    tail = stderr.read().decode("utf-8", "replace").strip().splitlines()[-3:]
    raise EdgevlError(f"METEOR (Java) stopped answering: {' | '.join(tail) or 'no error output'}")
