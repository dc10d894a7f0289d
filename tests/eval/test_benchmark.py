"""`edgevl eval`: clip_benchmark JSON schema, task detection, and agreement with per-image computation."""

from __future__ import annotations

import json

import pytest
import torch

from edgevl.cli import main
from edgevl.data.classnames import read_classnames
from edgevl.data.templates import get_templates
from edgevl.errors import ConfigError
from edgevl.eval.benchmark import evaluate_retrieval, evaluate_zeroshot, guess_task, result_record
from edgevl.eval.retrieval import retrieval_metrics
from edgevl.eval.zeroshot import build_zero_shot_classifier, classification_metrics
from edgevl.inference import embed_images, embed_texts

MODEL = "world-student-mci"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    assert main(["world", "make", "--out", str(root / "folder"), "--n", "24", "--split", "test", "--format",
                 "folder"]) == 0
    assert main(["world", "make", "--out", str(root / "table"), "--n", "12", "--split", "test", "--format", "csv",
                 "--caption", "clean"]) == 0
    return root


def test_zeroshot_equals_per_image_computation(world, student_bundle):
    model, preprocess, tok = student_bundle
    folder = world / "folder"
    got = evaluate_zeroshot(model, preprocess, tok, f"folder:{folder}", batch_size=5)
    names = read_classnames(folder / "classnames.txt")
    templates = get_templates(str(folder / "zeroshot_classification_templates.txt"))
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    paths, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted((folder / cls).glob("*.png")):
            paths.append(f)
            labels.append(label)
    emb = embed_images(model, preprocess, paths, batch_size=1)
    logits = emb.vectors @ build_zero_shot_classifier(model, tok, names, templates)
    expected = classification_metrics(logits, torch.tensor(labels))
    assert got == pytest.approx(expected, abs=1e-6)


def test_retrieval_equals_direct(world, student_bundle):
    model, preprocess, tok = student_bundle
    table = next((world / "table").glob("*.csv"))
    got = evaluate_retrieval(model, preprocess, tok, f"csv:{table}", batch_size=4, ks=(1, 5))
    import csv

    rows = list(csv.DictReader(table.open()))
    img = embed_images(model, preprocess, [table.parent / r["filepath"] for r in rows], batch_size=1)
    txt = embed_texts(model, tok, [r["title"] for r in rows])
    assert got == pytest.approx(retrieval_metrics(img.vectors, txt.vectors, list(range(len(rows))), (1, 5)), abs=1e-6)


def test_schema_and_cli(world, tmp_path):
    out = tmp_path / "res.json"
    assert main(["eval", "--data", f"folder:{world / 'folder'}", "--model", MODEL, "--output", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert set(rec) == {"dataset", "model", "pretrained", "task", "metrics", "language"}
    assert rec["task"] == "zeroshot_classification"
    assert set(rec["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert all(0.0 <= v <= 1.0 for v in rec["metrics"].values())


def test_task_guess_and_errors(world, student_bundle):
    assert guess_task(f"folder:{world / 'folder'}") == "zeroshot_classification"
    assert guess_task("wds:/x/{0..3}.tar") == "zeroshot_retrieval"
    assert result_record("d", "m", None, "t", {})["pretrained"] == ""
    model, preprocess, tok = student_bundle
    table = next((world / "table").glob("*.csv"))
    with pytest.raises(ConfigError, match="class-folder"):
        evaluate_zeroshot(model, preprocess, tok, f"csv:{table}")
    bad = world / "names.txt"
    bad.write_text("only one\n")
    with pytest.raises(ConfigError, match="class names given"):
        evaluate_zeroshot(model, preprocess, tok, f"folder:{world / 'folder'}", classnames=str(bad))
