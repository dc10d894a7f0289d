"""Generators for file-based datasets: damaged images (in an image folder or a CSV table) and damaged tables."""

from __future__ import annotations

import json
import random
from pathlib import Path

from .common import Case, Verdicts, damaged_image, image_bytes

LONG_CAPTION = 131_073  # one more than the csv module's default field size limit


# ------------------------------------------------------------------------------------------------ images
def image_case(rng: random.Random, tmp: Path) -> Case:
    """An image folder or a CSV table over 3-12 images, some damaged, some valid in unusual modes or names."""
    container = rng.choice(["folder", "csv"])
    root = tmp / "images"
    verdicts = Verdicts()
    rows: list[tuple[str, str]] = []
    classes = [f"class_{c}" for c in range(rng.randint(1, 3))]
    for i in range(rng.randint(3, 12)):
        cls = rng.choice(classes)
        roll = rng.random()
        if roll < 0.35:
            fmt = rng.choice(["PNG", "JPEG"])
            data, verdict, note, ext = image_bytes(rng, fmt), "good", "good", fmt.lower()
        elif roll < 0.45:  # the suffix lies about the format: the loader sniffs the content
            fmt = rng.choice(["PNG", "JPEG"])
            data, verdict, note = image_bytes(rng, fmt), "good", f"{fmt} named by the wrong suffix"
            ext = "jpg" if fmt == "PNG" else "png"
        elif roll < 0.5 and container == "csv":
            rel = f"{cls}/missing_{i}.png"
            verdicts.add(rel, "bad", f"{i} missing file")
            rows.append((rel, f"caption {i}"))
            continue
        else:
            data, verdict, note = damaged_image(rng)
            ext = rng.choice(["png", "jpg", "webp", "gif", "bmp", "tif"] if verdict == "good" else ["png", "jpg"])
        stem = rng.choice([f"img_{i}"] * 6 + [f"ünï cødé {i}", f"with, comma {i}", f"UPPER_{i}"])
        rel = f"{cls}/{stem}.{ext.upper() if stem.startswith('UPPER') else ext}"
        (root / cls).mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        verdicts.add(rel, verdict, f"{i} {note}")
        rows.append((rel, f"caption {i}"))
    if rng.random() < 0.3:  # a non-image file in a class folder: ignored by the folder reader
        (root / classes[0]).mkdir(parents=True, exist_ok=True)
        (root / classes[0] / "notes.txt").write_text("not an image\n")
    if container == "folder":
        spec = f"folder:{root}"
    else:
        lines = ["filepath,title"] + [f"{_csv_field(rel, ',')},{caption}" for rel, caption in rows]
        (root / "table.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        spec = f"csv:{root}/table.csv"
    return Case("dataset", spec, verdicts.good, verdicts.describe(f"image/{container}"),
                optional_keys=verdicts.optional, min_skips=verdicts.bad)


# ------------------------------------------------------------------------------------------------ tables
def _csv_field(text: str, sep: str) -> str:
    if any(ch in text for ch in (sep, '"', "\n", "\r")) or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def _table_row(rng: random.Random, fmt: str, i: int, root: Path, verdicts: Verdicts) -> bytes:
    """One data row (bytes, newline included) with a random damage or none; writes its image file."""
    rel = f"imgs/r{i}.png"
    caption: object = f"caption number {i}"
    image: object = rel
    verdict, note = "good", "good"
    extra: dict = {}
    write_image = True
    choices = ["good"] * 6 + ["long", "quoted", "missing_file", "empty", "latin1", "nul", "missing_col",
                              "extra_col", "empty_path"]
    if fmt == "jsonl":
        choices += ["caption_type", "caption_type", "caption_list", "caption_mixed", "path_type", "not_json",
                    "not_object", "raw_nul", "not_utf8_line"]
    else:
        choices += ["unbalanced", "stray_quote"]
    damage = rng.choice(choices)
    sep = "\t" if fmt == "tsv" else ","
    if damage == "long":
        caption, note = "x" * rng.randint(LONG_CAPTION, LONG_CAPTION + 50_000), "caption over 131072 chars"
    elif damage == "quoted":
        caption, note = f'a "quoted", multi\nline{sep}caption {i}', "quoted caption with newline"
    elif damage == "missing_file":
        write_image, verdict, note = False, "bad", "missing image file"
    elif damage == "empty":
        caption, verdict, note = rng.choice(["", "   "]), "bad", "empty caption"
    elif damage == "nul":
        caption, verdict, note = f"cap\x00tion {i}", "optional", "NUL char in caption"
    elif damage == "extra_col" and fmt == "jsonl":
        extra, note = {"other": [1, 2], "more": None}, "extra keys"
    elif damage == "caption_type":
        caption = rng.choice([123, None, {}, [1, 2], True, 1.5, []])
        verdict, note = "bad", f"caption {json.dumps(caption)}"
    elif damage == "caption_list":
        caption, note = [f"first {i}", f"second {i}"], "caption list"
    elif damage == "caption_mixed":
        caption, verdict, note = [f"ok {i}", 7, None], "optional", "mixed caption list"
    elif damage == "path_type":
        image = rng.choice([123, None, [rel], {"x": 1}, True])
        verdict, note = "bad", f"filepath {json.dumps(image)}"
    elif damage == "empty_path":
        image, verdict, note = "", "bad", "empty filepath"
    elif damage == "stray_quote":
        caption, note = f'a "stray" quote {i}', "stray quote inside field"
    elif damage in ("latin1", "missing_col", "unbalanced", "extra_col", "not_json", "not_object", "raw_nul",
                    "not_utf8_line"):
        # a CSV row with a surplus field or an unterminated quote may be read leniently or skipped: either is fine
        verdict = "optional" if damage in ("extra_col", "unbalanced") else "bad"
        note = damage.replace("_", " ")
    if write_image:
        (root / "imgs").mkdir(exist_ok=True)
        (root / rel).write_bytes(image_bytes(rng))
    verdicts.add(image if isinstance(image, str) and image else f"row {i}", verdict, f"r{i} {note}")

    if fmt == "jsonl":
        if damage == "not_json":
            return b'{"filepath": "' + rel.encode() + b'", "title": \n'
        if damage == "not_object":
            return json.dumps([rel, caption]).encode() + b"\n"
        if damage == "raw_nul":
            return b'{"filepath": "' + rel.encode() + b'", "title": "nul\x00byte"}\n'
        if damage in ("latin1", "not_utf8_line"):
            return b'{"filepath": "' + rel.encode() + b'", "title": "caf\xe9"}\n'
        row = {"filepath": image, **({} if damage == "missing_col" else {"title": caption}), **extra}
        return json.dumps(row, ensure_ascii=rng.random() < 0.5).encode("utf-8") + b"\n"
    if damage == "latin1":
        return (_csv_field(rel, sep) + sep).encode() + f"caf\xe9 {i}".encode("latin-1") + b"\n"
    if damage == "missing_col":
        return _csv_field(rel, sep).encode() + b"\n"
    if damage == "extra_col":
        return sep.join([_csv_field(rel, sep), str(caption), "surplus"]).encode() + b"\n"
    if damage == "unbalanced":
        return (_csv_field(rel, sep) + sep + f'"unterminated caption {i}').encode() + b"\n"
    if damage == "stray_quote":
        return (_csv_field(rel, sep) + sep + str(caption)).encode() + b"\n"
    return (_csv_field(str(image), sep) + sep + _csv_field(str(caption), sep)).encode("utf-8") + b"\n"


def _has_caption_column(fmt: str, body: bytes) -> bool:
    """Whether any row of a JSONL body (or the header of a CSV/TSV body) names the caption column."""
    if fmt != "jsonl":
        return b"title" in body.split(b"\n", 1)[0]
    for line in body.splitlines():
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(row, dict) and "title" in row:
            return True
    return False


def table_case(rng: random.Random, tmp: Path) -> Case:
    """A CSV, TSV or JSONL captions table of 3-12 rows with damaged rows, blank lines, BOM, CRLF."""
    fmt = rng.choice(["csv", "tsv", "jsonl"])
    root = tmp / "table"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"captions.{fmt}"
    verdicts = Verdicts()
    head = [f"table/{fmt}"]
    body = b"" if fmt == "jsonl" else ("\t" if fmt == "tsv" else ",").join(["filepath", "title"]).encode() + b"\n"
    rows = rng.randint(3, 12)
    for i in range(rows):
        if rng.random() < 0.1:
            body += b"\n" if fmt != "jsonl" else rng.choice([b"\n", b"   \n"])
            verdicts.notes.append("blank line")
        body += _table_row(rng, fmt, i, root, verdicts)
    if rng.random() < 0.15:
        body = b"\xef\xbb\xbf" + body
        head.append("BOM")
    if rng.random() < 0.15:
        body = body.replace(b"\n", b"\r\n")
        head.append("CRLF")
    fatal = rng.random()
    if fatal < 0.03:  # the table does not exist: a whole-dataset error
        path = root / f"does_not_exist.{fmt}"
        verdicts = Verdicts()
        head.append("table missing")
    elif fatal < 0.06:  # no caption column at all, or an empty file: every row is unusable
        body = b"" if rng.random() < 0.5 else body.replace(b"title", b"caption")
        verdicts = Verdicts()
        verdicts.bad = rows if body else 0
        head.append("no caption column or empty file")
    if "table missing" not in head:
        path.write_bytes(body)
    fatal_ok = len(head) > 1 and head[-1] in ("table missing", "no caption column or empty file")
    fatal_ok = fatal_ok or not _has_caption_column(fmt, body)
    return Case("dataset", f"{fmt}:{path}", verdicts.good, verdicts.describe(" ".join(head)),
                optional_keys=verdicts.optional, min_skips=verdicts.bad, fatal_ok=fatal_ok)
