"""Generators for webdataset shards: damaged, duplicated, reordered and hostile members, truncated shards."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from .common import Case, Entry, damaged_image, image_bytes, random_bytes, tar_bytes


@dataclass
class Unit:
    """Consecutive tar entries and the verdict of each sample key they carry (one unit may hold two samples)."""

    entries: list[Entry]
    verdicts: dict[str, str] = field(default_factory=dict)  # key -> good | optional | bad
    note: str = "good"


def _pair(key: str, rng: random.Random, caption: bytes | None = None, ext: str = "png") -> list[Entry]:
    fmt = "JPEG" if ext in ("jpg", "jpeg") else "PNG"
    txt = caption if caption is not None else f"caption of {key}".encode()
    members = [(f"{key}.{ext}", image_bytes(rng, fmt), "file"), (f"{key}.txt", txt, "file")]
    return members[::-1] if rng.random() < 0.2 else members


def _unit(rng: random.Random, key: str, earlier: list[str]) -> Unit:
    """A random sample (or pair of samples, or non-sample entries) named from `key`."""
    kind = rng.choice(["good"] * 8 + [
        "dup_member", "dup_image", "no_image", "no_caption", "reorder", "dup_key", "noext", "dir", "symlink",
        "hardlink", "traversal", "absolute", "unicode", "spaces", "long", "dots", "empty_caption", "latin1",
        "bad_image", "upper_ext", "extra_member", "jpg", "dir_prefix",
    ])
    if kind == "good":
        return Unit(_pair(key, rng), {key: "good"})
    if kind in ("jpg", "upper_ext", "extra_member"):
        entries = _pair(key, rng, ext="jpg" if kind == "jpg" else "png")
        if kind == "upper_ext":
            entries = [(name.rsplit(".", 1)[0] + "." + name.rsplit(".", 1)[1].upper(), d, t) for name, d, t in entries]
        if kind == "extra_member":
            entries.insert(rng.randrange(3), (f"{key}.xyz", random_bytes(rng, 0, 50), "file"))
        return Unit(entries, {key: "good"}, kind.replace("_", " "))
    if kind == "dup_member":
        entries = _pair(key, rng)
        return Unit(entries + [entries[-1]], {key: "bad"}, "duplicate member in a row")
    if kind == "dup_image":
        png, txt = (f"{key}.png", image_bytes(rng), "file"), (f"{key}.txt", b"caption", "file")
        return Unit([png, png, txt], {key: "bad"}, "duplicate image member")
    if kind == "no_image":
        return Unit([(f"{key}.txt", b"caption without image", "file")], {key: "bad"}, "no image")
    if kind == "no_caption":
        return Unit([(f"{key}.png", image_bytes(rng), "file")], {key: "bad"}, "no caption")
    if kind == "reorder":
        a, b = f"{key}a", f"{key}b"
        pa, pb = _pair(a, rng), _pair(b, rng)
        return Unit([pa[0], pb[0], pa[1], pb[1]], {a: "bad", b: "bad"}, "interleaved members")
    if kind == "dup_key" and earlier[:-1]:  # never the key just before: that would be a consecutive repeat
        again = rng.choice(earlier[:-1])
        return Unit(_pair(again, rng), {f"{again}#again": "bad"}, "key repeated later")
    if kind == "noext":
        return Unit([(f"noext{key}", b"data", "file")], {}, "member without suffix")
    if kind == "dir":
        return Unit([(f"dir{key}", b"", "dir")], {}, "directory member")
    if kind in ("symlink", "hardlink"):
        return Unit([(f"link{key}.png", b"elsewhere.png", kind)], {}, kind)
    if kind in ("traversal", "absolute"):
        name = f"../x/evil{key}" if kind == "traversal" else f"/tmp/abs{key}"
        return Unit(_pair(name, rng), {name: "optional"}, f"{kind} name")
    if kind == "dir_prefix":
        name = f"sub/dir/{key}"
        return Unit(_pair(name, rng), {name: "good"}, "key in a sub-folder")
    if kind in ("unicode", "spaces", "long"):
        name = {"unicode": f"ключ_ü_{key}_🙂", "spaces": f"a key {key} with spaces",
                "long": f"{key}_" + "k" * 200}[kind]
        return Unit(_pair(name, rng), {name: "good"}, f"{kind} name")
    if kind == "dots":  # split at the first dot: key '<key>', suffixes 'b.png' / 'b.txt' -> no image member
        return Unit([(f"{key}.b.png", image_bytes(rng), "file"), (f"{key}.b.txt", b"dots", "file")],
                    {key: "optional"}, "dotted key")
    if kind in ("empty_caption", "latin1"):
        caption = rng.choice([b"", b"  \n"]) if kind == "empty_caption" else "café".encode("latin-1")
        return Unit(_pair(key, rng, caption=caption), {key: "bad"}, kind.replace("_", " "))
    data, verdict, note = damaged_image(rng)
    return Unit([(f"{key}.png", data, "file"), (f"{key}.txt", b"caption", "file")], {key: verdict}, note)


@dataclass
class Shard:
    """A built shard: the tar bytes, the end offset of every entry, and which entries each sample key owns."""

    blob: bytes
    ends: list[int]
    owners: dict[str, tuple[str, list[int]]]  # key -> (verdict, entry indices)
    notes: list[str]


def build_shard(rng: random.Random, prefix: str) -> Shard:
    """3-12 random units with keys `<prefix><n>`, written to one tar."""
    entries: list[Entry] = []
    owners: dict[str, tuple[str, list[int]]] = {}
    notes: list[str] = []
    earlier: list[str] = []
    for n in range(rng.randint(3, 12)):
        unit = _unit(rng, f"{prefix}{n:02d}", earlier)
        start = len(entries)
        entries += unit.entries
        span = list(range(start, len(entries)))
        for key, verdict in unit.verdicts.items():
            owners[key] = (verdict, span)
            if verdict == "good" and "/" not in key:
                earlier.append(key)
        if unit.note != "good":
            notes.append(f"{n} {unit.note}")
    blob, ends = tar_bytes(entries)
    return Shard(blob, ends, owners, notes)


def _outcome(shard: Shard, cut: int | None) -> tuple[set[str], set[str], set[str], int, bool]:
    """(good, optional, cut through, bad-to-count, data lost) of a shard read up to byte `cut` (None: all of it)."""
    good, optional, through, bad = set(), set(), set(), 0
    limit = len(shard.blob) if cut is None else cut
    for key, (verdict, span) in shard.owners.items():
        name = key.split("#")[0]
        before = [shard.ends[i] <= limit for i in span]
        if all(before) and verdict == "bad":
            bad += 1
        elif all(before):
            (good if verdict == "good" else optional).add(name)
        elif any(before):  # cut inside the sample: what was read may or may not make a whole sample
            through.add(name)
    lost = cut is not None and cut < max(shard.ends, default=0)
    return good, optional - good, through - good - optional, bad, lost


def tar_case(rng: random.Random, tmp: Path) -> Case:
    """1-3 shards of damaged samples; sometimes one shard is truncated, replaced by garbage or missing."""
    root = tmp / "shards"
    root.mkdir(parents=True, exist_ok=True)
    good, optional, through, bad, kinds, notes = set(), set(), set(), 0, set(), []
    count = rng.randint(1, 3)
    damaged = rng.randrange(count) if rng.random() < 0.35 else -1
    for s in range(count):
        shard = build_shard(rng, f"s{s}_")
        blob, cut, shard_note = shard.blob, None, ""
        how = rng.choice(["block", "block", "offset", "offset", "garbage", "missing"]) if s == damaged else ""
        if how == "block":
            cut = 512 * rng.randrange(len(blob) // 512 + 1)
        elif how == "offset":
            cut = rng.randrange(len(blob))
        elif how in ("garbage", "missing"):
            blob, cut, shard_note = random_bytes(rng, 1, 3000), 0, f"shard {s} is {how}"
        if how in ("block", "offset"):
            blob, shard_note = blob[:cut], f"shard {s} cut at {cut}/{len(shard.blob)}"
        if how != "missing":
            (root / f"{s}.tar").write_bytes(blob)
        g, o, t, b, lost = _outcome(shard, cut)
        good, optional, through, bad = good | g, optional | o, through | t, bad + b
        if lost:
            kinds.add("missing_shard" if how == "missing" else "corrupt_shard")
        notes += shard.notes + ([shard_note] if shard_note else [])
    spec = f"wds:{root}/{{0..{count - 1}}}.tar" if count > 1 else f"wds:{root}/0.tar"
    description = f"tar x{count}; {len(good)} good; " + ", ".join(dict.fromkeys(notes))
    return Case("dataset", spec, good, description, optional_keys=optional, cut_keys=through,
                min_skips=bad + len(kinds), skip_kinds=kinds)


def _cut_case(shard: Shard, cut: int, tmp: Path) -> Case:
    path = tmp / f"cut{cut}.tar"
    path.write_bytes(shard.blob[:cut])
    good, optional, through, bad, lost = _outcome(shard, cut)
    kinds = {"corrupt_shard"} if lost else set()
    description = f"tar cut at {cut}/{len(shard.blob)}; {len(good)} good; " + ", ".join(dict.fromkeys(shard.notes))
    return Case("dataset", f"wds:{path}", good, description, optional_keys=optional, cut_keys=through,
                min_skips=bad + len(kinds), skip_kinds=kinds)


def tar_cut_cases(rng: random.Random, tmp: Path) -> list[Case]:
    """One random shard truncated at every 512-byte block boundary (and its full length), one case per cut."""
    shard = build_shard(rng, "k")
    return [_cut_case(shard, cut, tmp) for cut in range(0, len(shard.blob) + 1, 512)]


def tar_cut_case(rng: random.Random, tmp: Path) -> Case:
    """One random shard truncated at one random block boundary."""
    shard = build_shard(rng, "k")
    return _cut_case(shard, 512 * rng.randrange(len(shard.blob) // 512 + 1), tmp)
