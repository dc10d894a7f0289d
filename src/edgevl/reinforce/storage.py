"""Byte-reproducible output members: tar shards and `npz` / `pth.gz` embedding blobs.

Everything here writes the same bytes for the same content (fixed tar mtimes/owners, fixed zip timestamps, gzip
without a timestamp), so two runs with different process counts can be compared file for file.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from edgevl.errors import ConfigError

STORAGE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
EMBEDDING_FORMATS = ("npz", "pth.gz")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def check_storage(dtype: str, fmt: str | None) -> str:
    """The embedding member format for a storage dtype: npz for fp16/fp32, pth.gz for bf16 (npz has no bf16)."""
    if dtype not in STORAGE_DTYPES:
        raise ConfigError(f"unknown embedding dtype {dtype!r}; choose from {list(STORAGE_DTYPES)}")
    fmt = fmt or ("pth.gz" if dtype == "bf16" else "npz")
    if fmt not in EMBEDDING_FORMATS:
        raise ConfigError(f"unknown embedding format {fmt!r}; choose from {list(EMBEDDING_FORMATS)}")
    if fmt == "npz" and dtype == "bf16":
        raise ConfigError("npz cannot hold bfloat16 embeddings; use --format pth.gz with --dtype bf16")
    return fmt


def embedding_blob(tensors: dict[str, torch.Tensor], dtype: str, fmt: str) -> bytes:
    """Serialize float tensors at storage `dtype` as an uncompressed npz or a gzipped torch dict."""
    cast = {name: t.detach().to("cpu", STORAGE_DTYPES[dtype]).contiguous() for name, t in tensors.items()}
    if fmt == "pth.gz":
        buf = io.BytesIO()
        torch.save(cast, buf)
        return gzip.compress(buf.getvalue(), compresslevel=6, mtime=0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, tensor in cast.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            with archive.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, tensor.numpy(), allow_pickle=False)
    return buf.getvalue()


def temp_name(path: Path) -> Path:
    """The in-progress name of an output file: hidden, same folder, so `os.replace` is atomic."""
    return path.with_name(f".{path.name}.tmp")


class ShardWriter:
    """Writes a webdataset tar to a temporary name; `commit()` renames it into place, `abort()` removes it.

    Members get mode 0644, uid/gid 0, no owner names and mtime 0, so the bytes depend only on the content.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.tmp = temp_name(self.path)
        self._file: BinaryIO = open(self.tmp, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.GNU_FORMAT)
        self.samples = 0

    def add(self, key: str, members: dict[str, bytes]) -> None:
        """Append one sample: `<key>.<suffix>` for each (suffix, bytes) in `members`, in the given order."""
        for suffix, data in members.items():
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.samples += 1

    def commit(self) -> None:
        """Finish the tar, flush it to disk and move it to its final name."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop the partial shard."""
        self._tar.close()
        self._file.close()
        self.tmp.unlink(missing_ok=True)

