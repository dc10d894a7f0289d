"""AOTInductor packages: compiled towers equal the eager model, fixed shapes and build environment are checked."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import edgevl
import edgevl.export.aot
from edgevl.cli import main
from edgevl.errors import DataError
from edgevl.export.aot import AOT_MANIFEST, AotCLIP, AotError, compile_clip, compile_module
from edgevl.models.factory import preprocess_cfg_for

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="AOTInductor needs a C++ compiler")

NAME = "world-student-mci"
BATCH = 2


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = edgevl.create_model(NAME).eval()
    with torch.no_grad():  # non-trivial layer scales and BN statistics, so a wrong fold would show
        for module in m.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        for name, p in m.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def compiled(model, tmp_path_factory) -> tuple[dict, object]:
    out = tmp_path_factory.mktemp("aot")
    manifest = compile_clip(model, out, batch=BATCH, model_name=NAME)
    return manifest, out


def test_compiled_towers_match_eager_on_new_inputs(model, compiled):
    manifest, out = compiled
    clip = AotCLIP(out)
    size = manifest["towers"]["image"]["shape"][2]
    gen = torch.Generator().manual_seed(7)
    images = torch.randn(BATCH, 3, size, size, generator=gen)
    ids = edgevl.tokenize(["a red cube on the left", "two small blue spheres"], model.context_length)
    with torch.inference_mode():
        img_ref, txt_ref = model.encode_image(images), model.encode_text(ids)
        img, txt = clip.encode_image(images), clip.encode_text(ids)
        assert (img - img_ref).abs().max() <= 1e-5 * img_ref.abs().max().clamp(min=1)
        assert (txt - txt_ref).abs().max() <= 1e-5 * txt_ref.abs().max().clamp(min=1)
        torch.testing.assert_close(clip.encode_image(images, normalize=True),
                                   model.encode_image(images, normalize=True), atol=1e-5, rtol=0)
    assert manifest["torch"] == torch.__version__
    assert manifest["towers"]["text"]["shape"] == [BATCH, model.context_length]
    assert clip.scale().item() == pytest.approx(model.scale().item())
    assert clip.context_length == model.context_length
    assert clip.preprocess_cfg == preprocess_cfg_for(model)


@pytest.mark.parametrize("n", [1, BATCH + 1, 2 * BATCH])
def test_other_batch_sizes_run_in_padded_chunks(model, compiled, n):
    manifest, out = compiled
    clip = AotCLIP(out)
    size = manifest["towers"]["image"]["shape"][2]
    images = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n))
    ids = edgevl.tokenize([f"{i} green cones" for i in range(n)], model.context_length)
    with torch.inference_mode():
        torch.testing.assert_close(clip.encode_image(images), model.encode_image(images), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(clip.encode_text(ids), model.encode_text(ids), atol=1e-5, rtol=1e-5)


def test_other_shapes_are_refused_with_the_compiled_shape(compiled):
    manifest, out = compiled
    clip = AotCLIP(out)
    size = manifest["towers"]["image"]["shape"][2]
    with pytest.raises(DataError, match=rf"\[batch, 3, {size}, {size}\]"):
        clip.encode_image(torch.zeros(BATCH, 3, size + 32, size + 32))
    with pytest.raises(DataError, match="torch.int64"):
        clip.encode_text(torch.zeros(BATCH, manifest["towers"]["text"]["shape"][1], dtype=torch.int32))


def test_packages_from_another_build_are_refused(compiled, tmp_path):
    _, out = compiled
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / AOT_MANIFEST).read_text())
    manifest["torch"] = "1.0.0"
    (copy / AOT_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(AotError, match="torch 1.0.0"):
        AotCLIP(copy)
    with pytest.raises(AotError, match="no aot.json"):
        AotCLIP(tmp_path)


def test_missing_tower_is_named(model, tmp_path):
    compile_clip(model, tmp_path, batch=1, towers=("text",))
    clip = AotCLIP(tmp_path)
    assert set(clip.towers) == {"text"}
    with pytest.raises(AotError, match="no image tower"):
        clip.encode_image(torch.zeros(1, 3, 64, 64))


def test_bad_arguments_fail_before_compiling(model, tmp_path):
    with pytest.raises(AotError, match="subset"):
        compile_clip(model, tmp_path, towers=("audio",))
    with pytest.raises(AotError, match="at least 1"):
        compile_clip(model, tmp_path, batch=0)
    assert not any(tmp_path.iterdir())


def test_failed_compile_leaves_no_file(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: torch.export refuses it
                return x
            return -x

    with pytest.raises(AotError, match="could not compile Broken"):
        compile_module(Broken(), torch.ones(2), tmp_path / "broken.pt2")
    assert list(tmp_path.iterdir()) == []


def test_cli_compile_then_embed_with_aot(model, tmp_path, capsys):
    weights = tmp_path / "weights"
    edgevl.save_pretrained(model, weights)
    packages = tmp_path / "aot"
    assert main(["compile", "--model", NAME, "--pretrained", str(weights), "--out", str(packages), "--batch", "2",
                 "--towers", "text"]) == 0
    assert "text.pt2" in capsys.readouterr().out
    texts = ["a red cube", "two blue spheres", "a green cone"]
    assert main(["embed", "--texts", *texts, "--aot", str(packages), "--out", str(tmp_path / "aot.npy")]) == 0
    assert main(["embed", "--texts", *texts, "--model", NAME, "--pretrained", str(weights),
                 "--out", str(tmp_path / "torch.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "aot.npy"), np.load(tmp_path / "torch.npy"), atol=1e-5)
    assert main(["classify", str(tmp_path / "none.png"), "--labels", "a,b", "--aot", str(tmp_path)]) == 2
    assert "no aot.json" in capsys.readouterr().err


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="CPU without oneDNN bf16")
def test_bf16_packages_stay_close_to_fp32(model, tmp_path):
    manifest = compile_clip(model, tmp_path, batch=1, towers=("image",), precision="bf16")
    assert manifest["precision"] == "bf16"
    clip = AotCLIP(tmp_path)
    images = torch.rand(3, 3, *manifest["towers"]["image"]["shape"][2:], generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        got, ref = clip.encode_image(images), model.encode_image(images)
    assert got.dtype == torch.float32
    assert (got - ref).abs().max() <= 5e-2 * ref.abs().max()
    assert torch.nn.functional.cosine_similarity(got, ref).min() > 0.99


def test_unknown_precision_is_refused(model, tmp_path):
    with pytest.raises(AotError, match="precision"):
        compile_clip(model, tmp_path, precision="int4")


def test_a_package_failing_its_parity_check_is_removed(model, tmp_path, monkeypatch):
    monkeypatch.setitem(edgevl.export.aot.TOLERANCE, "fp32", -1.0)  # every package now counts as wrong
    with pytest.raises(AotError, match="compiled text tower differs"):
        compile_clip(model, tmp_path, towers=("text",))
    assert list(tmp_path.iterdir()) == []
