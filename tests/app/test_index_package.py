"""`edgevl index --package DIR`: AOTInductor packages from `edgevl compile` index and search like the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import edgevl
from edgevl.app.engine import Engine, ModelSpec
from edgevl.cli import main
from edgevl.data.world import make
from edgevl.export.aot import compile_clip

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="AOTInductor needs a C++ compiler")

NAME = "world-student-mci"


def test_a_compiled_package_indexes_and_searches_like_its_model(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    model = edgevl.create_model(NAME).eval()
    package = tmp_path / "package"
    compile_clip(model, package, batch=4, model_name=NAME)
    photos, db = tmp_path / "photos", tmp_path / "photos.db"
    make(photos, 10, split="val", seed=0, fmt="photos")

    engine = Engine(ModelSpec(package=str(package), captioner="none"))
    assert engine.name == f"package:{NAME}"
    texts = ["a red star", "a blue circle"]
    fast = edgevl.optimize_for_inference(model)
    with torch.inference_mode():
        want = fast.encode_text(edgevl.get_tokenizer(NAME)(texts), normalize=True)
    torch.testing.assert_close(engine.encode_texts(texts), want, rtol=1e-4, atol=1e-5)

    assert main(["index", str(photos), "--package", str(package), "--db", str(db), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", "a red star", "--db", str(db), "-k", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == 3 and all(Path(r["path"]).is_relative_to(photos) for r in results)
