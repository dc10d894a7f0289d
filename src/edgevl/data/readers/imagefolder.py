"""An image folder with one sub-folder per class (`root/<class>/<image>`), for zero-shot classification.

Classes are the sub-folder names sorted alphabetically (label = position), like torchvision's ImageFolder;
files are listed recursively and sorted, and only known image suffixes are taken. The class names and prompt
templates are resolved once, here, by `edgevl.data.classnames.zeroshot_setup` (docs/eval.md), so `edgevl eval`,
training validation and `data-check` all use the same ones.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from edgevl.data.classnames import zeroshot_setup
from edgevl.data.files import IMAGE_SUFFIXES, list_image_files
from edgevl.data.readers.base import MapReader, Sample, open_image
from edgevl.errors import DataError


class ImageFolder(MapReader):
    """Map-style (image, label) samples; `classes[label]` is the folder name of a label, `zeroshot.names[label]`
    its class name, `counts[label]` its number of image files.

    `classnames` (a class-name file) and `templates` (a set name or file) override the folder's clip_benchmark
    files; `alpha` (a `MapReader` option) says how transparent images become RGB.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        classnames: str | None = None,
        templates: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.source = str(self.root)
        if not self.root.is_dir():
            raise DataError(f"image folder not found: {self.root}")
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not self.classes:
            raise DataError(f"{self.root} has no class sub-folders")
        self.counts: list[int] = []
        for label, name in enumerate(self.classes):
            files = list_image_files(self.root / name)
            self.items += [(file, label) for file in files]
            self.counts.append(len(files))
        if not self.items:
            raise DataError(f"{self.root} has no images (suffixes {sorted(IMAGE_SUFFIXES)})")
        self.zeroshot = zeroshot_setup(self.root, self.classes, classnames, templates)
        for warning in self.zeroshot.warnings:
            print(f"edgevl: warning: {warning}", file=sys.stderr)

    def key(self, index: int) -> str:
        return self.items[index][0].relative_to(self.root).as_posix()

    def load(self, index: int) -> Sample:
        file, label = self.items[index]
        key = self.key(index)
        image = open_image(file, str(file), self.alpha)
        return Sample(key=key, image=image, label=label, meta={"path": str(file), "class": self.classes[label]})

    def class_table(self) -> list[str]:
        """Lines describing the classes: where names and templates came from, then label, folder, image
        count and class name per class."""
        setup = self.zeroshot
        width = max(len("folder"), *(len(c) for c in self.classes))
        lines = [
            f"{len(self.classes)} classes in {self.root}; alpha={self.alpha}",
            f"class names: {setup.names_source}",
            f"templates: {setup.templates_source} ({len(setup.templates)})",
            f"{'label':>5}  {'folder':<{width}}  {'images':>6}  class name",
        ]
        for label, (folder, count, name) in enumerate(zip(self.classes, self.counts, setup.names)):
            lines.append(f"{label:>5}  {folder:<{width}}  {count:>6}  {name}")
        return lines
