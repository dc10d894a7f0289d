"""CoCa captions: MobileCLIP's clean-up of open_clip's decoded ids; `edgevl.caption` and `edgevl caption` with CoCa."""

from __future__ import annotations

import json

import pytest
import torch
from coca_fixtures import FIXTURES, generate_cases, load_model
from PIL import Image

import edgevl
from edgevl.captioning import clean_caption, decode_captions
from edgevl.cli import main
from edgevl.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")
RV = FIXTURES / "coca_tiny_rv"


def test_captions_are_cleaned_as_mobileclip_does():
    for case in generate_cases("coca_tiny_rv"):
        assert decode_captions(torch.tensor(case["tokens"]), cut_at_period=True) == case["caption"], case["name"]
    assert clean_caption("<start_of_text>a dog. on grass <end_of_text>!!", cut_at_period=True) == "a dog"
    assert clean_caption("<start_of_text> a dog. on grass <end_of_text>", cut_at_period=False) == " a dog. on grass"


@pytest.fixture()
def images(tmp_path):
    paths = []
    for i, color in enumerate(("red", "navy")):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (40, 48), color).save(paths[-1])
    return paths


def test_caption_with_a_coca_folder_is_greedy_generate_on_the_transformed_images(images):
    model, _, transform = edgevl.create_model_and_transforms(f"local-dir:{RV}")
    ids = model.generate(transform.batch(images), generation_type="top_k", top_k=1, seq_len=6)
    assert edgevl.caption(images, model=RV, beam=1, max_words=5) == decode_captions(ids, cut_at_period=False)
    beams = edgevl.caption(images, model=load_model("coca_tiny_rv"), beam=3, max_words=5)
    assert len(beams) == 2 and all(isinstance(text, str) for text in beams)


def test_sampled_captions_follow_the_datacompdr_recipe_and_leave_the_generator_alone(images):
    coca = load_model("coca_tiny_rv")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    samples = edgevl.caption(images, model=coca, num_samples=3, max_words=8, seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    assert samples == edgevl.caption(images, model=RV, num_samples=3, max_words=8, seed=4)
    assert [len(row) for row in samples] == [3, 3] and all("." not in text for row in samples for text in row)
    model, _, transform = edgevl.create_model_and_transforms(f"local-dir:{RV}")
    torch.manual_seed(4)
    first = model.generate(transform.batch(images), generation_type="top_p", top_p=0.9, seq_len=9,
                           fixed_output_length=True)
    assert [row[0] for row in samples] == decode_captions(first, cut_at_period=True)


def test_a_coca_refuses_lightcap_only_options(images):
    with pytest.raises(ConfigError, match="int8 quantization is for LightCap"):
        edgevl.caption(images, model=RV, int8=True)
    with pytest.raises(ConfigError, match="max_tokens must be in 1..12"):
        edgevl.caption(images, model=RV, max_words=13)


def test_cli_captions_with_a_coca(images, capsys):
    assert main(["caption", str(images[0]), str(images[1]), "--model", str(RV), "--num-samples", "2",
                 "--max-words", "6", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [len(row["captions"]) for row in rows] == [2, 2]
    assert main(["caption", str(images[0]), "--model", str(RV), "--beam", "1", "--max-words", "6"]) == 0
    assert capsys.readouterr().out.startswith(f"{images[0]}\t")
