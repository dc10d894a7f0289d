"""Captions tables: CSV / TSV / JSONL / Parquet with an image column and a caption column.

Column names default to open_clip's `filepath` / `title`. Relative image paths resolve against `images`
when given, else against the table's own folder. The image column may also hold encoded image bytes (or a
`{"bytes": ...}` struct, as Hugging Face parquet exports do); the caption column a string or a list.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgevl.data.readers.base import MapReader, Sample, SkipSample, fill_captions, open_image
from edgevl.errors import ConfigError, DataError

TABLE_FORMATS = ("csv", "tsv", "jsonl", "parquet")
MAX_CELL_CHARS = 2**31 - 1  # the largest limit the csv module takes
BOM = b"\xef\xbb\xbf"
DEFAULT_SEPARATORS = {"csv": ",", "tsv": "\t"}


class CaptionTable(MapReader):
    """Map-style image-caption pairs, one per table row (rows with unusable captions are skipped on read)."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fmt: str | None = None,
        img_key: str = "filepath",
        caption_key: str = "title",
        key_col: str | None = None,
        sep: str | None = None,
        images: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self.source = str(self.path)
        self.fmt = fmt or self.path.suffix.lstrip(".").lower()
        if self.fmt not in TABLE_FORMATS:
            raise ConfigError(f"unknown table format {self.fmt!r} for {self.path}; choose from {TABLE_FORMATS}")
        if not self.path.is_file():
            raise DataError(f"captions table not found: {self.path}")
        self.root = Path(images) if images is not None else self.path.parent
        self.columns = [c for c in (img_key, caption_key, key_col) if c]
        rows = self._read_rows(sep)
        self.items = [self._item(n, row, img_key, caption_key, key_col) for n, row in enumerate(rows)]

    def _read_rows(self, sep: str | None) -> list[dict]:
        if self.fmt == "parquet":
            return self._read_parquet()
        if self.fmt == "jsonl":
            return self._read_jsonl()
        delimiter = sep if sep is not None else DEFAULT_SEPARATORS[self.fmt]
        with open(self.path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
            lines = list(fh)
        limit = csv.field_size_limit(MAX_CELL_CHARS)  # the default (131,072) would fail a whole table on one long cell
        try:
            records = self._csv_records(lines, delimiter)
            header = next(records, (0, []))[1]
            self._check_columns(header)
            return [_as_row(header, cells) for _, cells in records]
        finally:
            csv.field_size_limit(limit)

    def _csv_records(self, lines: list[str], delimiter: str) -> Iterator[tuple[int, list[str]]]:
        """(first line number, cells) of every record the csv module can parse; any other is a `bad_row` skip.

        A record it cannot parse is skipped and reading goes on. A stray quote would make every line up to the
        next quote (or the end of the file) part of one cell. So a record that spans several lines is kept only
        when it is correctly quoted (a real multi-line caption); otherwise its first line is a `bad_row` and
        reading goes on from the next line, so the rows behind a stray quote are not lost.
        """
        start = 0
        while start < len(lines):
            reader = csv.reader(lines[start:], delimiter=delimiter)
            end = 0
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    self.skip_log.skip(f"line {start + reader.line_num}", "bad_row", f"unparsable row ({exc})",
                                       self.source)
                    end = reader.line_num
                    continue
                begin, end = end, reader.line_num
                if end - begin > 1 and not _well_formed(lines[start + begin:start + end], delimiter):
                    self.skip_log.skip(f"line {start + begin + 1}", "bad_row",
                                       "a quote opened here does not close properly", self.source)
                    start += begin + 1
                    break
                yield start + begin + 1, cells

    def _read_parquet(self) -> list[dict]:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError("reading parquet tables needs pyarrow: pip install 'edgevl[parquet]'") from None
        try:
            schema = pq.read_schema(self.path)
            self._check_columns(schema.names)
            return pq.read_table(self.path, columns=self.columns).to_pylist()
        except (OSError, ValueError) as exc:  # pyarrow: ArrowInvalid is a ValueError
            raise DataError(f"cannot read parquet table {self.path}: {exc}") from exc

    def _read_jsonl(self) -> list[dict]:
        rows: list[dict] = []
        with open(self.path, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                if number == 1:
                    line = line.removeprefix(BOM)
                if not line.strip():
                    continue
                try:
                    row = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as exc:
                    self.skip_log.skip(f"line {number}", "bad_metadata", f"not valid JSON ({exc})", self.source)
                    continue
                if not isinstance(row, dict):
                    self.skip_log.skip(f"line {number}", "bad_metadata", "not a JSON object", self.source)
                    continue
                rows.append(row)
        if rows:
            self._check_columns(sorted(set().union(*rows)))
        return rows

    def _check_columns(self, names: list[str]) -> None:
        missing = [c for c in self.columns if c not in names]
        if missing:
            raise ConfigError(f"{self.path}: no column {missing[0]!r}; the table has {list(names)}")

    def _item(self, number: int, row: dict, img_key: str, caption_key: str, key_col: str | None) -> tuple:
        image, captions = row.get(img_key), row.get(caption_key)
        if key_col is not None:
            key = str(row.get(key_col))
        elif isinstance(image, str):
            key = image
        else:
            key = f"row {number}"
        if not isinstance(captions, list):
            captions = [captions]
        return key, image, captions, number

    def key(self, index: int) -> str:
        return self.items[index][0]

    def load(self, index: int) -> Sample:
        key, image, captions, number = self.items[index]
        sample = Sample(key=key, meta={"row": number})
        fill_captions(sample, captions, self.caption_mode, self.seed, self.epoch)
        if isinstance(image, dict):
            image = image.get("bytes") or image.get("path")
        if isinstance(image, bytes):
            sample.image = open_image(image, key, self.alpha)
        elif isinstance(image, str) and image:
            path = self.root / image
            sample.meta["path"] = str(path)
            sample.image = open_image(path, str(path), self.alpha)
        else:
            raise SkipSample("missing_file", "no image in the row")
        return sample


def _as_row(header: list[str], cells: list[str]) -> dict:
    """A record as `csv.DictReader` makes it: missing cells are None, surplus cells go under the key None."""
    row: dict = dict(zip(header, cells))
    row.update({name: None for name in header[len(cells):]})
    if len(cells) > len(header):
        row[None] = cells[len(header):]
    return row


def _well_formed(lines: list[str], delimiter: str) -> bool:
    """True when a record that spans these lines is one correctly quoted CSV record (a real multi-line cell)."""
    try:
        return len(list(csv.reader(lines, delimiter=delimiter, strict=True))) == 1
    except csv.Error:
        return False
