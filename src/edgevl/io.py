"""Crash-safe file writes and file hashing shared by every writer in edgevl.

A file written here either keeps its old content or gets the complete new one: the data goes to a hidden
temporary file in the same folder (`.<name>.<random>.tmp`, so `os.replace` stays on one file system),
is flushed to disk, then renamed over the target. The temporary file is removed when writing fails.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def _temp_path(path: Path) -> Path:
    """A fresh hidden name next to `path`, created empty with the usual (umask-based) permissions."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's data, or a folder's entries (after renames in it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call `writer(tmp)` to fill a temporary file next to `path`, fsync it and move it onto `path`.

    For writers that take a file name (numpy, safetensors, onnx, pyarrow); returns `path`.
    """
    path = Path(path)
    tmp = _temp_path(path)
    mode = tmp.stat().st_mode & 0o777  # the umask-based mode; some writers (safetensors) recreate the file as 0600
    try:
        writer(str(tmp))
        os.chmod(tmp, mode)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace `path` with `data`."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically replace `path` with `text` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks so large weights never sit in memory at once."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
