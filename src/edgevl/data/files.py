"""Which files count as images, and how image arguments (files and folders) become one sorted list of files.

Shared by `edgevl embed/classify/caption` and the image-folder reader so every command sees the same images.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from edgevl.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm"})


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files under `folder`, recursively, by known suffix (any case), sorted by path."""
    return sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())


def expand_image_paths(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given (in order, any suffix, so a bad file is reported by the loader); folders expanded by
    `list_image_files`. Raises `DataError` when nothing is left."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        paths.extend(list_image_files(p) if p.is_dir() else [p])
    if not paths:
        raise DataError("no images given (folders contained no image files)")
    return paths
