"""Hostile inputs that once crashed a run or dropped good samples: each is now one counted skip, and no more."""

from __future__ import annotations

import gzip
import io
import json
import pickle

import numpy as np
import pytest
from test_readers_bad_data import PNG, tar_bytes

from edgevl.cli import main
from edgevl.data.readers import SkipLog, open_dataset
from edgevl.data.readers.base import MapReader, Sample, SkipSample, read_one
from edgevl.errors import ConfigError, DataError
from edgevl.reinforce.inputs import InputShards


def _pairs(keys) -> list[tuple[str, bytes]]:
    return [m for k in keys for m in ((f"{k}.png", PNG), (f"{k}.txt", f"caption of {k}".encode()))]


def test_a_duplicate_member_costs_one_sample_not_the_shard(tmp_path):
    members = _pairs(f"g{i:02d}" for i in range(20))
    members += [("a.png", PNG), ("a.txt", b"first"), ("a.txt", b"second")]
    members += _pairs(f"h{i:02d}" for i in range(24))
    (tmp_path / "s.tar").write_bytes(tar_bytes(members))
    ds = open_dataset(f"wds:{tmp_path}/s.tar")
    keys = [s.key for s in ds]
    assert len(keys) == 44 and "a" not in keys and keys[-1] == "h23"
    assert ds.skip_log.counts == {"duplicate_member": 1}
    # what `reinforce run` counts as its input: 45 samples, 44 used and 1 skipped
    log = SkipLog()
    assert len(list(InputShards(f"wds:{tmp_path}/s.tar").samples(0, log))) == 44 and sum(log.counts.values()) == 1


def test_reordered_members_and_repeated_keys_are_counted(tmp_path):
    members = _pairs(["g0"]) + [("a.png", PNG), ("b.png", PNG), ("a.txt", b"a"), ("b.txt", b"b")] + _pairs(["g1"])
    members += _pairs(["g0"])  # the same key again, later in the shard
    (tmp_path / "s.tar").write_bytes(tar_bytes(members))
    ds = open_dataset(f"wds:{tmp_path}/s.tar")
    assert [s.key for s in ds] == ["g0", "g1"]
    # a and b without captions, then their captions under keys already seen, then the second g0
    assert ds.skip_log.counts == {"missing_caption": 2, "duplicate_key": 3}


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_a_caption_cell_longer_than_the_csv_limit_is_a_caption(tmp_path, fmt):
    sep = "," if fmt == "csv" else "\t"
    (tmp_path / "a.png").write_bytes(PNG)
    long = "word " * 40_000  # 200,000 characters; the csv module's default limit is 131,072
    rows = [f"filepath{sep}title", f"a.png{sep}short", f"a.png{sep}{long}", f"a.png{sep}after"]
    (tmp_path / f"t.{fmt}").write_text("\n".join(rows) + "\n")
    ds = open_dataset(f"{fmt}:{tmp_path}/t.{fmt}")
    captions = [s.caption for s in ds]
    assert captions == ["short", long.strip(), "after"] and not ds.skip_log.counts
    assert main(["data-check", f"{fmt}:{tmp_path}/t.{fmt}"]) == 0


def test_non_text_captions_are_counted_skips(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(PNG)
    rows = [{"filepath": "a.png", "title": t} for t in ("good", 123, None, {"x": 1}, [1, 2], True, ["ok", "also"])]
    rows.append({"filepath": 7, "title": "no path"})
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = open_dataset(f"jsonl:{tmp_path}/t.jsonl")
    assert [s.caption for s in ds] == ["good", "ok"]
    assert ds.skip_log.counts == {"bad_caption_type": 4, "missing_caption": 1, "missing_file": 1}
    assert main(["data-check", f"jsonl:{tmp_path}/t.jsonl"]) == 0
    assert "read 2 samples" in capsys.readouterr().out


class Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_bad_embedding_members_are_counted_and_never_executed(tmp_path):
    paug = json.dumps({"param_aug": [[[0, 0, 8, 8], [[0, 0.0], [0, 0.0]]]]}).encode()
    marker = tmp_path / "payload-ran"
    good = io.BytesIO()
    np.savez(good, image_emb=np.ones((1, 2), np.float32), text_emb=np.ones((2, 2), np.float32))
    blobs = {"garbage": gzip.compress(b"\x00garbage" * 9), "notgzip": b"plain bytes",
             "pickle": gzip.compress(pickle.dumps({"image_emb": Payload(str(marker))})),
             "nan": None, "good": None}
    members = []
    for key, blob in blobs.items():
        members += [(f"{key}.png", PNG), (f"{key}.txt", b"real"), (f"{key}.paug.json", paug),
                    (f"{key}.syn.json", b'{"syn_text": ["s"]}')]
        if key == "good":
            members.append((f"{key}.npz", good.getvalue()))
        elif key == "nan":
            bad = io.BytesIO()
            np.savez(bad, image_emb=np.full((1, 2), np.nan, np.float32), text_emb=np.ones((2, 2), np.float32))
            members.append((f"{key}.npz", bad.getvalue()))
        else:
            members.append((f"{key}.pth.gz", blob))
    (tmp_path / "dr.tar").write_bytes(tar_bytes(members))
    ds = open_dataset(f"reinforced:{tmp_path}/dr.tar?size=8")
    assert [s.key for s in ds] == ["good"]
    assert ds.skip_log.counts == {"bad_embeddings": 4} and not marker.exists()
    assert main(["data-check", f"reinforced:{tmp_path}/dr.tar?size=8"]) == 0


class Exploding(MapReader):
    """A reader whose third sample raises an exception no reader anticipates."""

    def __init__(self) -> None:
        super().__init__()
        self.items = list(range(5))

    def load(self, index: int) -> Sample:
        if index == 2:
            raise ZeroDivisionError("a new kind of damage")
        return Sample(key=str(index))


def test_an_unanticipated_exception_is_one_counted_skip():
    reader = Exploding()
    assert [s.key for s in reader] == ["0", "1", "3", "4"]
    assert reader.skip_log.counts == {"bad_sample": 1}
    strict = Exploding()
    strict.skip_log = SkipLog(strict=True)
    with pytest.raises(DataError, match="ZeroDivisionError: a new kind of damage"):
        list(strict)


def test_read_one_lets_configuration_errors_through():
    log = SkipLog()
    with pytest.raises(ConfigError):
        read_one(log, "k", "src", lambda: (_ for _ in ()).throw(ConfigError("bad option")))
    assert read_one(log, "k", "src", lambda: (_ for _ in ()).throw(SkipSample("bad_image", "x"))) is None
    assert log.counts == {"bad_image": 1}
