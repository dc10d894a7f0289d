"""Bad data never stops a reader: every kind is skipped, counted and logged; strict mode raises DataError.

Includes hypothesis fuzzing of `load_image` and of the tar reader with generated garbage.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from edgevl.data.readers import (
    Sample,
    SkipLog,
    WebDatasetReader,
    collate_samples,
    merge_skip_logs,
    open_dataset,
)
from edgevl.data.readers.base import format_skip_summary
from edgevl.data.transforms import load_image
from edgevl.errors import DataError, ImageLoadError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (24, 16)) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


PNG, JPEG = image_bytes("PNG"), image_bytes("JPEG")


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


GOOD = [("good0.png", PNG), ("good0.txt", b"a good caption"), ("good1.jpg", JPEG), ("good1.txt", b"another")]
BAD = [
    ("zero.jpg", b""), ("zero.txt", b"zero-byte image"),
    ("trunc_png.png", PNG[: len(PNG) // 2]), ("trunc_png.txt", b"truncated png"),
    ("trunc_jpg.jpg", JPEG[: len(JPEG) // 2]), ("trunc_jpg.txt", b"truncated jpeg"),
    ("random.jpg", bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8))),
    ("random.txt", b"random bytes"),
    ("empty.png", PNG), ("empty.txt", b"  \n"),
    ("latin1.png", PNG), ("latin1.txt", "caf\xe9".encode("latin-1")),
    ("noimage.txt", b"caption without image"),
    ("nocaption.png", PNG),
]
EXPECTED = {"bad_image": 4, "empty_caption": 1, "bad_caption_encoding": 1, "incomplete_sample": 1,
            "missing_caption": 1}


def test_webdataset_skips_and_counts_every_bad_sample(tmp_path):
    (tmp_path / "0.tar").write_bytes(tar_bytes(GOOD[:2] + BAD + GOOD[2:]))
    logs = tmp_path / "logs"
    ds = open_dataset(f"{tmp_path}/0.tar", skip_log_dir=logs)
    assert [s.key for s in ds] == ["good0", "good1"]
    assert ds.skip_log.counts == EXPECTED
    assert merge_skip_logs(logs) == EXPECTED
    records = [json.loads(line) for f in logs.glob("skips-*.jsonl") for line in f.read_text().splitlines()]
    by_key = {r["key"]: r for r in records}
    assert by_key["latin1"]["kind"] == "bad_caption_encoding" and by_key["latin1"]["source"].endswith("0.tar")
    assert by_key["zero"]["reason"] == "file is empty"
    assert ds.skip_log.summary() == (
        "skipped 8 samples: 4 bad_image, 1 bad_caption_encoding, 1 empty_caption, 1 incomplete_sample, "
        "1 missing_caption"
    )


def test_corrupt_and_missing_shards_are_skipped(tmp_path):
    full = tar_bytes(GOOD + [("late.png", PNG), ("late.txt", b"never read")])
    with tarfile.open(fileobj=io.BytesIO(full)) as tar:
        start = tar.getmember("late.png").offset_data
    (tmp_path / "0.tar").write_bytes(full[: start + len(PNG) // 2])  # cut inside late.png
    (tmp_path / "1.tar").write_bytes(b"this is not a tar archive at all" * 40)
    (tmp_path / "3.tar").write_bytes(tar_bytes([("x.png", PNG), ("x.txt", b"fine")]))
    ds = open_dataset(f"{tmp_path}/{{0..3}}.tar")
    assert [s.key for s in ds] == ["good0", "good1", "x"]
    assert ds.skip_log.counts == {"corrupt_shard": 2, "missing_shard": 1}


def test_strict_mode_raises_data_error_naming_the_sample(tmp_path):
    (tmp_path / "0.tar").write_bytes(tar_bytes(GOOD + BAD))
    with pytest.raises(DataError, match=r"0\.tar: sample 'zero': file is empty \(bad_image\)"):
        list(open_dataset(f"{tmp_path}/0.tar", strict=True))
    loader = DataLoader(open_dataset(f"{tmp_path}/0.tar", strict=True), num_workers=1, collate_fn=collate_samples)
    with pytest.raises(DataError, match="sample 'zero'"):  # crosses the worker boundary as DataError
        list(loader)
    (tmp_path / "1.tar").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(DataError, match="corrupt_shard"):
        list(WebDatasetReader(tmp_path / "1.tar", skip_log=SkipLog(strict=True)))


def test_table_and_folder_bad_rows(tmp_path):
    (tmp_path / "ok.png").write_bytes(PNG)
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "trunc.jpg").write_bytes(JPEG[:100])
    rows = [("ok.png", b"fine"), ("missing.png", b"gone"), ("zero.png", b"empty file"), ("trunc.jpg", b"cut"),
            ("ok.png", b""), ("ok.png", b"na\xefve latin-1")]
    (tmp_path / "t.csv").write_bytes(b"filepath,title\n" + b"".join(p.encode() + b"," + c + b"\n" for p, c in rows))
    ds = open_dataset(f"{tmp_path}/t.csv")
    got = [ds[i] for i in range(len(ds))]
    assert [s.key if isinstance(s, Sample) else None for s in got] == ["ok.png"] + [None] * 5
    assert ds.skip_log.counts == {"missing_file": 1, "bad_image": 2, "empty_caption": 1,
                                  "bad_caption_encoding": 1}
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_bytes(b'{"filepath": "ok.png", "title": "x"}\n{broken\n[1, 2]\n\xff\xfe\n')
    ds = open_dataset(str(jsonl))
    assert len(ds) == 1 and ds.skip_log.counts == {"bad_metadata": 3}
    with pytest.raises(DataError, match=r"sample 'missing.png': no such file \(missing_file\)"):
        open_dataset(f"{tmp_path}/t.csv", strict=True)[1]

    (tmp_path / "folder" / "cls").mkdir(parents=True)
    (tmp_path / "folder" / "cls" / "a.png").write_bytes(PNG)
    (tmp_path / "folder" / "cls" / "b.jpg").write_bytes(b"\xff\xd8 not really")
    folder = open_dataset(f"folder:{tmp_path / 'folder'}")
    assert [s.key for s in folder] == ["cls/a.png"] and folder.skip_log.counts == {"bad_image": 1}


def test_reinforced_bad_samples(tmp_path):
    def npz(n_aug: int) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, image_emb=np.zeros((n_aug, 2), np.float32), text_emb=np.zeros((2, 2), np.float32))
        return buf.getvalue()

    paug = json.dumps({"param_aug": [[[0, 0, 8, 8], [[0, 0.0], [0, 0.0]]]] * 2}).encode()
    syn = b'{"syn_text": ["s"]}'

    def sample(key, **override):
        members = {"paug.json": paug, "syn.json": syn, "npz": npz(2)}
        members.update(override)
        return [(f"{key}.{ext}", data) for ext, data in members.items() if data is not None]

    dr = (sample("a") + sample("b", npz=b"PK\x03\x04 broken zip") + sample("c", npz=npz(3))
          + sample("d", **{"paug.json": b'{"param_aug": [["bad"]]}'}) + sample("e", **{"syn.json": b"{}"})
          + sample("f") + sample("g", **{"paug.json": b'{"param_aug": [[[50, 50, 8, 8], []]] }', "npz": npz(1)}))
    dc = [(f"{k}.png", PNG) for k in "abcdeg"] + [(f"{k}.txt", b"real") for k in "abcdeg"]
    (tmp_path / "dr.tar").write_bytes(tar_bytes(dr))
    (tmp_path / "dc.tar").write_bytes(tar_bytes(sorted(dc)))
    ds = open_dataset(f"reinforced:{tmp_path}/dr.tar?images=wds:{tmp_path}/dc.tar&size=8")
    assert [s.key for s in ds] == ["a"]
    assert ds.skip_log.counts == {"bad_embeddings": 2, "bad_metadata": 2, "missing_caption": 1, "join_miss": 1}


def test_format_skip_summary():
    assert format_skip_summary({}) == "skipped 0 samples"
    assert format_skip_summary({"bad_image": 1}) == "skipped 1 sample: 1 bad_image"


# ------------------------------------------------------------------------------------------- fuzz
def mutate(data: bytes, cut: int, at: int, patch: bytes) -> bytes:
    """Overwrite `data` at a position with `patch`, then truncate to a fraction (cut/1000) of it."""
    pos = at % max(1, len(data))
    mutated = data[:pos] + patch + data[pos + len(patch):]
    return mutated[: max(0, len(mutated) * cut // 1000)]


def check_image(data: bytes) -> None:
    try:
        img = load_image(data, name="fuzz")
    except ImageLoadError as exc:
        assert exc.source == "fuzz"
        return
    assert img.mode == "RGB" and img.width > 0 and img.height > 0


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_load_image_garbage(data):
    check_image(data)


@FUZZ
@given(st.sampled_from([PNG, JPEG, image_bytes("WEBP"), image_bytes("GIF")]), st.integers(0, 1000),
       st.integers(0, 10_000), st.binary(min_size=1, max_size=64))
def test_fuzz_load_image_damaged(data, cut, at, patch):
    check_image(mutate(data, cut, at, patch))


SHARD = tar_bytes(GOOD + [("c.webp", image_bytes("WEBP")), ("c.txt", b"c"), ("c.json", b'{"k": 1}')])


def read_all(data: bytes, strict: bool) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.tar"
        path.write_bytes(data)
        log = SkipLog(strict=strict)
        try:
            samples = list(WebDatasetReader(path, skip_log=log))
        except DataError:
            assert strict
            return []
        assert all(isinstance(s, Sample) and s.image.mode == "RGB" and s.caption for s in samples)
        assert len(samples) + sum(log.counts.values()) >= 1 or not data
        return samples


@FUZZ
@given(st.integers(0, 1000), st.integers(0, len(SHARD)), st.binary(min_size=1, max_size=600), st.booleans())
def test_fuzz_tar_reader_damaged_shard(cut, at, patch, strict):
    read_all(mutate(SHARD, cut, at, patch), strict)


@FUZZ
@given(st.binary(max_size=3000), st.booleans())
def test_fuzz_tar_reader_garbage(data, strict):
    assert read_all(data, strict) == []


def test_data_check_command(tmp_path, capsys):
    from edgevl.cli import main

    (tmp_path / "0.tar").write_bytes(tar_bytes(GOOD + BAD))
    assert main(["data-check", f"{tmp_path}/0.tar", "--show", "1", "--skip-log", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "good0\ta good caption"
    assert out[-1].startswith(f"read 2 samples from {tmp_path}/0.tar; skipped 8 samples: 4 bad_image")
    assert sum(merge_skip_logs(tmp_path / "s").values()) == 8
    assert main(["data-check", f"{tmp_path}/0.tar", "--strict"]) == 2
    assert "sample 'zero': file is empty" in capsys.readouterr().err
