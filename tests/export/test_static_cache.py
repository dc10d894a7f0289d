"""The fixed-size KV cache captioner graphs of the phone formats: the same log-probs as `LightCap.step` at every
step of a greedy decode, the Core ML conversion of both graphs, and ExecuTorch / LiteRT packages decoding like
PyTorch through `PackageCaptioner` (the CLI round trip is in tests/cli/test_package_flag.py).

The package tests skip, printing the reason, when the backend's optional extra is not installed.
"""

from __future__ import annotations

import pytest
import torch
from backends_needed import need

from edgevl.export.backends import BACKENDS
from edgevl.export.graphs import captioner_graphs
from edgevl.export.runtime import ExportError
from edgevl.models.lightcap.decoding import beam_search, greedy_decode
from edgevl.models.lightcap.model import create_lightcap


def folded_lightcap(name: str = "lightcap-tiny", seed: int = 0):
    torch.manual_seed(seed)
    return create_lightcap(name).eval().fold_backbone()


def assert_log_probs_close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-4) -> None:
    """Blocked tokens (-inf) at the same places, the rest within `tolerance` relative to the largest |log-prob|."""
    finite = torch.isfinite(expected)
    assert torch.equal(finite, torch.isfinite(actual))
    error = (actual[finite] - expected[finite]).abs().max() / expected[finite].abs().max()
    assert float(error) <= tolerance


@pytest.mark.parametrize("name", ["lightcap-tiny", pytest.param("lightcap-mci0", marks=pytest.mark.slow)])
@torch.no_grad()
def test_static_step_gives_lightcap_step_log_probs_over_a_greedy_decode(name):
    model = folded_lightcap(name)
    visual, step = (g.module for g in captioner_graphs(model, static_cache=True))
    cfg, prefix_len = model.config, step.prefix_len
    size = cfg.image_size
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    state = model.start(pixels)
    keys, values = visual(pixels)
    capacity = prefix_len + cfg.max_caption_tokens
    assert keys.shape == values.shape == (cfg.layers, 2, cfg.heads, capacity, cfg.hidden // cfg.heads)
    assert not keys[:, :, :, prefix_len:].any() and not values[:, :, :, prefix_len:].any()  # zero padding
    torch.testing.assert_close(keys[:, :, :, :prefix_len], torch.stack(state.cache.keys)[:, :, :, :prefix_len])
    tokens = torch.full((2,), model.bos_id)
    for position in range(20):
        expected = model.step(state, tokens)
        log_probs, keys, values = step(tokens, torch.tensor([position]), keys, values)
        assert_log_probs_close(log_probs, expected)
        slot = prefix_len + position  # this token's keys/values are written there, the slots after it stay zero
        torch.testing.assert_close(keys[:, :, :, slot], torch.stack(state.cache.keys)[:, :, :, slot])
        torch.testing.assert_close(values[:, :, :, slot], torch.stack(state.cache.values)[:, :, :, slot])
        assert not keys[:, :, :, slot + 1:].any()
        tokens = expected.argmax(-1)


@torch.no_grad()
def test_unused_cache_slots_do_not_count():
    model = folded_lightcap()
    visual, step = (g.module for g in captioner_graphs(model, static_cache=True))
    keys, values = visual(torch.randn(1, 3, 96, 96))
    tokens, position = torch.tensor([model.bos_id]), torch.tensor([0])
    expected, _, _ = step(tokens, position, keys, values)
    garbage = step.prefix_len + 1  # the slots after the one this step writes
    keys[:, :, :, garbage:], values[:, :, :, garbage:] = 1e4, -1e4
    actual, new_keys, _ = step(tokens, position, keys, values)
    assert_log_probs_close(actual, expected, tolerance=1e-6)
    assert bool((new_keys[:, :, :, garbage:] == 1e4).all())  # left as they were


@pytest.mark.parametrize("static_cache", [False, True])
def test_graph_batch_axes_name_the_cache_row_axis(static_cache):
    visual, step = captioner_graphs(folded_lightcap(), static_cache=static_cache)
    assert visual.batch_axes == {"inputs": [0], "outputs": [1, 1]}
    expected_inputs = [0, None, 1, 1] if static_cache else [0, 1, 1]
    assert step.batch_axes == {"inputs": expected_inputs, "outputs": [0, 1, 1]}


@pytest.mark.runtimes  # coremltools: in the device-runtime test process (pyproject.toml)
def test_coreml_converts_the_static_captioner_graphs(tmp_path):
    need("coreml")
    from edgevl.export.backends import coreml_program, example_inputs
    from edgevl.export.onnx import export_captioner
    from edgevl.export.packages import package_manifest

    backend = BACKENDS["coreml"]
    model = folded_lightcap()
    manifest = export_captioner(model, tmp_path, name="lightcap-tiny", backend=backend,
                                manifest=package_manifest(backend, 1e-4))
    info = manifest["captioner"]
    assert info["cache"] == "static" and info["cache_length"] == 17 + 24 and info["id_dtype"] == "int32"
    cache = [2, 1, 4, 41, 32]
    step = manifest["graphs"]["captioner_step"]["structure"]
    assert [i["shape"] for i in step["inputs"]] == [[1], [1], cache, cache]
    assert [o["shape"] for o in step["outputs"]] == [[1, 512], cache, cache]
    visual = manifest["graphs"]["captioner_visual"]["structure"]
    assert [o["shape"] for o in visual["outputs"]] == [cache, cache] and "needs macOS" in visual["prediction"]
    assert (tmp_path / "captioner_step.mlpackage").is_dir() and (tmp_path / "vocab.json").is_file()
    with torch.no_grad():  # what Core ML converted (decomposed for its converter) computes what the graph does
        for graph in captioner_graphs(model, static_cache=True):
            inputs = example_inputs(graph, 1)
            for actual, expected in zip(coreml_program(graph).module()(*inputs), graph.module(*inputs)):
                torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # ~1-2 min per format on the shared 2-core machine: both graphs plus the int8 variant
@pytest.mark.parametrize("fmt", ["executorch", "litert"])
def test_phone_captioner_package_decodes_like_pytorch(fmt, tmp_path):
    need(fmt)
    from edgevl.export.pipeline import export_model
    from edgevl.export.runners import PackageCaptioner, load_package

    torch.manual_seed(0)  # saved before export: importing a backend draws from torch's RNG
    folder = create_lightcap("lightcap-tiny").save_pretrained(tmp_path / "model")
    manifest = export_model(tmp_path / "pkg", parts="captioner", captioner=str(folder), fmt=fmt, variants="int8")
    for record in manifest["graphs"].values():
        assert record["parity_worst"]["relative_error"] <= 1e-4 and record["int8"]["cosine_min"] >= 0.99
    runner, model = load_package(tmp_path / "pkg"), create_lightcap(folder).eval().fold_backbone()
    assert isinstance(runner, PackageCaptioner) and runner.static_cache
    pixels = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, theirs = runner.start(pixels), model.start(pixels)
        tokens = torch.full((3,), model.bos_id)
        for _ in range(model.config.max_caption_tokens):  # every slot of the fixed-size cache
            expected = model.step(theirs, tokens)
            assert_log_probs_close(runner.step(ours, tokens), expected)
            tokens = expected.argmax(-1)
        with pytest.raises(ExportError, match="longer than max_caption_tokens"):
            runner.step(ours, tokens)
        expected_ids = [h.tokens for h in beam_search(model, model.start(pixels), 3, 3, 12)]
        assert [h.tokens for h in beam_search(runner, runner.start(pixels), 3, 3, 12)] == expected_ids
        expected_ids = [h.tokens for h in greedy_decode(model, model.start(pixels), 3, 20)]
    int8 = load_package(tmp_path / "pkg", precision="int8")
    assert len(greedy_decode(int8, int8.start(pixels), 3, 20)) == 3
    assert [h.tokens for h in greedy_decode(runner, runner.start(pixels), 3, 20)] == expected_ids
