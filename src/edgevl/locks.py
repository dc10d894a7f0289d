"""Output folders are owned: one writer at a time, through an advisory lock file in the folder.

`reinforce run`, `train`, `train-captioner`, `world pretrain`, `export` and `compile` hold `<out>/.edgevl.lock`
(an exclusive `flock`, with the holder's PID, host and command inside) for as long as they write, and remove it
when done. The kernel drops the lock when the process exits in any way, `kill -9` included, so a lock file
left behind by a dead process is stale by construction: the next writer takes it over and says so. A second
live writer fails at once with `FolderLockedError` naming the holder's PID.
Under torchrun only rank 0 takes the lock; the other ranks write only where rank 0 tells them to.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from edgevl.errors import FolderLockedError

LOCK_NAME = ".edgevl.lock"
_HELD: set[Path] = set()  # folders this process holds (a nested writer of the same folder shares the lock)


def _holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, command: str, enabled: bool = True) -> Iterator[Path | None]:
    """Hold the exclusive lock of output folder `folder` (created if needed, and removed again if it is still
    empty at the end) while the `with` body writes.

    Raises `FolderLockedError` at once when another live process holds it. `enabled=False` (e.g. on ranks
    other than 0) makes this a no-op.
    """
    folder = Path(folder)
    if not enabled or folder.resolve() in _HELD:
        yield None
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    path = folder / LOCK_NAME
    fd = _acquire(path, folder)
    try:
        previous = _holder(fd)
        pid = previous.get("pid")
        if isinstance(pid, int) and pid != os.getpid():
            if previous.get("host") != socket.gethostname() or not _alive(pid):
                print(f"edgevl: note: {folder} was left locked by PID {pid} ({previous.get('command')}), "
                      "which is no longer running; taking it over", file=sys.stderr)
        _write(fd, {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()})
        _HELD.add(key)
        try:
            yield path
        finally:
            _HELD.discard(key)
            with contextlib.suppress(OSError):
                path.unlink()  # while still locked: a process waiting on this inode sees it vanish and retries
                if created:
                    folder.rmdir()  # a run that failed before writing anything leaves no empty folder behind
    finally:
        os.close(fd)


def _acquire(path: Path, folder: Path) -> int:
    """An open, exclusively flock-ed descriptor of the lock file that is still linked at `path`."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            who = f"PID {holder.get('pid', '?')} ({holder.get('command', 'another edgevl command')}"
            who += f" on {holder['host']})" if holder.get("host") else ")"
            raise FolderLockedError(f"{folder} is in use by {who}; wait for it to finish or use another "
                                    "output folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder released and removed this file between our open and our lock: try again


def _write(fd: int, record: dict) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(record).encode("utf-8"))
