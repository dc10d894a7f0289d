"""ExecuTorch, LiteRT, OpenVINO and Core ML packages: parity with PyTorch on real images and texts, the manifest,
variants, failures (missing extra, failed parity), the captioner in OpenVINO (its growing cache; the phone formats'
fixed-size cache is in test_static_cache.py) and the world quality figures.

Each backend's test skips, printing the reason, when its optional extra is not installed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from backends_needed import need

import edgevl
from edgevl.export.backends import BACKENDS
from edgevl.export.pipeline import export_model
from edgevl.export.runners import PackageCaptioner, PackageCLIP, load_package
from edgevl.export.runtime import ExportError

# The device runtimes run in a pytest process of their own (`pytest -m runtimes`, README): OpenVINO, ExecuTorch and
# LiteRT loaded into the main test process made it crash (SIGSEGV) in unrelated later tests.
pytestmark = pytest.mark.runtimes

TEXTS = ["a red circle.", "two blue squares on the left of a green star.", "x"]
MODEL = "world-student-mci"


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def world_batch(model, n: int = 3):
    """Rendered world test images (preprocessed for `model`) and their first captions tokenized."""
    from edgevl.data.transforms import ImageTransform
    from edgevl.data.world import samples
    from edgevl.models.factory import preprocess_cfg_for

    drawn = list(samples(n, split="test", seed=7))
    pixels = torch.stack([ImageTransform(preprocess_cfg_for(model))(s.image) for s in drawn])
    return pixels, edgevl.get_tokenizer(context_length=model.context_length)([s.captions[0] for s in drawn])


TINY = {  # world-student-mci shrunk: conversion time is what these tests spend
    "embed_dim": 16,
    "vision_cfg": {"timm_model_name": "fastvit_mci0", "image_size": 32,
                   "timm_model_kwargs": {"layers": [1, 1, 1, 1], "embed_dims": [8, 8, 16, 32]}},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1,
                 "no_causal_mask": True},
    "preprocess_cfg": {"size": 32, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bicubic",
                       "resize_mode": "shortest"},
}
PARTS = {"executorch": ("image",), "litert": ("image", "text"), "openvino": ("image", "text")}


def export_tiny(fmt: str, out, parts=("image", "text"), variants=()):
    """The tiny student's towers as `fmt` packages in `out`; returns (model, manifest)."""
    from edgevl.export.onnx import export_clip
    from edgevl.export.packages import package_manifest

    torch.manual_seed(0)
    model = edgevl.create_model(MODEL, **TINY)
    backend = BACKENDS[fmt]
    manifest = export_clip(model, out, model_name=MODEL, parts=parts, backend=backend, variants=variants,
                           manifest=package_manifest(backend, 1e-4))
    return model, manifest


@pytest.fixture(scope="module")
def litert_package(tmp_path_factory):
    need("litert")
    out = tmp_path_factory.mktemp("litert")
    model, manifest = export_tiny("litert", out)
    return model, out, manifest


@pytest.mark.parametrize("fmt", ["executorch", "litert", "openvino"])
def test_package_matches_pytorch_on_world_images_and_texts(fmt, tmp_path, request):
    need(fmt)
    if fmt == "litert":
        model, out, manifest = request.getfixturevalue("litert_package")
    else:
        out = tmp_path
        model, manifest = export_tiny(fmt, out, PARTS[fmt])
    assert manifest["format"] == fmt and manifest["tokenizer"]["file"] == "tokenizer.json"
    assert set(manifest["graphs"]) == set(PARTS[fmt])
    for record in manifest["graphs"].values():
        assert set(record["parity"]) == {"1", "5", "real"}
        assert record["parity_worst"]["relative_error"] <= 1e-4
        assert (out / record["file"]).is_file()
    runner, folded = load_package(out), edgevl.reparameterize(model)
    assert isinstance(runner, PackageCLIP)
    pixels, ids = world_batch(model)
    with torch.no_grad():
        if "text" in manifest["graphs"]:
            assert relative_error(runner.encode_text(ids), folded.encode_text(ids)) <= 1e-4
        assert relative_error(runner.encode_image(pixels), folded.encode_image(pixels)) <= 1e-4
        assert manifest["logit_multiplier"] == pytest.approx(float(folded.scale()))


@pytest.mark.slow  # ~1-2 min per format on the shared 2-core machine: both towers of a registered model + a variant
@pytest.mark.parametrize("fmt", ["executorch", "litert", "openvino"])
def test_cli_exports_both_towers_and_a_variant(fmt, tmp_path):
    need(fmt)
    from edgevl.cli import main

    variant = {"executorch": "int8", "litert": "int8", "openvino": "fp16"}[fmt]
    torch.manual_seed(0)
    assert main(["export", "--model", "world-teacher-vit", "--format", fmt, "--variants", variant,
                 "--out", str(tmp_path)]) == 0
    torch.manual_seed(0)
    model = edgevl.create_model("world-teacher-vit")
    runner, quantized = load_package(tmp_path), load_package(tmp_path, precision=variant)
    manifest = runner.manifest
    assert set(manifest["graphs"]) == {"image", "text"}
    pixels, ids = world_batch(model)
    with torch.no_grad():
        assert relative_error(runner.encode_text(ids), model.encode_text(ids)) <= 1e-4
        assert relative_error(runner.encode_image(pixels), model.encode_image(pixels)) <= 1e-4
        for name, record in manifest["graphs"].items():
            assert record[variant]["cosine_min"] >= 0.99, name
        cos = torch.cosine_similarity(quantized.encode_image(pixels), model.encode_image(pixels))
        assert float(cos.min()) >= 0.99


def test_missing_extra_names_it_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ExportError, match=r"^OpenVINO needs .*pip install 'edgevl\[openvino\]'$"):
        export_model(tmp_path, model_name=MODEL, fmt="openvino")


def test_failed_parity_deletes_the_package(tmp_path):
    need("openvino")
    with pytest.raises(ExportError, match="OpenVINO parity check failed for text"):
        export_model(tmp_path, model_name=MODEL, fmt="openvino", parts="text", tolerance=-1.0)
    assert not list(tmp_path.glob("text*.xml")) and not list(tmp_path.glob("text*.bin"))


def test_unsupported_variant_is_refused_before_work(tmp_path):
    with pytest.raises(ExportError, match=r"--format openvino has variants \['fp16'\], not \['int8'\]"):
        export_model(tmp_path, model_name=MODEL, fmt="openvino", variants="int8")


def test_coreml_is_converted_and_checked_structurally(tmp_path):
    need("coreml")
    _, manifest = export_tiny("coreml", tmp_path, ("text",), variants=("fp16",))
    record = manifest["graphs"]["text"]
    structure = record["structure"]
    assert structure["inputs"][0]["shape"] == [1, 12] and structure["outputs"][0]["shape"] == [1, 16]
    assert structure["ops"] and "parity" not in record and "needs macOS" in structure["prediction"]
    assert record["fp16"]["structure"]["outputs"][0]["shape"] == [1, 16]
    assert (tmp_path / "text.mlpackage").is_dir() and (tmp_path / "text.fp16.mlpackage").is_dir()


@pytest.mark.slow  # ~45 s: OpenVINO traces both captioner graphs
def test_openvino_captioner_decodes_like_pytorch(tmp_path):
    need("openvino")
    from edgevl.models.lightcap.decoding import greedy_decode
    from edgevl.models.lightcap.model import create_lightcap

    torch.manual_seed(0)
    export_model(tmp_path, parts="captioner", captioner="lightcap-tiny", fmt="openvino")
    torch.manual_seed(0)
    folded = create_lightcap("lightcap-tiny").fold_backbone()
    runner = load_package(tmp_path)
    assert isinstance(runner, PackageCaptioner)
    pixels = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = [h.tokens for h in greedy_decode(folded, folded.start(pixels), 2, 8)]
    assert [h.tokens for h in greedy_decode(runner, runner.start(pixels), 2, 8)] == expected


@pytest.mark.slow  # ~1 min: two towers, four world tasks, three scorers
def test_world_quality_scores_every_precision_and_refuses_lossy_variants(tmp_path, capsys):
    need("openvino")
    torch.manual_seed(0)
    manifest = export_model(tmp_path, model_name="world-teacher-vit", fmt="openvino", variants="fp16",
                            eval_world=True, world_samples=8, progress=print)
    world = manifest["world_eval"]
    for row in world["tasks"].values():
        assert abs(row["delta_fp32"]) <= 1 / 8 and row["delta_fp16"] == pytest.approx(row["fp16"] - row["torch"])
    assert set(world["retrieval"]) == {"task", "torch", "fp32", "fp16"}
    assert world["image_cosine"]["fp32"]["min"] > 0.9999 and world["image_cosine"]["fp16"]["min"] > 0.99
    refused = world["top1_drop_over_limit"]
    for precision in ("fp32", "fp16"):
        dropped = any(row[f"delta_{precision}"] < -0.01 for row in world["tasks"].values())
        assert (precision in refused) == dropped
    if "fp16" in refused:  # the refusal is loud and removes the files
        assert "REFUSED the fp16 variant" in capsys.readouterr().out
        assert not list(tmp_path.glob("*.fp16.*"))


def test_a_variant_losing_top1_is_deleted_loudly(tmp_path, capsys):
    from edgevl.export.pipeline import _refuse_lossy_variants

    (tmp_path / "image.fp16.xml").write_text("x")
    (tmp_path / "image.fp16.bin").write_text("x")
    manifest = {"graphs": {"image": {"file": "image.xml", "fp16": {"file": "image.fp16.xml",
                                                                   "data_files": {"image.fp16.bin": None}}}},
                "world_eval": {"tasks": {"shape": {"delta_fp16": -0.015}, "color": {"delta_fp16": 0.0}},
                               "top1_drop_over_limit": ["fp16"]}}
    _refuse_lossy_variants(tmp_path, manifest, print)
    assert not list(tmp_path.iterdir()) and "fp16" not in manifest["graphs"]["image"]
    assert manifest["rejected_variants"]["fp16"]["top1_deltas"] == {"shape": -0.015, "color": 0.0}
    printed = capsys.readouterr().out
    assert "REFUSED the fp16 variant" in printed and "shape -1.5 pts" in printed


TOKENIZER_TEXTS = ["a red circle.", "Two BLUE squares,   left of a green star!", "café &amp; crème brûlée",
                   "<start_of_text> it's 42 o'clock", "x" * 3, "emoji 🙂 and 日本語 text" * 3]


def test_tokenizer_json_reproduces_edgevl_ids_without_torch_code(litert_package):
    from edgevl.export.standalone_litert import BpeTokenizer

    _, out, manifest = litert_package
    app = BpeTokenizer(out / manifest["tokenizer"]["file"])
    expected = edgevl.get_tokenizer(context_length=12)(TOKENIZER_TEXTS)
    assert [app(t).tolist() for t in TOKENIZER_TEXTS] == expected.tolist()


BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""


def test_standalone_litert_sample_runs_without_torch(litert_package, tmp_path):
    import subprocess

    from edgevl.data.world import samples

    model, out, _ = litert_package
    drawn = next(samples(1, split="test", seed=3))
    image = tmp_path / "scene.png"
    drawn.image.resize((48, 40)).save(image)  # not square, not the model size: resize + crop are exercised
    labels = [drawn.captions[0], "a photo of nothing", "three green triangles"]
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH)
    script = Path(edgevl.__file__).parent / "export" / "standalone_litert.py"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}  # sitecustomize only: the sample must not need edgevl
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert "torch is blocked" in check.stderr
    run = subprocess.run([sys.executable, str(script), str(out), str(image), *labels], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    probs = {line.split(" ", 1)[1]: float(line.split(" ", 1)[0]) for line in run.stdout.strip().splitlines()}
    from edgevl.data.transforms import ImageTransform
    from edgevl.models.factory import preprocess_cfg_for

    folded = edgevl.reparameterize(model)
    with torch.no_grad():
        pixels = ImageTransform(preprocess_cfg_for(model))(image)[None]
        ids = edgevl.get_tokenizer(context_length=model.context_length)(labels)
        img = torch.nn.functional.normalize(folded.encode_image(pixels), dim=-1)
        txt = torch.nn.functional.normalize(folded.encode_text(ids), dim=-1)
        expected = (folded.scale() * img @ txt.T).softmax(-1)[0]
    assert list(probs) == labels
    assert [probs[label] for label in labels] == pytest.approx(expected.tolist(), abs=1e-4)


def test_aot_format_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(ExportError, match="--format aot has none"):
        export_model(tmp_path, model_name=MODEL, fmt="aot", eval_world=True)
    with pytest.raises(ExportError, match="towers only"):
        export_model(tmp_path, model_name=MODEL, fmt="aot", parts="text,captioner")


@pytest.mark.slow  # ~20 s: a captioner export with int8 and 8 world images captioned three times
def test_caption_eval_scores_cider_for_every_precision(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    manifest = export_model(tmp_path, parts="captioner", captioner="lightcap-tiny", exporter="legacy",
                            variants="int8", eval_world=True, world_samples=8)
    scores = manifest["caption_eval"]
    assert scores["n"] == 8 and scores["torch"]["same_as_torch"] == 1.0
    assert scores["fp32"]["same_as_torch"] == 1.0 and scores["fp32"]["cider_d"] == scores["torch"]["cider_d"]
    assert 0.0 <= scores["int8"]["same_as_torch"] <= 1.0 and scores["int8"]["cider_d"] >= 0.0
