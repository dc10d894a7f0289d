"""Two processes under torchrun (gloo on CPU) write the same shards, byte for byte, as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tiny_models import cli_args


def test_torchrun_two_processes_equal_one(tiny, reference, tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "edgevl", *cli_args(tiny, out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ref_dir, ref_manifest = reference
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shards"] == ref_manifest["shards"]
    assert manifest["totals"] == ref_manifest["totals"]
    for stats in manifest["shards"]:
        assert (out / stats["name"]).read_bytes() == (ref_dir / stats["name"]).read_bytes()
