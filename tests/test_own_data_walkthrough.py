"""docs/own-data.md runs: its walkthrough block, exactly as written, on tiny sizes, must end with two results."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "own-data.md"
TINY = {"N_TRAIN": "48", "N_VAL": "30", "STEPS": "2", "BATCH": "8", "AUGS": "1"}


def walkthrough() -> str:
    """The first bash block of the page."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, f"{DOC} has no bash block"
    return blocks[0]


def test_the_walkthrough_runs_as_written(tmp_path):
    script = walkthrough()
    for name in TINY:
        assert f"{name}=${{{name}:-" in script, f"the walkthrough no longer takes {name} from the environment"
    env = {**os.environ, **TINY, "OMP_NUM_THREADS": "1", "EDGEVL_PROGRESS_SECONDS": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("plain", "reinforced"):
        record = json.loads((tmp_path / "results" / f"{name}.json").read_text())
        assert record["task"] == "zeroshot_classification" and 0.0 <= record["metrics"]["acc1"] <= 1.0
        assert record["model"] == "world-student-mci"  # taken from the run folder, not from a --model flag
        # training validation and eval score the same weights the same way
        last = [json.loads(line) for line in (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        val = [r["val/zeroshot-val-top1"] for r in last if "val/zeroshot-val-top1" in r]
        assert val and abs(val[-1] - record["metrics"]["acc1"]) < 1e-6
    assert "finished step 2/2" in done.stderr  # progress summary lines when stderr is not a terminal
    assert "mydata/reinforced: 1 shards, 48 samples checked: ok" in done.stdout
