"""CoCa `generate` reproduces open_clip's tokens for every fixture case (beam search, sampling under the same seed,
prompts, fixed lengths), through the KV cache and through open_clip's uncached loop, and refuses bad arguments."""

from __future__ import annotations

import pytest
import torch
from coca_fixtures import MODELS, generate_cases, golden, load_model

from edgevl.errors import DataError
from edgevl.models.coca import MaxLengthCriteria

pytestmark = pytest.mark.usefixtures("one_thread")
CASES = [(name, case["name"]) for name in MODELS for case in generate_cases(name)]


@pytest.fixture(scope="module")
def models():
    return {name: load_model(name) for name in MODELS}


def _run(model, name: str, case: dict, **extra) -> torch.Tensor:
    io = golden(name)
    images = io["images"] if case["image_rows"] is None else io["images"][case["image_rows"]]
    kwargs = dict(case["kwargs"], **extra)
    if "text=prefix" in case["call"]:
        kwargs["text"] = io["gen.prefix"]
    if case["seed"] is not None:
        torch.manual_seed(case["seed"])
    return model.generate(images, **kwargs)


def _case(name: str, case_name: str) -> dict:
    return next(c for c in generate_cases(name) if c["name"] == case_name)


def test_every_fixture_case_is_covered():
    assert len(CASES) == 33


@pytest.mark.parametrize("use_cache", [True, False], ids=["kv_cache", "uncached"])
@pytest.mark.parametrize("name,case_name", CASES)
def test_tokens_match_open_clip(models, name, case_name, use_cache):
    case = _case(name, case_name)
    out = _run(models[name], name, case, use_cache=use_cache)
    assert out.dtype == torch.long and out.tolist() == case["tokens"]
    assert torch.equal(out, golden(name)[f"gen.{case_name}"])


def test_sampling_consumes_the_generator_like_open_clip(models):
    """After the call the global generator is where open_clip left it: one multinomial per recorded call."""
    case = _case("coca_tiny_rv", "top_k5_temp0.7_seed7")
    _run(models["coca_tiny_rv"], "coca_tiny_rv", case)
    after_ours = torch.rand(4)
    torch.manual_seed(case["seed"])
    for rows, vocab in case["multinomial_calls"]:
        torch.multinomial(torch.ones(rows, vocab), 1)
    assert torch.equal(torch.rand(4), after_ours)


def test_a_one_dimensional_prompt_gives_one_dimensional_ids(models):
    io = golden("coca_tiny_sv")
    case = _case("coca_tiny_sv", "greedy_topk1_prefix")
    torch.manual_seed(0)
    out = models["coca_tiny_sv"].generate(io["images"][:1], text=io["gen.prefix"][0], **case["kwargs"])
    assert out.tolist() == case["tokens"][0]


def test_custom_stopping_criteria_replace_the_length_stop(models):
    io = golden("coca_tiny_sv")
    ids = dict(sot_token_id=998, eos_token_id=999)
    out = models["coca_tiny_sv"].generate(io["images"], generation_type="top_k", seq_len=12,
                                          stopping_criteria=[MaxLengthCriteria(4)], **ids)
    assert out.shape == (3, 4)
    beams = models["coca_tiny_sv"].generate(io["images"], seq_len=12, num_beams=3, num_beam_groups=1,
                                            stopping_criteria=[MaxLengthCriteria(4)], **ids)
    assert beams.shape[1] <= 4


def test_the_model_mode_is_restored(models):
    model = models["coca_tiny_rv"].train()
    try:
        model.generate(golden("coca_tiny_rv")["images"][:1], generation_type="top_k", seq_len=8)
        assert model.training
    finally:
        model.eval()


@pytest.mark.parametrize("kwargs,error,message", [
    ({"num_beams": 1, "seq_len": 12}, ValueError, "num_beams must be an int > 1"),
    ({"num_beams": 4, "num_beam_groups": 3, "seq_len": 12}, ValueError, "must divide num_beams"),
    ({"repetition_penalty": 1}, ValueError, "repetition_penalty must be a float > 0"),
    ({"seq_len": 5}, ValueError, r"seq_len \(5\) must be larger than min_seq_len \(5\)"),
    ({"generation_type": "greedy"}, ValueError, "unknown generation_type 'greedy'"),
    ({"generation_type": "top_p", "top_p": 1.5}, ValueError, r"top_p must be in \[0, 1\]"),
    ({"generation_type": "top_k", "top_k": 0}, ValueError, "top_k must be a positive int"),
    ({"seq_len": 14}, DataError, r"seq_len may be at most 13"),
])
def test_bad_arguments_fail_with_one_line(models, kwargs, error, message):
    with pytest.raises(error, match=message):
        models["coca_tiny_rv"].generate(golden("coca_tiny_rv")["images"][:1], **kwargs)


@pytest.mark.parametrize("use_cache", [True, False], ids=["kv_cache", "uncached"])
@pytest.mark.parametrize("kwargs", [{"generation_type": "top_k", "fixed_output_length": True},
                                    {"num_beams": 3, "num_beam_groups": 1, "min_seq_len": 12}])
def test_criteria_that_never_stop_end_at_the_text_context(models, kwargs, use_cache):
    images = golden("coca_tiny_rv")["images"][:1]
    with pytest.raises(DataError, match="more than the 12 this CoCa takes|exceeds the context length"):
        models["coca_tiny_rv"].generate(images, seq_len=30, stopping_criteria=[lambda ids, scores: False],
                                        use_cache=use_cache, **kwargs)


@pytest.mark.parametrize("use_cache", [True, False])
def test_samples_per_image_equals_repeated_images(models, use_cache):
    model, images = models["coca_tiny_rv"], golden("coca_tiny_rv")["images"]
    kwargs = dict(generation_type="top_p", top_p=0.9, seq_len=12, fixed_output_length=True, use_cache=use_cache)
    torch.manual_seed(4)
    repeated = model.generate(images.repeat_interleave(3, 0), **kwargs)
    torch.manual_seed(4)
    assert torch.equal(model.generate(images, samples_per_image=3, **kwargs), repeated)
    with pytest.raises(ValueError, match="samples_per_image"):
        model.generate(images, samples_per_image=2, seq_len=12)  # beam search
