"""Dataset readers: round trips of every format on generated data, reader specs, and worker/rank sharding."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from edgevl.data.readers import (
    CaptionTable,
    ImageFolder,
    RankSampler,
    ReinforcedReader,
    ReinforcedSample,
    WebDatasetReader,
    collate_samples,
    merge_skip_logs,
    open_dataset,
    parse_spec,
)
from edgevl.errors import ConfigError

COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (40, 220, 220), (120, 60, 180)]


def image_bytes(color: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (12, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def wds_shards(root: Path, n_shards: int, per_shard: int) -> dict[str, str]:
    """Shards shard-<i>.tar with keys s<i>_<j>: image colour j, caption 'shard i sample j'."""
    captions = {}
    for i in range(n_shards):
        members = []
        for j in range(per_shard):
            key = f"s{i}_{j:02d}"
            fmt, ext = [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")][j % 3]
            captions[key] = f"shard {i} sample {j}"
            members += [
                (f"{key}.{ext}", image_bytes(COLORS[j % len(COLORS)], fmt)),
                (f"{key}.txt", captions[key].encode()),
                (f"{key}.json", json.dumps({"n": j}).encode()),
            ]
        write_tar(root / f"shard-{i}.tar", members)
    return captions


# ------------------------------------------------------------------------------------------ specs
@pytest.mark.parametrize(
    "spec, kind, path, options",
    [
        ("wds:/data/shard-{000..009}.tar", "wds", "/data/shard-{000..009}.tar", {}),
        ("/data/shard-{000..009}.tar", "wds", "/data/shard-{000..009}.tar", {}),
        ("pipe:curl -s http://x/a.tar", "wds", "pipe:curl -s http://x/a.tar", {}),
        ("/data/train.csv", "csv", "/data/train.csv", {}),
        ("tsv:/data/train.txt?sep=tab", "tsv", "/data/train.txt", {"sep": "tab"}),
        ("/d/t.parquet", "parquet", "/d/t.parquet", {}),
        ("/d/t.jsonl", "jsonl", "/d/t.jsonl", {}),
        ("/ann/captions_val2014.json?images=/coco/val2014", "coco", "/ann/captions_val2014.json",
         {"images": "/coco/val2014"}),
        ("karpathy:/d/dataset_coco.json?images=/coco&split=test", "karpathy", "/d/dataset_coco.json",
         {"images": "/coco", "split": "test"}),
        ("reinforced:/dr/{0..9}.tar?images=wds:/dc/{0..9}.tar", "reinforced", "/dr/{0..9}.tar",
         {"images": "wds:/dc/{0..9}.tar"}),
    ],
)
def test_parse_spec(spec, kind, path, options):
    parsed = parse_spec(spec)
    assert (parsed.kind, parsed.path, parsed.options) == (kind, path, options)


def test_spec_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot tell"):
        parse_spec(str(tmp_path / "notes.md"))
    assert parse_spec(str(tmp_path)).kind == "folder"
    wds_shards(tmp_path, 1, 1)
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        open_dataset(f"{tmp_path}/shard-0.tar?colour=red")
    with pytest.raises(ConfigError, match="not an int"):
        open_dataset(f"{tmp_path}/shard-0.tar?buffer=many")


# ----------------------------------------------------------------------------------- webdataset
def test_webdataset_round_trip(tmp_path):
    captions = wds_shards(tmp_path, 3, 4)
    ds = open_dataset(f"wds:{tmp_path}/shard-{{0..2}}.tar")
    samples = list(ds)
    assert [s.key for s in samples] == sorted(captions)  # shard order, then tar order
    for s in samples:
        j = int(s.key.split("_")[1])
        assert s.caption == captions[s.key] and s.captions == [captions[s.key]]
        assert s.image.mode == "RGB" and s.image.size == (12, 10)
        pixel = np.asarray(s.image)[5, 6].astype(int)
        assert np.abs(pixel - COLORS[j % len(COLORS)]).max() <= 8  # jpeg / lossy webp
        assert s.meta["n"] == j and s.meta["url"].endswith(".tar")
    assert ds.skip_log.counts == {}


def test_webdataset_transform_tokenizer_and_collate(tmp_path):
    wds_shards(tmp_path, 1, 3)

    def tokenizer(texts):
        texts = [texts] if isinstance(texts, str) else texts
        return torch.tensor([[len(t), 7] for t in texts])

    ds = WebDatasetReader(tmp_path / "shard-0.tar", transform=lambda im: torch.zeros(3, *im.size),
                          tokenizer=tokenizer)
    batch = collate_samples(list(ds))
    assert batch["image"].shape == (3, 3, 12, 10)
    assert batch["tokens"].tolist() == [[len("shard 0 sample 0"), 7]] * 3
    assert batch["key"] == ["s0_00", "s0_01", "s0_02"] and "label" not in batch


def test_webdataset_labels_without_text(tmp_path):
    write_tar(tmp_path / "0.tar", [("a.webp", image_bytes(COLORS[0], "WEBP")), ("a.cls", b"3\n"),
                                   ("b.png", image_bytes(COLORS[1])), ("b.cls", b"0")])
    ds = open_dataset(f"wds:{tmp_path}/0.tar?text=&label=cls")
    assert [(s.key, s.label, s.caption) for s in ds] == [("a", 3, None), ("b", 0, None)]


def test_webdataset_buffer_shuffle_is_seeded(tmp_path):
    captions = wds_shards(tmp_path, 4, 5)
    ds = open_dataset(f"{tmp_path}/shard-{{0..3}}.tar?shuffle=true&buffer=6&seed=3")
    epoch0 = [s.key for s in ds]
    assert sorted(epoch0) == sorted(captions) and epoch0 != sorted(captions)
    assert [s.key for s in ds] == epoch0
    ds.set_epoch(1)
    assert sorted(s.key for s in ds) == sorted(captions) and [s.key for s in ds] != epoch0


# ------------------------------------------------------------------------------------- sharding
@pytest.mark.parametrize("n_shards", [1, 3, 8])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 6])
def test_consumers_partition_samples(tmp_path, n_shards, count):
    captions = wds_shards(tmp_path, n_shards, 3)
    ds = WebDatasetReader(f"{tmp_path}/shard-{{0..{n_shards - 1}}}.tar", shuffle=True, shuffle_buffer=4)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        keys = [s.key for c in range(count) for s in ds.consumer_samples(c, count)]
        assert sorted(keys) == sorted(captions)  # nothing lost, nothing duplicated


def test_consumer_from_rank_env_and_workers(tmp_path, monkeypatch):
    captions = wds_shards(tmp_path, 4, 2)
    ds = WebDatasetReader(f"{tmp_path}/shard-{{0..3}}.tar")
    keys = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        keys += [s.key for s in ds]
    assert sorted(keys) == sorted(captions)


def test_dataloader_two_workers_with_skip_log(tmp_path):
    captions = wds_shards(tmp_path, 3, 4)
    write_tar(tmp_path / "shard-3.tar", [("bad.png", b"\x89PNG\r\n\x1a\n garbage"), ("bad.txt", b"x"),
                                         ("empty.png", b""), ("empty.txt", b"y")])
    logs = tmp_path / "skips"
    ds = open_dataset(f"{tmp_path}/shard-{{0..3}}.tar", skip_log_dir=logs, transform=lambda im: torch.ones(1))
    loader = DataLoader(ds, batch_size=5, num_workers=2, collate_fn=collate_samples)
    keys = [k for batch in loader for k in batch["key"]]
    assert sorted(keys) == sorted(captions)
    assert merge_skip_logs(logs) == {"bad_image": 2}
    assert len(list(logs.glob("skips-*.jsonl"))) == 1  # only the worker that read shard 3 wrote


def test_rank_sampler_partitions(tmp_path):
    for length, world in [(10, 3), (2, 4), (7, 1)]:
        got = []
        for rank in range(world):
            sampler = RankSampler(length, rank=rank, world_size=world, seed=1)
            sampler.set_epoch(2)
            assert len(sampler) == len(list(sampler))
            got += list(sampler)
        assert sorted(got) == list(range(length))
    with pytest.raises(ConfigError, match="outside world size"):
        RankSampler(3, rank=2, world_size=2)


# ---------------------------------------------------------------------------------------- tables
def _table_images(root: Path, n: int) -> list[str]:
    (root / "img").mkdir()
    names = []
    for i in range(n):
        names.append(f"img/{i}.png")
        (root / names[-1]).write_bytes(image_bytes(COLORS[i]))
    return names


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_caption_table_round_trip(tmp_path, fmt):
    names = _table_images(tmp_path, 3)
    rows = [{"filepath": n, "title": f"caption, {i}", "other": i} for i, n in enumerate(names)]
    path = tmp_path / f"train.{fmt}"
    if fmt in ("csv", "tsv"):
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="," if fmt == "csv" else "\t")
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.Table.from_pylist(rows), path)
    ds = open_dataset(str(path))
    assert isinstance(ds, CaptionTable) and len(ds) == 3
    for i, s in enumerate(ds):
        assert (s.key, s.caption, s.meta["row"]) == (names[i], f"caption, {i}", i)
        assert np.asarray(s.image)[0, 0].tolist() == list(COLORS[i])


def test_caption_table_columns_root_and_random_caption(tmp_path):
    names = _table_images(tmp_path, 2)
    rows = [{"img": f"{i}.png", "caps": [f"a{i}", f"b{i}", f"c{i}"], "id": f"k{i}"} for i in range(len(names))]
    path = tmp_path / "meta.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = f"{path}?img_key=img&caption_key=caps&key=id&caption=random&images={tmp_path / 'img'}"
    ds = open_dataset(spec, seed=5)
    picks = {e: [] for e in range(6)}
    for epoch in picks:
        ds.set_epoch(epoch)
        picks[epoch] = [s.caption for s in ds]
        assert [s.key for s in ds] == ["k0", "k1"] and [s.caption for s in ds] == picks[epoch]
    assert {p[0] for p in picks.values()} <= {"a0", "b0", "c0"} and len({p[0] for p in picks.values()}) > 1
    all_caps = open_dataset(spec.replace("caption=random", "caption=all"))
    assert [(s.caption, s.captions) for s in all_caps][1] == (None, ["a1", "b1", "c1"])
    with pytest.raises(ConfigError, match=r"no column 'title'; the table has \['caps', 'id', 'img'\]"):
        open_dataset(str(path), img_key="img")


def test_rank_sampler_with_dataloader_and_table(tmp_path):
    names = _table_images(tmp_path, 5)
    path = tmp_path / "t.csv"
    path.write_text("filepath,title\n" + "".join(f"{n},cap {i}\n" for i, n in enumerate(names)))
    ds = open_dataset(str(path))
    keys = []
    for rank in range(2):
        sampler = RankSampler(len(ds), rank=rank, world_size=2)
        keys += [k for b in DataLoader(ds, batch_size=2, sampler=sampler, collate_fn=collate_samples)
                 for k in b["key"]]
    assert sorted(keys) == names


# ----------------------------------------------------------------------------------- COCO, folder
def test_coco_and_karpathy(tmp_path):
    (tmp_path / "val2014").mkdir()
    for i in range(3):
        (tmp_path / "val2014" / f"COCO_{i}.jpg").write_bytes(image_bytes(COLORS[i], "JPEG"))
    coco = {
        "info": {}, "licenses": [],
        "images": [{"id": 10 + i, "file_name": f"COCO_{i}.jpg", "height": 10, "width": 12} for i in range(3)],
        "annotations": [{"id": k, "image_id": 10 + k % 2, "caption": f"cap {k}"} for k in range(5)],
    }
    ann = tmp_path / "annotations" / "captions_val2014.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps(coco))
    ds = open_dataset(f"{ann}?images={tmp_path / 'val2014'}&caption=all")
    assert [(s.key, s.captions) for s in ds] == [("10", ["cap 0", "cap 2", "cap 4"]), ("11", ["cap 1", "cap 3"])]

    karpathy = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": f"COCO_{i}.jpg", "imgid": i, "cocoid": 10 + i, "split": split,
         "sentids": [i], "sentences": [{"raw": f"A picture {i}.", "tokens": [], "imgid": i, "sentid": i}]}
        for i, split in enumerate(["test", "restval", "train"])]}
    kfile = tmp_path / "dataset_coco.json"
    kfile.write_text(json.dumps(karpathy))
    test = open_dataset(f"karpathy:{kfile}?split=test")
    assert [(s.key, s.caption) for s in test] == [("10", "A picture 0.")]
    train = open_dataset(str(kfile), split="train")
    assert [s.key for s in train] == ["11", "12"]
    assert np.asarray(train[1].image)[0, 0].tolist() == pytest.approx(COLORS[2], abs=8)
    with pytest.raises(ConfigError, match="unknown Karpathy split"):
        open_dataset(str(kfile), split="dev")


def test_image_folder(tmp_path):
    for cls, n in [("dog", 2), ("cat", 1), ("zebra", 1)]:
        (tmp_path / cls).mkdir()
        for i in range(n):
            (tmp_path / cls / f"{i}.png").write_bytes(image_bytes(COLORS[i]))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = open_dataset(f"folder:{tmp_path}")
    assert isinstance(ds, ImageFolder) and ds.classes == ["cat", "dog", "zebra"]
    assert [(s.key, s.label) for s in ds] == [("cat/0.png", 0), ("dog/0.png", 1), ("dog/1.png", 1),
                                              ("zebra/0.png", 2)]
    assert collate_samples([ds[0], None, ds[3]])["label"].tolist() == [0, 2]


# ---------------------------------------------------------------------------------- reinforced
def write_reinforced(root: Path, *, n: int = 3, n_aug: int = 4, layout: str = "npz", string_paug: bool = False,
                     multi_syn: bool = False) -> dict:
    """A DataCompDR-layout shard `dr/0.tar` and a companion DataComp shard `dc/0.tar` (keys in reverse order).

    Embeddings encode where they came from: image_emb[j] = [i, j, 0], text_emb[r] = [i, r, 1].
    """
    (root / "dr").mkdir()
    (root / "dc").mkdir()
    dr, dc, truth = [], [], {}
    for i in range(n):
        key = f"{i:09d}"
        records = [[[j, 2 * j, 20 - j, 24 - 2 * j], [[0, 0.0], [0, 0.0]]] for j in range(n_aug)]
        paug = {"param_aug": json.dumps(records) if string_paug else records}
        syn_lists = ({"syn_text_a": [f"a{i}-0", f"a{i}-1"], "syn_text_b": [f"b{i}-0"]} if multi_syn
                     else {"syn_text": [f"syn {i} {s}" for s in range(5)]})
        n_text = 1 + sum(len(v) for v in syn_lists.values())
        emb = {"image_emb": np.array([[i, j, 0] for j in range(n_aug)], np.float32),
               "text_emb": np.array([[i, r, 1] for r in range(n_text)], np.float32)}
        if layout == "npz":
            buf = io.BytesIO()
            np.savez(buf, **emb)
            emb_member = ("npz", buf.getvalue())
        else:
            buf = io.BytesIO()
            torch.save({k: torch.from_numpy(v).bfloat16() for k, v in emb.items()}, buf)
            emb_member = ("pth.gz", gzip.compress(buf.getvalue()))
        dr += [(f"{key}.url.txt", f"http://img/{i}.jpg".encode()), (f"{key}.syn.json", json.dumps(syn_lists).encode()),
               (f"{key}.paug.json", json.dumps(paug).encode()), (f"{key}.{emb_member[0]}", emb_member[1]),
               (f"{key}.json", json.dumps({"uid": f"u{i}", "sha256": "0"}).encode())]
        dc = [(f"{key}.png", image_bytes(COLORS[i], size=(30, 30))), (f"{key}.txt", f"real {i}".encode()),
              (f"{key}.json", json.dumps({"uid": f"u{i}"}).encode())] + dc
        truth[key] = {"records": records, "syn": syn_lists, "i": i}
    write_tar(root / "dr" / "0.tar", dr)
    write_tar(root / "dc" / "0.tar", dc)
    return truth


def fake_replay(image, record, size=224, interpolation="bicubic"):
    """Stand-in for edgevl.data.augment.replay that encodes its inputs: crop then resize."""
    top, left, h, w = record[0]
    return image.crop((left, top, left + w, top + h)).resize((size, size))


@pytest.mark.parametrize("layout, string_paug, join", [("npz", False, "key"), ("pth.gz", True, "uid")])
def test_reinforced_reader(tmp_path, monkeypatch, layout, string_paug, join):
    import edgevl.data.augment as augment

    replays = []
    monkeypatch.setattr(augment, "replay", lambda *a, **k: replays.append((a, k)) or fake_replay(*a, **k))
    truth = write_reinforced(tmp_path, layout=layout, string_paug=string_paug)
    spec = f"reinforced:{tmp_path}/dr/{{0..0}}.tar?images=wds:{tmp_path}/dc/{{0..0}}.tar&size=16&join={join}"
    ds = open_dataset(spec, seed=7)
    assert isinstance(ds, ReinforcedReader)
    for epoch in range(3):
        ds.set_epoch(epoch)
        samples = list(ds)
        assert [s.key for s in samples] == sorted(truth) and ds.skip_log.counts == {}
        for s in samples:
            assert isinstance(s, ReinforcedSample)
            t = truth[s.key]
            i, j = t["i"], s.aug_index
            assert s.caption == f"real {i}" and s.meta["uid"] == f"u{i}" and s.meta["source_url"].endswith(".jpg")
            assert s.syn_caption in t["syn"]["syn_text"]
            s_idx = t["syn"]["syn_text"].index(s.syn_caption)
            assert s.image_emb.dtype == torch.float32 and s.image_emb.tolist() == [i, j, 0]
            assert s.text_emb.tolist() == [i, 0, 1] and s.syn_text_emb.tolist() == [i, 1 + s_idx, 1]
            assert s.image.size == (16, 16)
            assert np.asarray(s.image)[0, 0].tolist() == list(COLORS[i])
    args, kwargs = replays[-1]
    assert args[1] == truth[samples[-1].key]["records"][samples[-1].aug_index]
    assert kwargs == {"size": 16, "interpolation": "bicubic"}
    again = [(s.key, s.aug_index, s.syn_caption) for s in ds]
    assert again == [(s.key, s.aug_index, s.syn_caption) for s in samples]  # seeded per epoch + key
    ds.set_epoch(0)
    picks = [(s.aug_index, s.syn_caption) for s in ds]
    assert len(set(picks)) > 1


def test_reinforced_sequential_and_multi_syn_keys(tmp_path, monkeypatch):
    import edgevl.data.augment as augment

    monkeypatch.setattr(augment, "replay", fake_replay)
    truth = write_reinforced(tmp_path, n=2, n_aug=3, multi_syn=True)
    ds = ReinforcedReader(f"{tmp_path}/dr/0.tar", images=f"{tmp_path}/dc/0.tar", sequential=True, size=8,
                          syn_key_regex=r"^syn_text_b$", tokenizer=lambda t: torch.tensor([[len(t)]]))
    for epoch in range(4):
        ds.set_epoch(epoch)
        for s in ds:
            i = truth[s.key]["i"]
            assert s.aug_index == epoch % 3
            assert s.syn_caption == f"b{i}-0" and s.syn_text_emb.tolist() == [i, 3, 1]  # after the 2 syn_text_a
            assert s.syn_tokens.tolist() == [len(s.syn_caption)] and s.tokens.tolist() == [len(f"real {i}")]


def test_reinforced_replays_fixture_records(tmp_path, fixtures_dir):
    """With the real replay, the reader's image for aug k equals the reference student replay of record k."""
    fx = fixtures_dir / "augment_replay"
    entry = json.loads((fx / "records.json").read_text())["images"][0]
    expected = np.load(fx / "replay_student_256.npz")
    np_emb = io.BytesIO()
    np.savez(np_emb, image_emb=np.zeros((12, 4), np.float32), text_emb=np.zeros((2, 4), np.float32))
    write_tar(tmp_path / "dr.tar", [
        ("k.paug.json", entry["paug_json_string_form"].encode()), ("k.syn.json", b'{"syn_text": ["s"]}'),
        ("k.npz", np_emb.getvalue()), ("k.png", (fx / entry["image"]).read_bytes()), ("k.txt", b"real"),
    ])
    ds = ReinforcedReader(tmp_path / "dr.tar", sequential=True, size=256, interpolation="bilinear")
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        (sample,) = list(ds)
        assert np.array_equal(np.asarray(sample.image), expected[f"img0_rec{epoch:02d}_256_bilinear"])
