"""Output-folder locks: exclusive between processes, shared within one, stale ones taken over, no litter."""

from __future__ import annotations

import json

import pytest

from edgevl.errors import FolderLockedError
from edgevl.locks import LOCK_NAME, output_lock


def test_a_nested_writer_in_the_same_process_shares_the_lock(tmp_path):
    with output_lock(tmp_path / "out", "outer") as path:
        assert path is not None and json.loads(path.read_text())["command"] == "outer"
        with output_lock(tmp_path / "out", "inner") as inner:
            assert inner is None
        assert path.exists()
    assert not (tmp_path / "out").exists()  # created for the run and still empty: removed again


def test_an_existing_folder_is_kept_and_only_the_lock_file_goes(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with output_lock(tmp_path, "export"):
        (tmp_path / "result.onnx").write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "result.onnx"]


def test_a_stale_lock_file_is_taken_over_with_a_note(tmp_path, capsys):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 2**22 + 12345, "host": "elsewhere", "command": "train"}))
    with output_lock(tmp_path, "train"):
        pass
    assert "left locked by PID 4206649 (train), which is no longer running" in capsys.readouterr().err


def test_disabled_locks_do_nothing(tmp_path):
    with output_lock(tmp_path / "rank1", "train", enabled=False) as path:
        assert path is None
    assert not (tmp_path / "rank1").exists()


def test_the_error_names_the_holder(tmp_path, lock_holder):
    with lock_holder(tmp_path, "world pretrain") as pid:
        with pytest.raises(FolderLockedError, match=f"in use by PID {pid} \\(world pretrain on "):
            with output_lock(tmp_path, "export"):
                pass


@pytest.mark.parametrize("argv", [
    ["export", "--model", "world-student-mci", "--parts", "image"],
    ["world", "pretrain", "--what", "teacher-mci", "--steps", "1"],
    ["compile", "--model", "world-student-mci", "--towers", "text"],
])
def test_every_writing_command_refuses_a_held_folder(tmp_path, capsys, lock_holder, argv):
    from edgevl.cli import main

    with lock_holder(tmp_path) as pid:
        assert main([*argv, "--out", str(tmp_path)]) == 4
        assert f"in use by PID {pid} (train" in capsys.readouterr().err
