"""Full-size random-weight CoCa: the KV-cache path gives open_clip's uncached numbers and tokens (slow)."""

from __future__ import annotations

import pytest
import torch
from coca_fixtures import relative_error

import edgevl
from edgevl.models.coca.decoding import CachedDecoding, EagerDecoding

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return edgevl.create_model("coca_ViT-B-32")


def test_cached_step_logits_match_the_uncached_loop(model):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 224, 224)
    ids = torch.randint(1, 49406, (2, 12))
    ids[:, 0], ids[1, 5] = 49406, 0  # a pad id inside a row exercises the shifted key mask
    with torch.inference_mode():
        image_embs = model.encode_image_with_tokens(images)[1]
        cached, eager = CachedDecoding(model, image_embs, 1, 12), EagerDecoding(model, image_embs, 1, 77)
        cached.logits(ids[:, :4])  # a prompt, then one id per step
        for end in range(5, 13):
            assert relative_error(cached.logits(ids[:, :end]), eager.logits(ids[:, :end])) <= 1e-4


@pytest.mark.parametrize("kwargs", [
    {"generation_type": "top_k", "top_k": 1},
    {"generation_type": "top_p", "top_p": 0.9},
    {"num_beams": 3, "num_beam_groups": 1},
])
def test_generated_tokens_match_the_uncached_loop(model, kwargs):
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(3)
        outputs.append(model.generate(images, seq_len=10, use_cache=use_cache, **kwargs))
    assert torch.equal(*outputs)
