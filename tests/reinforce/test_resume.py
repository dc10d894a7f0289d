"""A run SIGKILLed mid-shard and restarted: finished shards are kept as they are, partial ones are redone, and
the result equals an uninterrupted run with exact sample accounting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tiny_models import cli_args

from edgevl.reinforce.verify import verify


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "1", "RANK": "0"}


def test_kill_mid_shard_then_resume(tiny, reference, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "edgevl", *cli_args(tiny, out)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first_done, second_partial = out / "_state" / "00000000.json", out / ".00000001.tar.tmp"
    deadline = time.monotonic() + 120
    while not (first_done.exists() and second_partial.exists()):
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "the run did not reach shard 1"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "00000001.tar").exists() and not (out / "manifest.json").exists()
    kept = (out / "00000000.tar").stat()

    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "wrote 24 samples in 3 shards" in done.stdout and "skipped 1 of 25 input samples" in done.stdout
    again = (out / "00000000.tar").stat()
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert not list(out.glob(".*.tmp"))

    ref_dir, ref_manifest = reference
    for name in ("00000000.tar", "00000001.tar", "00000002.tar"):
        assert (out / name).read_bytes() == (ref_dir / name).read_bytes(), name
    report = verify(out)
    assert report.ok, report.problems
    assert report.samples == 24


def test_finished_run_is_not_redone(tiny, reference, tmp_path):
    import shutil

    ref_dir, _ = reference
    out = tmp_path / "copy"
    shutil.copytree(ref_dir, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    done = subprocess.run([sys.executable, "-m", "edgevl", *cli_args(tiny, out)], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == before
