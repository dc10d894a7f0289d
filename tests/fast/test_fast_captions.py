"""The fast captioner (`optimize_captioner`) decodes the same captions as the reference LightCap: the shipped,
trained world captioner token for token on world test images, and a random-weights model step for step."""

from __future__ import annotations

import copy

import pytest
import torch

from edgevl.fast import optimize_captioner
from edgevl.models.lightcap.decoding import greedy_decode
from edgevl.models.lightcap.model import LightCap, create_lightcap

pytestmark = pytest.mark.usefixtures("one_thread")


def _world_pixels(model: LightCap, n: int) -> torch.Tensor:
    from edgevl.data.world import samples
    from edgevl.world_models.data import pixel_transform

    pp = model.config.preprocess
    transform = pixel_transform(pp.mean, pp.std)
    return torch.stack([transform(s.image) for s in samples(n, "test", 3, model.config.image_size)])


def test_fast_world_captions_equal_the_reference_token_for_token():
    """Greedy captions of 12 world test images: same tokens, summed log-probs within float32 rounding."""
    from edgevl.world_models import pretrained_dir

    reference = create_lightcap(pretrained_dir("captioner"))
    fast = optimize_captioner(copy.deepcopy(reference))
    pixels = _world_pixels(reference, 12)
    with torch.inference_mode():
        want = greedy_decode(reference, reference.start(pixels), len(pixels), 20)
        got = greedy_decode(fast, fast.start(pixels), len(pixels), 20)
    assert [h.tokens for h in got] == [h.tokens for h in want]
    assert len({tuple(h.tokens) for h in want}) > 1  # the images get different captions
    for g, w in zip(got, want):
        assert g.log_prob == pytest.approx(w.log_prob, abs=1e-4)


def test_fast_steps_equal_the_reference_steps_on_random_weights():
    """Every decoding step's log-probs over the whole vocabulary (float32, the tied table's GEMM from oneDNN's
    blocked layout on the fast side), fed the reference's own greedy tokens."""
    torch.manual_seed(0)
    reference = create_lightcap("lightcap-tiny")
    fast = optimize_captioner(copy.deepcopy(reference))
    pixels = torch.randn(2, 3, reference.config.image_size, reference.config.image_size)
    with torch.inference_mode():
        ref_state, fast_state = reference.start(pixels), fast.start(pixels)
        tokens = torch.full((2,), reference.bos_id)
        for _ in range(6):
            want = reference.step(ref_state, tokens)
            torch.testing.assert_close(fast.step(fast_state, tokens), want, atol=1e-5, rtol=1e-5)
            tokens = want.argmax(-1)
