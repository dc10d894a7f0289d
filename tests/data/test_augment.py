"""Reproducible augmentations against the reference fixtures in tests/fixtures/augment_replay/."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgevl.data import augment as A
from edgevl.data.augment_ops import apply_op
from edgevl.data.transforms import normalize, to_tensor
from edgevl.errors import ConfigError, DataError

# The reference records were drawn after torch.manual_seed(SEED) (augment_replay/README.md).
SEED = 20240611


@pytest.fixture(scope="module")
def replay_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "augment_replay"


@pytest.fixture(scope="module")
def entries(replay_dir: Path) -> list[dict]:
    return json.loads((replay_dir / "records.json").read_text())["images"]


@pytest.fixture(scope="module")
def images(replay_dir: Path, entries: list[dict]) -> list[Image.Image]:
    return [Image.open(replay_dir / e["image"]).convert("RGB") for e in entries]


@pytest.fixture(scope="module")
def summary(replay_dir: Path) -> dict:
    return json.loads((replay_dir / "summary.json").read_text())


def _gradient(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(16, 236, size=(height, width, 3), dtype=np.uint8)
    arr[..., 0] = np.linspace(16, 235, width, dtype=np.uint8)[None, :]
    return Image.fromarray(arr, "RGB")


# ------------------------------------------------------------------------------ replay vs fixtures
def test_replay_224_bit_exact(replay_dir: Path, entries: list[dict], images: list[Image.Image]) -> None:
    expected = np.load(replay_dir / "replay_224.npz")
    assert len(expected.files) == 72
    for i, (entry, img) in enumerate(zip(entries, images)):
        for j, record in enumerate(entry["param_aug"]):
            got = np.asarray(A.replay(img, record))
            want = expected[f"img{i}_rec{j:02d}"]
            assert got.dtype == np.uint8 and got.shape == (224, 224, 3)
            diff = np.abs(got.astype(int) - want).max()
            assert diff == 0, f"img{i} rec{j} {record}: max |diff| {diff}"


def test_student_replay_256_bit_exact(replay_dir: Path, entries: list[dict], images: list[Image.Image]) -> None:
    expected = np.load(replay_dir / "replay_student_256.npz")
    assert len(expected.files) == 24
    for key in expected.files:
        i, j, interp = int(key[3]), int(key[8:10]), key.rsplit("_", 1)[1]
        got = np.asarray(A.replay(images[i], entries[i]["param_aug"][j], size=256, interpolation=interp))
        np.testing.assert_array_equal(got, expected[key], err_msg=key)


def test_float_batch_matches_per_image_to_tensor_normalize(
    replay_dir: Path, entries: list[dict], images: list[Image.Image]
) -> None:
    pils = [A.replay(images[0], r) for r in entries[0]["param_aug"][:4]]
    batch = torch.stack([A.to_uint8_tensor(p) for p in pils])
    got = A.to_float_batch(batch, A.OPENAI_MEAN, A.OPENAI_STD)
    want = torch.stack([normalize(to_tensor(p), A.OPENAI_MEAN, A.OPENAI_STD) for p in pils])
    assert got.dtype == torch.float32
    assert torch.equal(got, want)


# --------------------------------------------------------------------------------- records / paug
def test_decompressed_forms_match_fixture(entries: list[dict]) -> None:
    for entry in entries:
        for record, spelled in zip(entry["param_aug"], entry["decompressed"], strict=True):
            assert A.decompress_record(record) == spelled
            assert A.compress_record(spelled) == record


def test_paug_encode_byte_exact_and_decode_both_forms(entries: list[dict]) -> None:
    for entry in entries:
        records = entry["param_aug"]
        assert A.encode_paug(records) == entry["paug_json_list_form"]
        assert A.encode_paug(records, string_form=True) == entry["paug_json_string_form"]
        for text in (entry["paug_json_list_form"], entry["paug_json_string_form"]):
            decoded = A.decode_paug(text)
            assert decoded == records
            assert A.decode_paug(text.encode()) == records
            assert A.encode_paug(decoded) == entry["paug_json_list_form"]
        assert A.decode_paug(json.loads(entry["paug_json_string_form"])) == records


def test_magnitude_bins_carry_float32_rounding(summary: dict) -> None:
    mags = A.op_magnitudes(31, 9, 224, 224)
    assert mags[1] == mags[2] == 0.09000000357627869
    assert mags[3] == mags[4] == 30.45317268371582
    assert mags[5] == 9.0 and mags[10] == 7.0 and mags[11] == 178.5
    assert {mags[k] for k in (6, 7, 8, 9)} == {0.26999998092651367}
    assert sorted(set(mags)) == summary["magnitude_values"]
    # the translate bin is the float32 rounding of an independently computed 0.3 * 150/331 * 224
    assert mags[3] == float(np.float32(9 / 30 * (150.0 / 331.0 * 224)))


# ----------------------------------------------------------------------------------- sampling
def test_sampler_reproduces_reference_draw_stream(
    entries: list[dict], images: list[Image.Image], summary: dict
) -> None:
    """Seeded once, the reference drew N records per image in order; the fixture keeps a subsequence of them,
    and the draws where a non-Identity op left the image unchanged were skipped (count in summary.json)."""
    gen = torch.Generator().manual_seed(SEED)
    draws = summary["draws_per_image_total_and_skipped"]
    for entry, img in zip(entries, images):
        total, skipped = draws[entry["image"]]
        stream, unchanged = [], 0
        for _ in range(total):
            out, record = A.sample(img, gen)
            stream.append(record)
            x = A.replay(img, [record[0], []])
            for op, magnitude in record[1]:
                y = apply_op(x, op, magnitude)
                if op != 0 and np.array_equal(np.asarray(x), np.asarray(y)):
                    unchanged += 1
                    break
                x = y
            else:
                assert np.array_equal(np.asarray(x), np.asarray(out))
        remaining = iter(stream)
        assert all(any(r == s for s in remaining) for r in entry["param_aug"]), entry["image"]
        assert unchanged == skipped, entry["image"]


def test_global_rng_stream_equals_generator_stream(images: list[Image.Image]) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        from_global = [A.sample_record(320, 240) for _ in range(20)]
    gen = torch.Generator().manual_seed(SEED)
    assert [A.sample_record(320, 240, generator=gen) for _ in range(20)] == from_global


@pytest.mark.parametrize("size", [(1, 1), (3, 500), (500, 3), (97, 131), (640, 480)])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
def test_sample_then_replay_agree(size: tuple[int, int], mode: str) -> None:
    rgb = _gradient(*size)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
        assert img.mode == "I;16"
    else:
        img = rgb.convert(mode)
    for seed in range(6):
        out, record = A.sample(img, seed)
        assert out.mode == "RGB" and out.size == (224, 224)
        box = record[0]
        assert 0 <= box[0] and 0 <= box[1] and box[0] + box[2] <= size[1] and box[1] + box[3] <= size[0]
        assert np.array_equal(np.asarray(A.replay(img, record)), np.asarray(out))
        assert json.loads(json.dumps(record)) == record


def test_sample_at_other_size_and_interpolation_replays_exactly() -> None:
    cfg = A.AugmentConfig(size=160, interpolation="bilinear")
    img = _gradient(300, 200, seed=3)
    for seed in range(40):
        out, record = A.sample(img, seed, cfg)
        assert out.size == (160, 160)
        assert np.array_equal(np.asarray(A.replay(img, record, 160, "bilinear")), np.asarray(out))
        for op, magnitude in record[1]:
            if op in (3, 4):  # translation bins scale with the crop size: 0.3 * 150/331 * 160
                assert abs(magnitude) == float(np.float32(0.3 * 150 / 331 * 160))


def test_same_generator_state_same_record_and_image() -> None:
    img = _gradient(257, 199, seed=1)
    first = [A.sample(img, torch.Generator().manual_seed(s)) for s in range(8)]
    second = [A.sample(img, s) for s in range(8)]
    for (a_img, a_rec), (b_img, b_rec) in zip(first, second):
        assert a_rec == b_rec
        assert a_img.tobytes() == b_img.tobytes()
    assert len({json.dumps(rec) for _, rec in first}) == 8


def test_sampled_distribution_follows_randaugment() -> None:
    """Ops uniform over 14, signed ops negative about half the time, crop area within the scale range."""
    gen = torch.Generator().manual_seed(7)
    records = [A.sample_record(400, 300, generator=gen) for _ in range(3000)]
    ops = [op for _, pair in records for op, _ in pair]
    counts = np.bincount(ops, minlength=14)
    assert counts.min() > 6000 / 14 * 0.75 and counts.max() < 6000 / 14 * 1.25
    signed = [m for _, pair in records for op, m in pair if op in A.SIGNED_OPS]
    assert 0.45 < np.mean([m < 0 for m in signed]) < 0.55
    areas = np.array([b[2] * b[3] / (400 * 300) for b, _ in records])
    assert areas.min() >= 0.07 and areas.max() <= 1.0
    aspects = np.array([b[3] / b[2] for b, _ in records])
    assert np.all((aspects > 0.7) & (aspects < 1.45))


def test_crop_fallback_is_centered_clamped_crop() -> None:
    # a scale range no attempt can satisfy forces the fallback; 512x160 is wider than 4/3
    assert A.sample_crop_box(512, 160, (5.0, 6.0), (3 / 4, 4 / 3), 0) == [0, 149, 160, round(160 * 4 / 3)]
    assert A.sample_crop_box(100, 400, (5.0, 6.0), (3 / 4, 4 / 3), 0) == [(400 - 133) // 2, 0, 133, 100]
    assert A.sample_crop_box(120, 100, (5.0, 6.0), (3 / 4, 4 / 3), 0) == [0, 0, 100, 120]


def test_rand_augment_probability_zero_skips_ops() -> None:
    cfg = A.AugmentConfig(rand_augment_p=0.0)
    img = _gradient(64, 48)
    out, record = A.sample(img, 0, cfg)
    assert record[1] is None
    box = record[0]
    crop = img.crop((box[1], box[0], box[1] + box[3], box[0] + box[2])).resize((224, 224), Image.BICUBIC)
    assert out.tobytes() == crop.tobytes() == A.replay(img, record).tobytes()


# ------------------------------------------------------------------------------------ the ops
def test_translate_shifts_by_truncated_magnitude() -> None:
    img = _gradient(224, 224, seed=5)
    src = np.asarray(img)
    right = np.asarray(apply_op(img, 3, 30.45317268371582))
    np.testing.assert_array_equal(right[:, 30:], src[:, :-30])
    assert not right[:, :30].any()
    up = np.asarray(apply_op(img, 4, -30.45317268371582))
    np.testing.assert_array_equal(up[:-30], src[30:])
    assert not up[-30:].any()


def test_shear_x_matches_independent_nearest_formula() -> None:
    """Shear about the top-left corner: output (x, y) samples input (x + m*y, y) at pixel centers."""
    img = _gradient(60, 40, seed=2)
    src = np.asarray(img)
    m = -0.09000000357627869
    got = np.asarray(apply_op(img, 1, m))
    ys, xs = np.mgrid[0:40, 0:60]
    sx = np.floor(xs + 0.5 + math.tan(math.atan(m)) * (ys + 0.5)).astype(int)
    inside = (sx >= 0) & (sx < 60)
    want = np.where(inside[..., None], src[ys, np.clip(sx, 0, 59)], 0)
    assert (got != want).any(axis=-1).mean() < 0.01  # ties at exact .5 may round either way


def test_point_ops_match_numpy_formulas() -> None:
    img = _gradient(50, 30, seed=4)
    src = np.asarray(img).astype(int)
    np.testing.assert_array_equal(np.asarray(apply_op(img, 10, 7.0)), src & 0b11111110)
    np.testing.assert_array_equal(np.asarray(apply_op(img, 11, 178.5)), np.where(src >= 178.5, 255 - src, src))
    np.testing.assert_array_equal(np.asarray(apply_op(img, 0, 0.0)), src)
    lo, hi = src.min(axis=(0, 1)), src.max(axis=(0, 1))
    stretched = np.asarray(apply_op(img, 12, 0.0)).astype(int)
    assert np.all(stretched.min(axis=(0, 1)) == 0) and np.all(stretched.max(axis=(0, 1)) >= 254)
    assert np.abs(stretched - (src - lo) * 255.0 / (hi - lo)).max() <= 1


# ------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("[[0,0,1,1],[]]", "must be [crop_box, ops]"),
        ([[0, 0, 1]], "must be [crop_box, ops]"),
        ([[0, 0, 1], []], "crop box must be 4 integers"),
        ([[0, 0, 1.5, 2], []], "crop box must be 4 integers"),
        ([[0, -1, 4, 4], []], "top, left >= 0"),
        ([[0, 0, 0, 4], []], "height, width > 0"),
        ([[0, 0, 4, 4], [[14, 0.0]]], "op index must be an integer in [0, 14)"),
        ([[0, 0, 4, 4], [[True, 0.0]]], "op index"),
        ([[0, 0, 4, 4], [[6, "0.27"]]], "magnitude of Brightness must be a finite number"),
        ([[0, 0, 4, 4], [[6, float("nan")]]], "finite number"),
        ([[0, 0, 4, 4], [[10, 9.0]]], "Posterize keeps 0..8 bits"),
        ([[0, 0, 4, 4], [[6]]], "must be [op_index, magnitude]"),
        ([[0, 0, 4, 4], "ops"], "list of [op_index, magnitude]"),
    ],
)
def test_bad_record_raises_data_error(record: object, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        A.check_record(record)


def test_crop_box_outside_image_is_named() -> None:
    with pytest.raises(DataError, match=r"crop box \[10, 0, 40, 20\].*exceeds the 32x32 image"):
        A.replay(_gradient(32, 32), [[10, 0, 40, 20], []])


def test_bad_paug_json_raises_data_error() -> None:
    for text, message in [
        ("{not json", "not valid JSON"),
        ('{"aug": []}', "'param_aug' key"),
        ('{"param_aug": 3}', "must be a list"),
        ('{"param_aug": "[[[0, 0, 2, 2], [[99, 0.0]]]]"}', "op index"),
    ]:
        with pytest.raises(DataError, match=message):
            A.decode_paug(text)
    with pytest.raises(DataError, match="does not match op_index"):
        A.compress_record(
            {
                "random_resized_crop": {"top": 0, "left": 0, "height": 2, "width": 2},
                "rand_augment": [{"op_index": 1, "op": "Rotate", "magnitude": 9.0}],
            }
        )


def test_config_json_round_trip_and_validation() -> None:
    cfg = A.AugmentConfig(size=256, interpolation="bilinear", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert A.AugmentConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert A.AugmentConfig().to_dict()["ratio"] == [0.75, 4 / 3]
    for bad, message in [
        ({"interpolation": "cubic"}, "interpolation"),
        ({"size": "224"}, "size must be an integer"),
        ({"scale": (0.5, 0.1)}, "scale"),
        ({"magnitude": 31}, "magnitude"),
        ({"rand_augment_p": 1.5}, "rand_augment_p"),
        ({"sizes": 3}, "unknown keys"),
    ]:
        with pytest.raises(ConfigError, match=message):
            A.AugmentConfig.from_dict(bad)
    with pytest.raises(ValueError, match="size must be"):
        A.replay(_gradient(8, 8), [[0, 0, 8, 8], []], size=(0, 4))


# ------------------------------------------------------------------------------- dataloader
def test_dataloader_replays_records_in_workers(
    replay_dir: Path, entries: list[dict], images: list[Image.Image]
) -> None:
    expected = np.load(replay_dir / "replay_224.npz")
    sources = [replay_dir / entries[i]["image"] for i in range(6)]
    records = [entries[i]["param_aug"][3] for i in range(6)]
    dataset = A.AugmentDataset(sources, records)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=A.collate_augmented)
    batches = list(loader)
    uint8 = torch.cat([b[0] for b in batches])
    assert uint8.dtype == torch.uint8 and uint8.shape == (6, 3, 224, 224)
    assert [r for b in batches for r in b[1]] == records
    for i in range(6):
        np.testing.assert_array_equal(uint8[i].permute(1, 2, 0).numpy(), expected[f"img{i}_rec03"])


def test_dataset_seeded_sampling_independent_of_workers() -> None:
    imgs = [_gradient(90 + 7 * i, 70 + 3 * i, seed=i) for i in range(5)]
    dataset = A.AugmentDataset(imgs, config=A.AugmentConfig(size=64), seed=11)
    single = [dataset[i] for i in range(5)]
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=A.collate_augmented)
    multi = [(img, rec) for x, recs in loader for img, rec in zip(x, recs)]
    for img, (a, ra), (b, rb) in zip(imgs, single, multi):
        assert ra == rb and torch.equal(a, b)
        assert torch.equal(A.to_uint8_tensor(A.replay(img, ra, 64)), a)
    assert len({json.dumps(r) for _, r in single}) == 5
    with pytest.raises(DataError, match="5 images but 2 augmentation records"):
        A.AugmentDataset(imgs, records=[[None, None]] * 2)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_samples_then_replays_string_form(tmp_path: Path, replay_dir: Path, entries: list[dict]) -> None:
    from edgevl.cli import main

    image = str(replay_dir / entries[0]["image"])
    assert main(["augment", image, "--out", str(tmp_path / "s"), "--num", "2", "--seed", "3"]) == 0
    records = A.decode_paug((tmp_path / "s" / "paug.json").read_text())
    gen = torch.Generator().manual_seed(3)
    assert records == [A.sample_record(320, 240, generator=gen) for _ in range(2)]
    (tmp_path / "paug.json").write_text(entries[0]["paug_json_string_form"])
    assert main(["augment", image, "--out", str(tmp_path / "r"), "--paug", str(tmp_path / "paug.json")]) == 0
    expected = np.load(replay_dir / "replay_224.npz")
    for k in (0, 11):
        got = np.asarray(Image.open(tmp_path / "r" / f"aug_{k:02d}.png"))
        np.testing.assert_array_equal(got, expected[f"img0_rec{k:02d}"])
