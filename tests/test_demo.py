"""`edgevl demo` and the shipped world models: the whole pipeline on tiny sizes, the `--quick` result (slow),
and the pieces the report's numbers rest on."""

from __future__ import annotations

import json

import pytest
import torch

from edgevl.cli import main
from edgevl.demo import DemoSettings, resolve_models, run_demo, steps_to_reach
from edgevl.errors import CheckpointError, ConfigError
from edgevl.world_models import NAMES, ROOT, load_captioner, load_teacher, pretrained_dir

TINY = DemoSettings(n_train=32, steps=2, batch_size=16, eval_every=1, n_test=16, n_heldout=8, num_augs=1,
                    num_syn_captions=1, warmup=1, n_examples=2)
FINAL_KEYS = {"color_shape", "shape", "color", "count", "color_shape@heldout", "i2t_R@1", "i2t_R@5", "t2i_R@1",
              "t2i_R@5"}

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest single-threaded on a shared CPU


def test_demo_whole_path_on_tiny_sizes(tmp_path):
    summary = run_demo(tmp_path, settings=TINY, progress=False)
    for name in ("report.md", "metrics.json", "accuracy_vs_steps.png", "examples.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(summary))
    plain, reinforced = summary["curves"]["plain"], summary["curves"]["reinforced"]
    assert [p["step"] for p in plain] == [p["step"] for p in reinforced] == [0, 1, 2]
    assert plain[0] == reinforced[0]  # same student, same initial weights, same evaluation data
    for run in ("plain", "reinforced"):
        assert FINAL_KEYS <= set(summary["final"][run])
        assert all(0.0 <= v <= 1.0 for k, v in summary["final"][run].items() if k != "step")
    h = summary["headline"]
    reached = steps_to_reach(reinforced[1:], plain[-1]["color_shape"])
    assert h["reinforced_steps_to_plain_final"] == reached
    assert h["plain_improved"] == (plain[-1]["color_shape"] > plain[0]["color_shape"])
    assert h["fewer_steps"] == (2 / reached if reached and h["plain_improved"] else None)
    report = (tmp_path / "report.md").read_text()
    assert "| color_shape@heldout |" in report and "| t2i_R@5 |" in report and "Headline" in report
    captioner = summary["captioner"]
    assert {"CIDEr", "Bleu_4", "color_acc", "shape_acc", "color_shape_acc", "count_stated"} <= set(captioner)
    assert f"| colour and shape both right (%) | {100 * captioner['color_shape_acc']:.1f} |" in report
    assert f"| CIDEr-D | {captioner['CIDEr']:.3f} |" in report
    assert "caption's colour+shape" in report
    manifest = json.loads((tmp_path / "data" / "reinforced" / "manifest.json").read_text())
    assert [t["embed_dim"] for t in manifest["teachers"]] == [load_teacher(n).model_cfg["embed_dim"]
                                                              for n in ("teacher-mci", "teacher-mci-wide")]


def test_quick_demo_cli_end_to_end(tmp_path, capsys):
    """`edgevl demo --quick` (about 2 min here), fixed seeds: report, plots, both runs' final metrics, and the
    reinforced student ahead of the plain one on the headline task and on colour."""
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    assert "report:" in capsys.readouterr().out
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert all(FINAL_KEYS <= set(summary["final"][run]) for run in ("plain", "reinforced"))
    assert (tmp_path / "examples.png").is_file() and (tmp_path / "accuracy_vs_steps.png").is_file()
    plain, reinforced = summary["final"]["plain"], summary["final"]["reinforced"]
    assert reinforced["color_shape"] > plain["color_shape"]
    assert reinforced["color"] > plain["color"]


@pytest.mark.slow
def test_full_demo_reinforced_student_beats_plain(tmp_path):
    """The documented full run (about 10 min here), fixed seeds: the reinforced student ends higher on the
    headline task, on colour and on the held-out compositions, and reaches the plain final level earlier."""
    summary = run_demo(tmp_path, progress=False)
    plain, reinforced = summary["final"]["plain"], summary["final"]["reinforced"]
    for key in ("color_shape", "color", "color_shape@heldout"):
        assert reinforced[key] > plain[key], key
    assert summary["headline"]["fewer_steps"] and summary["headline"]["fewer_steps"] > 1


def test_steps_to_reach_takes_the_first_step_at_or_above_the_target():
    curve = [{"step": 0, "color_shape": 0.0}, {"step": 10, "color_shape": 0.3}, {"step": 20, "color_shape": 0.2},
             {"step": 30, "color_shape": 0.5}]
    assert steps_to_reach(curve, 0.3) == 10
    assert steps_to_reach(curve, 0.4) == 30
    assert steps_to_reach(curve, 0.6) is None


def test_shipped_world_models_fit_the_size_budget_and_load():
    total = sum(f.stat().st_size for f in ROOT.rglob("*") if f.is_file() and f.parent.name in NAMES)
    assert total <= 30 * 2**20
    for name in NAMES:
        assert (pretrained_dir(name) / "model.safetensors").is_file()
    assert load_captioner().vocab.period_id is not None


def test_shipped_teachers_beat_chance_clearly():
    """An independent check of the shipped weights (not their recorded numbers) on fresh test images (world
    seed 7): colour far above chance (1/10), shape above chance (1/8), the 80-way color_shape above 14x chance."""
    from edgevl.tokenizer import get_tokenizer
    from edgevl.world_models.data import pixel_transform
    from edgevl.world_models.evaluate import EvalSet, evaluate_world

    data = EvalSet.make(120, 0, seed=7)
    for name in ("teacher-mci", "teacher-mci-wide"):
        model = load_teacher(name)
        pp = model.preprocess_cfg
        metrics = evaluate_world(model, get_tokenizer(context_length=model.context_length),
                                 pixel_transform(pp["mean"], pp["std"]), data, retrieval=False)
        assert metrics["color"] > 0.8 and metrics["color_shape"] > 0.18 and metrics["shape"] > 0.18, (name, metrics)


def test_unknown_or_missing_world_models_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="teacher-big"):
        pretrained_dir("teacher-big")
    with pytest.raises(ConfigError, match="teacher-mci"):
        resolve_models(tmp_path)


def test_demo_rejects_zero_steps(tmp_path):
    with pytest.raises(ConfigError, match="--steps"):
        run_demo(tmp_path, steps=0, progress=False)


def test_world_captioner_backbone_is_the_teacher_trunk():
    from edgevl.data.world import samples
    from edgevl.models.factory import create_model
    from edgevl.world_models.captioner import CONCEPTS, build_world_captioner

    torch.manual_seed(0)
    teacher = create_model("world-teacher-mci")
    model = build_world_captioner(teacher, [c for s in samples(20) for c in s.captions])
    trunk = model.backbone.trunk.state_dict()
    for key, value in teacher.state_dict().items():
        if key.startswith("visual.trunk.") and ".head." not in key:
            assert torch.equal(trunk[key[len("visual.trunk."):]], value), key
    assert model.concept_names == list(CONCEPTS)
    assert model.vocab.period_id is not None


def test_world_pretrain_cli_writes_a_loadable_teacher(tmp_path, monkeypatch):
    import edgevl.world_models.pretrain as pretrain

    monkeypatch.setattr(pretrain, "EVAL_TEST", 16)
    monkeypatch.setattr(pretrain, "EVAL_HELDOUT", 8)
    monkeypatch.setitem(pretrain.TEACHERS, "teacher-mci-wide", pretrain.TeacherRecipe("world-teacher-mci-wide", 2, 8))
    assert main(["world", "pretrain", "--what", "teacher-mci-wide", "--out", str(tmp_path), "--steps", "2"]) == 0
    record = json.loads((tmp_path / "teacher-mci-wide" / "pretrain.json").read_text())
    assert record["steps"] == 2 and {"color_shape", "color_shape@heldout", "t2i_R@1"} <= set(record["metrics"])
    model = load_teacher("teacher-mci-wide", tmp_path)
    assert model.model_cfg["embed_dim"] == 64
    assert next(model.parameters()).dtype == torch.float32


def test_world_pretrain_captioner_writes_a_loadable_captioner(tmp_path, monkeypatch):
    import edgevl.world_models.captioner as recipe

    monkeypatch.setattr(recipe, "TRAIN_IMAGES", 64)
    monkeypatch.setattr(recipe, "EVAL_IMAGES", 8)
    monkeypatch.setattr(recipe, "VOCAB_SAMPLES", 50)
    record = recipe.pretrain_captioner(tmp_path, steps=2)
    assert record["backbone_teacher"] == "teacher-mci" and record["steps"] == 2
    assert {"CIDEr", "Bleu_4", "color_acc", "shape_acc", "color_shape_acc", "count_stated"} <= set(record["metrics"])
    from edgevl.models.lightcap.model import create_lightcap

    trunk = create_lightcap(tmp_path / "captioner").backbone.trunk.state_dict()  # unfolded
    teacher = load_teacher("teacher-mci").state_dict()  # no teacher in tmp_path: the shipped one is used
    for key, value in trunk.items():
        assert torch.equal(value, teacher[f"visual.trunk.{key}"]), key
    assert load_captioner(tmp_path).vocab.period_id is not None
