"""`train-captioner --teacher COCA`: sequence-level distillation on images without captions. The teacher's
captions equal `edgevl.caption`'s, are cached per batch in the run folder, survive a kill mid-write, and become
the student's references and vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import edgevl
from edgevl.cli import main
from edgevl.data.world import generate
from edgevl.errors import ConfigError
from edgevl.models.lightcap.config import get_lightcap_config
from edgevl.train import caption_teacher
from edgevl.train.caption_teacher import CACHE_FILE, TeacherRecipe, is_caption_teacher, teacher_captions
from edgevl.train.captioner import CaptionerTrainConfig, CaptionerTrainer

COCA = str(Path(__file__).parents[1] / "fixtures" / "coca" / "coca_tiny_rv")
MICRO = {"name": "lightcap-micro", "backbone": {"type": "clip_resnet", "layers": [1, 1, 1, 1], "width": 8},
         "image_size": 64, "hidden": 32, "layers": 1, "heads": 2, "ffn": 64, "max_caption_tokens": 16,
         "num_concepts": 8, "concept_top_k": 4, "concept_joint_dim": 16, "concept_hidden": 16, "num_heads": 1}
N_IMAGES = 20  # two teacher batches: 16 + 4


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()  # `--threads 1` sets torch's process-wide count
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, str]:
    """20 world images in an image folder (no captions anywhere) and a micro student config."""
    root = tmp_path_factory.mktemp("photos")
    folder = root / "photos" / "all"
    folder.mkdir(parents=True)
    for i in range(N_IMAGES):
        generate(i, split="train", seed=1, size=64).image.save(folder / f"img{i:02d}.png")
    student = root / "student.json"
    student.write_text(json.dumps({**get_lightcap_config("lightcap-tiny").to_dict(), **MICRO}))
    return {"data": f"folder:{root / 'photos'}", "folder": str(folder), "student": str(student)}


def test_teacher_spec_family(photos, tmp_path):
    assert is_caption_teacher(COCA) and is_caption_teacher("coca_ViT-L-14:mscoco_finetuned_laion2b_s13b_b90k")
    assert not is_caption_teacher(None) and not is_caption_teacher(photos["student"])


def test_captions_are_edgevls_cached_and_resume_after_a_kill(photos, tmp_path):
    recipe = TeacherRecipe(beam=2, samples=1, max_tokens=8)
    got = teacher_captions(COCA, photos["data"], tmp_path, recipe=recipe, seed=3)
    files = sorted(Path(photos["folder"]).glob("*.png"))
    assert len(got) == N_IMAGES and all(len(v) == 2 for v in got.values())
    beams = edgevl.caption([str(f) for f in files], model=COCA, beam=2, max_words=8)
    assert [got[k][0] for k in sorted(got)] == beams  # the first caption is the public beam-search caption
    cache = tmp_path / CACHE_FILE
    lines = cache.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["recipe"]["beam"] == 2  # header + one line per batch
    cache.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])  # killed writing batch 1
    calls = []
    real = caption_teacher._caption_batch
    caption_teacher._caption_batch = lambda *a: calls.append(a[2]) or real(*a)
    try:
        again = teacher_captions(COCA, photos["data"], tmp_path, recipe=recipe, seed=3)
    finally:
        caption_teacher._caption_batch = real
    assert again == got and len(calls) == 1 and len(calls[0]) == 4  # only the cut batch was captioned again
    other = teacher_captions(COCA, photos["data"], tmp_path, recipe=TeacherRecipe(beam=1, max_tokens=8), seed=3)
    assert json.loads(cache.read_text().splitlines()[0])["recipe"]["beam"] == 1 and len(other) == N_IMAGES


def test_student_trains_on_the_teachers_captions(photos, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = CaptionerTrainConfig(config=photos["student"], train_data=photos["data"], out=str(out), teacher=COCA,
                               teacher_beam=2, steps=3, batch_size=4, warmup=1, progress=False)
    trainer = CaptionerTrainer(cfg)
    cached = {}
    for line in (out / CACHE_FILE).read_text().splitlines()[1:]:
        record = json.loads(line)
        cached.update(zip(record["keys"], record["captions"]))
    assert len(trainer.train) == N_IMAGES and trainer.teacher is None
    assert trainer.train.references == [cached[k] for k in trainer.train.keys]
    words = {w for refs in cached.values() for text in refs for w in text.split()}
    assert set(trainer.model.vocab.words) & words  # the student's vocabulary comes from the teacher's captions
    assert trainer.fit()["steps"] == 3
    with pytest.raises(ConfigError, match="CoCa teacher"):
        CaptionerTrainer(CaptionerTrainConfig(config=photos["student"], train_data=photos["data"],
                                              out=str(tmp_path / "x"), teacher=COCA, ensemble_distill=True))
    code = main(["train-captioner", "--config", photos["student"], "--train-data", photos["data"], "--teacher", COCA,
                 "--teacher-beam", "1", "--steps", "2", "--batch-size", "4", "--out", str(tmp_path / "cli"),
                 "--threads", "1"])
    assert code == 0 and (tmp_path / "cli" / "model").is_dir()
