"""A CoCa as `reinforce run --captioner`: DataCompDR's top-p recipe, ml-mobileclip's caption clean-up (checked
against open_clip's captions in the CoCa fixtures), per-image seeds, and side by side with a LightCap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_models import NUM_SYN, reinforce_config

from edgevl.data.world import generate
from edgevl.errors import ConfigError
from edgevl.reinforce.captioner import CocaCaptioner, LightCapCaptioner, load_captioner
from edgevl.reinforce.generate import reinforce
from edgevl.reinforce.verify import verify

FIXTURES = Path(__file__).parents[1] / "fixtures" / "coca"
COCA = FIXTURES / "coca_tiny_rv"  # open_clip_config.json + model.safetensors: a model folder
CPU = torch.device("cpu")


def world_images(n: int) -> list[Image.Image]:
    return [generate(i, split="train", seed=3, size=64).image for i in range(n)]


@pytest.fixture(scope="module")
def coca() -> CocaCaptioner:
    captioner = load_captioner(str(COCA), CPU)
    assert isinstance(captioner, CocaCaptioner)
    return captioner


def test_captions_depend_only_on_the_image_and_its_seed(coca):
    images = world_images(3)
    both = coca.sample(images, [11, 12, 13], 2)
    assert [len(row) for row in both] == [2, 2, 2]
    assert coca.sample(images[1:2], [12], 2) == [both[1]]  # another batch, the same captions
    assert coca.sample(images[:1], [99], 2) != [both[0]]
    assert coca.seq_len == 13  # the tiny model's 12 text positions + 1 (DataCompDR's 30 does not fit)
    entry = coca.describe()
    assert entry["family"] == "coca" and entry["generation"] == "top_p" and entry["top_p"] == 0.9
    assert entry["weights"].endswith("model.safetensors") and len(entry["weights_sha256"]) == 64


def test_clip_without_decoder_and_unknown_vocab_are_refused(tiny):
    with pytest.raises(ConfigError, match="without a caption decoder"):
        load_captioner(tiny.teachers[0], CPU)
    with pytest.raises(ConfigError, match="1000-token vocabulary"):
        load_captioner(str(FIXTURES / "coca_tiny_sv"), CPU)
    assert isinstance(load_captioner(tiny.captioner, CPU), LightCapCaptioner)


def test_reinforce_with_coca_and_lightcap_side_by_side(tiny, tmp_path):
    data = str(Path(tiny.data).parent / "00000.tar")
    specs = f"{COCA},{tiny.captioner}"
    manifest = reinforce(reinforce_config(tiny, tmp_path, data=data, captioner=specs))
    assert [(c["key"], c["family"]) for c in manifest["captioners"]] == [("syn_text", "coca"),
                                                                          ("syn_text_1", "lightcap")]
    assert verify(tmp_path).ok
    alone = reinforce(reinforce_config(tiny, tmp_path / "alone", data=data, captioner=str(COCA)))
    assert alone["captioners"][0]["weights_sha256"] == manifest["captioners"][0]["weights_sha256"]
    import tarfile

    def syn(folder: Path, key: str) -> list[list[str]]:
        with tarfile.open(folder / "00000000.tar") as tar:
            return [json.loads(tar.extractfile(m).read())[key] for m in tar.getmembers() if m.name.endswith("syn.json")]

    first = syn(tmp_path, "syn_text")
    assert first == syn(tmp_path / "alone", "syn_text")  # adding a captioner changes nothing for the first
    assert all(len(row) == NUM_SYN for row in first)
