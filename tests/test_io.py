"""edgevl.io: atomic writes leave either the old or the complete new file, never temporary files; sha256_file."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest
import torch

from edgevl.io import atomic_write, atomic_write_bytes, atomic_write_text, sha256_file


def test_atomic_write_bytes_and_text_content(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\xffdata")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\xffdata"
    assert atomic_write_text(tmp_path / "b.txt", "héllo\n") == tmp_path / "b.txt"
    assert (tmp_path / "b.txt").read_bytes() == "héllo\n".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt"]


def test_atomic_write_replaces_existing_file(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_write_uses_umask_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644


def test_writers_that_recreate_the_file_still_get_umask_permissions(tmp_path):
    from safetensors.torch import save_file

    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "w.safetensors", lambda tmp: save_file({"a": torch.zeros(2)}, tmp))
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == 0o644


def test_writer_gets_a_temporary_name_in_the_same_folder(tmp_path):
    seen = []

    def writer(tmp: str) -> None:
        seen.append(tmp)
        with open(tmp, "wb") as fh:
            fh.write(b"payload")

    atomic_write(tmp_path / "w.bin", writer)
    assert os.path.dirname(seen[0]) == str(tmp_path)
    assert os.path.basename(seen[0]).startswith(".w.bin.") and seen[0].endswith(".tmp")
    assert (tmp_path / "w.bin").read_bytes() == b"payload"
    assert not os.path.exists(seen[0])


@pytest.mark.parametrize("existing", [False, True])
def test_failing_writer_leaves_no_temp_and_keeps_the_old_file(tmp_path, existing):
    path = tmp_path / "data.npy"
    if existing:
        path.write_bytes(b"previous content")

    def writer(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, writer)
    assert [p.name for p in tmp_path.iterdir()] == (["data.npy"] if existing else [])
    if existing:
        assert path.read_bytes() == b"previous content"


def test_interrupt_mid_write_is_cleaned_up_too(tmp_path):
    def writer(tmp: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x", writer)
    assert list(tmp_path.iterdir()) == []


def test_sha256_file_matches_hashlib_across_chunks(tmp_path):
    data = os.urandom(3 * 1024 + 17)
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob", chunk=1024) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
