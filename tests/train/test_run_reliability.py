"""`edgevl train` against damaged checkpoints, a full disk, a second writer and a resume with other settings."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
from test_cli_train import write_reinforced

from edgevl.cli import main
from edgevl.models.registry import add_model_config
from tiny_configs import TINY_MCI


@pytest.fixture
def run_args(tmp_path):
    config = tmp_path / "tiny-mci-reliability.json"
    config.write_text(json.dumps(TINY_MCI))
    add_model_config(config)
    spec = write_reinforced(tmp_path / "data")
    return ["train", "--model", "tiny-mci-reliability", "--train-data", spec, "--mode", "reinforced",
            "--batch-size", "4", "--steps", "2", "--warmup", "1", "--log-every", "1",
            "--logs", str(tmp_path / "runs"), "--name", "r"]


class Payload:
    """Unpickling this would create `marker`: proof that a payload ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_damaged_latest_checkpoint_is_a_one_line_error(run_args, tmp_path, capsys):
    assert main(run_args) == 0
    step = tmp_path / "runs" / "r" / "checkpoints" / "step_2"
    resume = [*run_args, "--steps", "3", "--resume", "latest"]

    marker = tmp_path / "payload-ran"
    good_state = (step / "state.pt").read_bytes()
    (step / "state.pt").write_bytes(pickle.dumps({"step": Payload(str(marker))}))
    assert main(resume) == 2
    line = _one_line_error(capsys)
    assert "state.pt" in line and "refusing to load" in line and not marker.exists()

    (step / "state.pt").write_bytes(good_state)
    weights = (step / "model.safetensors").read_bytes()
    (step / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    assert main(resume) == 2
    line = _one_line_error(capsys)
    assert str(step / "model.safetensors") in line and "damaged" in line


def test_resume_with_other_settings_is_refused_before_writing(run_args, tmp_path, capsys):
    assert main(run_args) == 0
    run = tmp_path / "runs" / "r"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main([*run_args, "--lr", "0.5", "--steps", "3", "--resume", "latest"]) == 2
    line = _one_line_error(capsys)
    assert "different settings" in line and "lr: 0.001 -> 0.5" in line
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # options that only change how long or where it runs may differ
    assert main([*run_args, "--steps", "3", "--log-every", "2", "--resume", "latest"]) == 0


def test_resuming_a_finished_run_says_so(run_args, capsys):
    assert main(run_args) == 0
    capsys.readouterr()
    assert main([*run_args, "--resume", "latest"]) == 0
    assert "already finished at step 2 of 2" in capsys.readouterr().err


def test_full_disk_at_the_first_checkpoint_leaves_no_temporary_folder(run_args, tmp_path):
    # RLIMIT_FSIZE makes every write past 8 KiB fail with EFBIG, as a full disk fails with ENOSPC
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from edgevl.cli import main
        from edgevl.models.registry import add_model_config
        add_model_config({str(tmp_path / "tiny-mci-reliability.json")!r})
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
        sys.exit(main({run_args!r}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "could not write checkpoint step_" in done.stderr
    checkpoints = tmp_path / "runs" / "r" / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] == []
    assert not (tmp_path / "runs" / "r" / ".edgevl.lock").exists()


def test_a_second_writer_fails_at_once_naming_the_holder(run_args, tmp_path, capsys, lock_holder):
    run = tmp_path / "runs" / "r"
    with lock_holder(run) as pid:
        assert main(run_args) == 4
        line = _one_line_error(capsys)
        assert f"in use by PID {pid} (train" in line
        assert not (run / "params.json").exists()
    assert main(run_args) == 0  # a lock left by a killed process is stale: the next run takes it over
    assert "no longer running; taking it over" in capsys.readouterr().err


def test_a_damaged_first_reinforced_sample_is_one_counted_skip(run_args, tmp_path, capsys):
    import io
    import tarfile

    from edgevl.data.readers import merge_skip_logs

    shard = tmp_path / "data" / "shard-0.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for info, data in members:
            if info.name == "s000.npz":
                data = pickle.dumps(Payload(str(tmp_path / "payload-ran")))
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert main(run_args) == 0, capsys.readouterr().err
    assert merge_skip_logs(tmp_path / "runs" / "r" / "skips")["bad_embeddings"] >= 1
    assert not (tmp_path / "payload-ran").exists()
