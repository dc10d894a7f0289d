"""`edgevl index`: incremental runs, skip reasons, decoding (EXIF, GIF, draft mode), model and version changes."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
from PIL import Image

from edgevl.app.catalog import Catalog
from edgevl.app.engine import Engine, ModelSpec
from edgevl.app.indexer import index_folder
from edgevl.app.scan import open_photo, walk
from edgevl.cli import main
from edgevl.data.world import generate


def _png(index: int, size: int = 48) -> bytes:
    buf = io.BytesIO()
    generate(index, "val", size=size).image.save(buf, format="PNG")
    return buf.getvalue()


def _folder(root: Path, n: int = 6) -> Path:
    for i in range(n):
        (root / f"album{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"album{i % 2}" / f"img{i}.png").write_bytes(_png(i))
    return root


def _index(db: Path, engine: Engine, folder: Path):
    catalog = Catalog(db)
    try:
        return index_folder(catalog, engine, folder, batch_size=4, progress=False)
    finally:
        catalog.close()


def _rows(db: Path) -> dict[str, tuple]:
    with sqlite3.connect(db) as con:
        return {r[0]: r[1:] for r in con.execute("SELECT path, size, mtime_ns, sha256, embedding, tags FROM images")}


def test_rerun_indexes_only_new_and_changed_files_and_drops_deleted(tmp_path: Path, world_engine: Engine) -> None:
    folder, db = _folder(tmp_path / "photos"), tmp_path / "photos.db"
    first = _index(db, world_engine, folder)
    assert (first.added, first.updated, first.deleted, first.skipped) == (6, 0, 0, [])
    before = _rows(db)
    again = _index(db, world_engine, folder)
    assert (again.added, again.updated, again.unchanged, again.deleted) == (0, 0, 6, 0)
    assert _rows(db) == before
    (folder / "album0" / "img0.png").write_bytes(_png(50))  # changed content
    (folder / "album1" / "img1.png").unlink()  # deleted
    (folder / "album1" / "new").mkdir()
    (folder / "album1" / "new" / "img9.png").write_bytes(_png(9))  # new, in a new subfolder
    touched = folder / "album0" / "img2.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))  # same bytes
    report = _index(db, world_engine, folder)
    assert (report.added, report.updated, report.touched, report.deleted, report.unchanged) == (1, 1, 1, 1, 3)
    after = _rows(db)
    assert set(after) == {str(p.resolve()) for p in folder.rglob("*.png")}
    changed = str((folder / "album0" / "img0.png").resolve())
    assert after[changed][2] != before[changed][2] and after[changed][3] != before[changed][3]
    kept = str(touched.resolve())
    assert after[kept][3] == before[kept][3] and after[kept][1] == touched.stat().st_mtime_ns
    assert "indexed 1 new and 1 changed images, 1 removed, 4 unchanged" in report.summary()


def test_bad_files_are_skipped_counted_and_listed_never_fatal(tmp_path: Path, world_engine: Engine) -> None:
    folder, db = _folder(tmp_path / "photos", 2), tmp_path / "photos.db"
    good = _png(3)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "corrupt.png").write_bytes(good[:60] + bytes(b ^ 0x5A for b in good[60:-12]) + good[-12:])
    (folder / "notes.jpg").write_text("not a picture")
    (folder / "readme.txt").write_text("ignored: not an image suffix")
    (folder / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    outside = tmp_path / "outside.png"
    outside.write_bytes(good)
    (folder / "link-out.png").symlink_to(outside)
    (folder / "link-in.png").symlink_to(folder / "album0" / "img0.png")
    expected = {"empty.jpg": "empty", "truncated.png": "corrupt", "corrupt.png": "corrupt",
                "notes.jpg": "not_an_image", "dangling.png": "unreadable", "link-out.png": "outside_root"}
    locked = folder / "locked.png"
    if os.geteuid() != 0:  # root reads mode-000 files, so this case only runs as a normal user
        locked.write_bytes(good)
        locked.chmod(0)
        expected["locked.png"] = "unreadable"
    report = _index(db, world_engine, folder)
    assert {Path(s.path).name: s.kind for s in report.skipped} == expected
    assert report.added == 3 and all(s.reason for s in report.skipped)  # two images and the link inside
    assert "skipped" in report.summary() and "2 corrupt" in report.summary()
    rerun = _index(db, world_engine, folder)  # still listed, not decoded again
    assert {Path(s.path).name for s in rerun.skipped} == set(expected) and rerun.added == 0
    (folder / "empty.jpg").write_bytes(good)  # fixed: indexed on the next run
    fixed = _index(db, world_engine, folder)
    assert fixed.added == 1 and "empty.jpg" not in {Path(s.path).name for s in fixed.skipped}


def test_exif_orientation_gif_first_frame_and_draft_mode(tmp_path: Path) -> None:
    upright = Image.new("RGB", (40, 20), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    img, size = open_photo(buf.getvalue(), "rotated.jpg", 20)
    assert size == (40, 20) and img.size == (40, 20)
    assert img.getpixel((5, 10))[0] > 200 and img.getpixel((35, 10))[2] > 200

    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    gif, _ = open_photo(buf.getvalue(), "anim.gif", 8)
    assert gif.mode == "RGB" and gif.getpixel((8, 8))[0] > 200

    buf = io.BytesIO()
    Image.new("RGB", (2000, 1500), (10, 200, 10)).save(buf, format="JPEG", quality=80)
    big, size = open_photo(buf.getvalue(), "big.jpg", 224)
    assert size == (2000, 1500) and big.size == (500, 375)  # decoded at 1/4 scale, short side still >= 224


def test_walk_skips_hidden_and_sorts(tmp_path: Path) -> None:
    _folder(tmp_path / "p", 3)
    (tmp_path / "p" / ".thumbnails").mkdir()
    (tmp_path / "p" / ".thumbnails" / "x.png").write_bytes(_png(1))
    (tmp_path / "p" / ".hidden.png").write_bytes(_png(1))
    files, refused = walk(tmp_path / "p")
    assert [Path(f.path).name for f in files] == ["img0.png", "img2.png", "img1.png"] and not refused


def test_other_model_or_older_edgevl_reindexes_from_scratch(tmp_path: Path, world_engine: Engine) -> None:
    folder, db = _folder(tmp_path / "photos", 3), tmp_path / "photos.db"
    _index(db, world_engine, folder)
    with sqlite3.connect(db) as con:  # pretend an older edgevl wrote it
        fp = json.loads(con.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()[0])
        con.execute("UPDATE meta SET value = ? WHERE key = 'fingerprint'", (json.dumps({**fp, "edgevl": "0.0.1"}),))
    report = _index(db, world_engine, folder)
    assert report.reset_reason and "edgevl '0.0.1'" in report.reset_reason and report.added == 3

    other = Engine(ModelSpec(model="world-vit"), captions=False)
    report = _index(db, other, folder)
    assert "world:teacher-vit" in (report.reset_reason or "") and report.added == 3
    catalog = Catalog(db)
    _, vectors = catalog.vectors()
    assert vectors.shape == (3, other.dim) and catalog.meta("fingerprint")["model"] == "world:teacher-vit"
    catalog.close()


def test_a_new_label_file_retags_from_stored_embeddings(tmp_path: Path, world_engine: Engine) -> None:
    folder, db = _folder(tmp_path / "photos", 3), tmp_path / "photos.db"
    _index(db, world_engine, folder)
    labels = tmp_path / "labels.txt"
    labels.write_text("# my labels\nred shape\nblue shape\n")
    engine = Engine(ModelSpec(labels=str(labels)), captions=True)
    engine.model, engine.captioner = world_engine.model, world_engine.captioner
    report = _index(db, engine, folder)
    assert report.retagged == 3 and report.added == 0
    tags = [json.loads(t) for (t,) in sqlite3.connect(db).execute("SELECT tags FROM images")]
    assert all({label for label, _ in t} == {"red shape", "blue shape"} for t in tags)


def test_cli_index_and_search_world_folder(tmp_path: Path, world_photos: Path, capsys) -> None:
    small = tmp_path / "small"
    shutil.copytree(world_photos / "2019" / "00-beach", small / "beach")
    db = tmp_path / "db" / "photos.db"
    assert main(["index", str(small), "--db", str(db), "--quiet", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "indexed 50 new" in out and "skipped" in out
    assert main(["search", "a red star", "--db", str(db), "-k", "3", "--open"]) == 0
    paths = capsys.readouterr().out.split()
    assert len(paths) == 3 and all(Path(p).is_file() and str(small.resolve()) in p for p in paths)
    assert main(["search", "a red star", "--db", str(db), "-k", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert {"path", "caption", "tags", "width", "height", "sha256"} <= set(results[0])
    assert main(["index", str(small), "--db", str(small / "inside.db")]) == 2
    assert "never writes into photo folders" in capsys.readouterr().err
    assert not np.any([p.name.startswith("inside") for p in small.iterdir()])


def test_every_photo_format_decodes(tmp_path: Path) -> None:
    from edgevl.app.scan import Decoded, DecodeJob, decode, heif_available
    from edgevl.data.transforms import PreprocessCfg

    formats = {"a.jpg": "JPEG", "b.png": "PNG", "c.webp": "WEBP", "d.gif": "GIF", "e.tif": "TIFF", "f.bmp": "BMP",
               "g.avif": "AVIF"}
    if heif_available():
        formats["h.HEIC"] = "HEIF"
    for name, fmt in formats.items():
        Image.new("RGB", (40, 30), (200, 20, 20)).save(tmp_path / name, format=fmt)
    files, _ = walk(tmp_path)
    assert sorted(Path(f.path).name for f in files) == sorted(formats)
    for f in files:
        out = decode(DecodeJob(f, PreprocessCfg(size=16)))
        assert isinstance(out, Decoded) and (out.width, out.height) == (40, 30), f.path
        assert out.pixels is not None and tuple(out.pixels.shape) == (3, 16, 16)


def test_a_captioner_folder_captions_like_the_shipped_world_captioner(world_engine: Engine) -> None:
    """--captioner FOLDER loads a LightCap model folder through the public API (here the shipped world one)."""
    from edgevl.world_models import pretrained_dir

    folder = Engine(ModelSpec(captioner=str(pretrained_dir("captioner"))))
    images = [generate(i, "val", size=64).image for i in range(3)]
    assert folder.captioner_id.startswith(str(pretrained_dir("captioner")))
    assert folder.captions(images) == world_engine.captions(images)
    assert all(folder.captions(images))
