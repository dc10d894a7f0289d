"""Two `reinforce run` processes on one --out: the second fails at once naming the first; nothing is mixed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tiny_models import cli_args

from edgevl.cli import main
from edgevl.reinforce.verify import verify


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "1", "RANK": "0"}


def test_second_run_on_the_same_folder_fails_at_once(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "edgevl", *cli_args(tiny, out), "--seed", "1"], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".edgevl.lock").exists() or not (out / ".edgevl.lock").read_text():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.01)
        started = time.monotonic()
        assert main([*cli_args(tiny, out), "--seed", "2"]) == 4
        assert time.monotonic() - started < 5  # at once, before loading any model
        err = capsys.readouterr().err.strip()
        assert f"is in use by PID {first.pid} (reinforce run" in err and len(err.splitlines()) == 1
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        first.kill()
    assert verify(out).ok and not (out / ".edgevl.lock").exists()
    # the folder is the first run's alone: a run with another seed is refused before it writes anything
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main([*cli_args(tiny, out), "--seed", "2"]) == 2
    assert "different settings (seed: " in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
