"""Decoding: beam search vs brute force, nucleus sampling properties, KV cache vs uncached, batch vs per-item."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import edgevl
from edgevl.captioning import DecodeOptions, caption_tensor
from edgevl.errors import ConfigError
from edgevl.models.lightcap.decoding import (
    beam_search,
    greedy_decode,
    length_normalized,
    nucleus_probs,
    sample_nucleus,
)
from edgevl.models.lightcap.model import create_lightcap

BOS, EOS = 0, 1


class ToyState:
    """Per-row token prefixes (the toy model's whole 'cache')."""

    def __init__(self, prefixes: list[tuple[int, ...]]) -> None:
        self.prefixes = prefixes

    def select(self, rows: torch.Tensor) -> ToyState:
        return ToyState([self.prefixes[i] for i in rows.tolist()])


class ToyModel:
    """A fixed random distribution for every prefix of every input row: exactly enumerable."""

    bos_id, eos_id = BOS, EOS

    def __init__(self, vocab: int = 4, seed: int = 0, sharpness: float = 2.0) -> None:
        self.vocab, self.seed, self.sharpness = vocab, seed, sharpness

    def start(self, batch: int) -> ToyState:
        return ToyState([(row,) for row in range(batch)])

    def log_probs(self, prefix: tuple[int, ...]) -> torch.Tensor:
        g = torch.Generator().manual_seed(hash((self.seed, prefix)) % 2**31)
        logits = torch.randn(self.vocab, generator=g, dtype=torch.float64) * self.sharpness
        logits[BOS] = float("-inf")
        return torch.log_softmax(logits, -1)

    def step(self, state: ToyState, tokens: torch.Tensor) -> torch.Tensor:
        state.prefixes = [p + (t,) for p, t in zip(state.prefixes, tokens.tolist())]
        return torch.stack([self.log_probs(p) for p in state.prefixes]).float()


def brute_force_best(model: ToyModel, row: int, max_len: int, length_penalty: float) -> list[int]:
    """Best sequence over every EOS-terminated sequence up to max_len and every truncated one of max_len."""
    best, best_seq = -math.inf, None
    words = range(2, model.vocab)
    for n in range(max_len + 1):
        for seq in itertools.product(words, repeat=n):
            prefix, total = (row, BOS), 0.0
            for tok in seq:
                total += float(model.log_probs(prefix)[tok])
                prefix += (tok,)
            if n < max_len:
                score = length_normalized(total + float(model.log_probs(prefix)[EOS]), n + 1, length_penalty)
            else:
                score = length_normalized(total, n, length_penalty)
            if score > best:
                best, best_seq = score, list(seq)
    return best_seq


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_search_equals_brute_force(seed, length_penalty):
    model = ToyModel(vocab=5, seed=seed, sharpness=1.0)
    hyps = beam_search(model, model.start(3), 3, beam=64, max_new_tokens=4, length_penalty=length_penalty)
    for row, hyp in enumerate(hyps):
        assert hyp.tokens == brute_force_best(model, row, 4, length_penalty)


def test_beam_finds_what_greedy_misses():
    class Trap(ToyModel):
        # step 1: "2" 0.6, "3" 0.4; after "2" every word is 0.3 likely, after "3" EOS is 0.95 likely
        def log_probs(self, prefix):
            p = {1: [0, 0, 0.6, 0.4], 2: [0, 0.1, 0.3, 0.3, 0.3]}
            if len(prefix) == 2:
                probs = p[1] + [0]
            elif prefix[2] == 2:
                probs = p[2]
            else:
                probs = [0, 0.95, 0.025, 0.025, 0]
            return torch.tensor(probs, dtype=torch.float64).log()

    model = Trap(vocab=5)
    assert greedy_decode(model, model.start(1), 1, 2)[0].tokens[0] == 2
    best = beam_search(model, model.start(1), 1, beam=2, max_new_tokens=2, length_penalty=0.0)[0]
    assert best.tokens == [3] and best.finished
    assert best.log_prob == pytest.approx(math.log(0.4 * 0.95))


def test_greedy_matches_step_by_step_argmax():
    model = ToyModel(vocab=6, seed=3)
    hyp = greedy_decode(model, model.start(1), 1, 6)[0]
    prefix, expected = (0, BOS), []
    for _ in range(6):
        tok = int(model.log_probs(prefix).argmax())
        if tok == EOS:
            break
        expected.append(tok)
        prefix += (tok,)
    assert hyp.tokens == expected


def test_nucleus_probs_keep_the_smallest_set_reaching_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.9, 0.03, 0.02]]))
    probs = nucleus_probs(logits, 0.9)
    assert torch.allclose(probs[0], torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95)
    assert torch.allclose(probs[1], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    torch.manual_seed(0)
    for _ in range(20):
        p = torch.softmax(torch.randn(1, 30) * 2, -1)
        q = nucleus_probs(p.log(), 0.8)[0]
        kept = p[0][q > 0]
        assert kept.sum() >= 0.8 - 1e-6 and kept.sum() - kept.min() < 0.8  # reaches top_p, and is minimal
        assert q.sum() == pytest.approx(1.0, abs=1e-6)


def test_sampling_is_seeded_and_stays_in_the_nucleus():
    model = ToyModel(vocab=8, seed=5)

    def run(seed):
        return sample_nucleus(model, model.start(2), 2, num_samples=6, top_p=0.5, max_new_tokens=5,
                              generator=torch.Generator().manual_seed(seed))

    first, again, other = run(0), run(0), run(1)
    assert [[h.tokens for h in row] for row in first] == [[h.tokens for h in row] for row in again]
    assert [[h.tokens for h in row] for row in first] != [[h.tokens for h in row] for row in other]
    assert len(first) == 2 and all(len(row) == 6 for row in first)
    for row, samples in enumerate(first):
        for hyp in samples:
            prefix = (row, BOS)
            for tok in [*hyp.tokens, *([EOS] if hyp.finished else [])]:
                allowed = nucleus_probs(model.log_probs(prefix)[None].float(), 0.5)[0] > 0
                assert allowed[tok]
                prefix += (tok,)


def test_sampling_stops_at_stop_token_and_rejects_bad_options():
    model = ToyModel(vocab=6, seed=7)
    samples = sample_nucleus(model, model.start(1), 1, num_samples=20, top_p=1.0, max_new_tokens=30,
                             stop_ids=(3,), generator=torch.Generator().manual_seed(0))[0]
    for hyp in samples:
        assert 3 not in hyp.tokens[:-1]
    with pytest.raises(ConfigError, match="top_p"):
        sample_nucleus(model, model.start(1), 1, top_p=0.0)
    with pytest.raises(ConfigError, match="temperature"):
        sample_nucleus(model, model.start(1), 1, temperature=0.0)
    with pytest.raises(ConfigError, match="beam size"):
        beam_search(model, model.start(1), 1, beam=0)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = create_lightcap("lightcap-tiny")
    with torch.no_grad():  # sharper attention and outputs than the default init, so images get different captions
        model.fusion.word_embeddings.weight.mul_(3)
        for head in model.head.heads:
            head.dense.weight.mul_(4)
        for layer in model.fusion.layers:
            layer.attention.query.weight.mul_(4)
            layer.attention.key.weight.mul_(4)
    return model


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(0))


def test_kv_cached_decoding_equals_uncached(tiny, pixels):
    with torch.inference_mode():
        hyps = greedy_decode(tiny, tiny.start(pixels), 3, 8)
        for row, hyp in enumerate(hyps):
            prefix = tiny.encode_prefix(pixels[row:row + 1])[0]

            def uncached(ids, prefix=prefix):  # the full seq2seq-masked pass over prefix + caption, no cache
                return tiny.next_token_log_probs(tiny.fusion(prefix, tiny.embed_caption(torch.tensor([ids]), 0)))[0]

            ids = [tiny.bos_id]
            for tok in hyp.tokens:
                assert int(uncached(ids)[-1].argmax()) == tok
                ids.append(tok)
            assert len(ids) > 3
            state = tiny.start(pixels[row:row + 1])
            cached = torch.cat([tiny.fusion.step(tiny.embed_caption(torch.tensor([[t]]), i), state.cache)
                                for i, t in enumerate(ids)], 1)
            full = tiny.fusion(prefix, tiny.embed_caption(torch.tensor([ids]), 0))
            assert torch.allclose(cached, full, atol=1e-5)  # hidden states (LayerNorm scale)
            assert torch.equal(tiny.next_token_log_probs(cached).argmax(-1), tiny.next_token_log_probs(full).argmax(-1))


def test_multi_token_cache_step_equals_single_steps(tiny, pixels):
    ids = torch.tensor([[tiny.bos_id, 7, 9, 11]])
    with torch.inference_mode():
        state = tiny.start(pixels[:1])
        singles = torch.cat([tiny.fusion.step(tiny.embed_caption(ids[:, i:i + 1], i), state.cache)
                             for i in range(4)], 1)
        state = tiny.start(pixels[:1])
        together = tiny.fusion.step(tiny.embed_caption(ids, 0), state.cache)
    assert torch.allclose(singles, together, atol=1e-5)


@pytest.mark.parametrize("beam", [1, 3])
def test_batch_decoding_equals_per_item(tiny, pixels, beam):
    options = DecodeOptions(beam=beam, max_words=6)
    batched = caption_tensor(tiny, pixels, options)
    singles = [caption_tensor(tiny, pixels[i:i + 1], options)[0] for i in range(3)]
    assert batched == singles
    assert len(set(batched)) > 1  # the three images really get different captions


def test_caption_samples_are_cut_at_the_first_period(tiny, pixels):
    period = tiny.vocab.period_id
    with torch.no_grad():
        tiny.head.heads[0].bias[period] += 4.0  # make "." frequent
    try:
        samples = caption_tensor(tiny, pixels[:1], DecodeOptions(num_samples=8, max_words=15, seed=3))[0]
    finally:
        with torch.no_grad():
            tiny.head.heads[0].bias[period] -= 4.0
    assert len(samples) == 8 and all("." not in s for s in samples)
    assert any(len(s.split()) < 15 for s in samples)


def test_over_long_generation_is_truncated(tiny, pixels):
    text = caption_tensor(tiny, pixels[:1], DecodeOptions(beam=1, max_words=500))[0]
    assert len(text.split()) <= tiny.config.max_caption_tokens
    with pytest.raises(ConfigError, match="max_words"):
        caption_tensor(tiny, pixels[:1], DecodeOptions(beam=1, max_words=0))


@pytest.mark.slow
def test_teacher_forced_training_then_decoding_reproduces_captions():
    """Overfit two images to two captions with the training pass; greedy and beam decoding must return them."""
    from edgevl.models.lightcap.config import get_lightcap_config
    from edgevl.models.lightcap.model import LightCap
    from edgevl.models.lightcap.vocab import WordVocab

    torch.manual_seed(0)
    captions = ["a red circle above a blue square.", "two green triangles"]
    vocab = WordVocab.from_captions(captions)
    cfg = get_lightcap_config("lightcap-tiny").replace(num_concepts=8, concept_top_k=4, layers=1)
    model = LightCap(cfg, vocab)
    pixels = torch.stack([torch.zeros(3, 96, 96), torch.randn(3, 96, 96, generator=torch.Generator().manual_seed(1))])
    rows = [[vocab.bos_id, *vocab.encode(c), vocab.eos_id] for c in captions]
    width = max(map(len, rows))
    ids = torch.tensor([r + [vocab.pad_id] * (width - len(r)) for r in rows])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(80):
        logits = model(pixels, ids[:, :-1])
        targets = ids[:, 1:].expand(logits.shape[0], -1, -1)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 2), targets.flatten(), ignore_index=vocab.pad_id)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert caption_tensor(model, pixels, DecodeOptions(beam=1)) == ["a red circle above a blue square.",
                                                                    "two green triangles"]
    assert caption_tensor(model, pixels, DecodeOptions(beam=3)) == ["a red circle above a blue square.",
                                                                    "two green triangles"]


def test_optimized_backbone_gives_the_same_captions_and_int8_decoder_stays_close(pixels):
    import copy

    torch.manual_seed(0)
    model = create_lightcap("lightcap-mci0")
    small = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    options = DecodeOptions(beam=1, max_words=5)
    folded = copy.deepcopy(model).fold_backbone()
    fast = edgevl.optimize_for_inference(model)
    with torch.inference_mode():
        assert torch.allclose(fast.grid_features(small), folded.grid_features(small), rtol=1e-4, atol=1e-12)
    assert caption_tensor(fast, small, options) == caption_tensor(folded, small, options)
    with torch.inference_mode():  # packed q/k/v and the one-position attention give the same step log-probs
        states, tokens = [m.start(small) for m in (folded, fast)], torch.tensor([model.bos_id] * 2)
        for _ in range(4):
            ref, got = folded.step(states[0], tokens), fast.step(states[1], tokens)
            torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
            tokens = ref.argmax(dim=-1)
    quantized = copy.deepcopy(fast).quantize_decoder()
    assert quantized.head.output is not None
    with torch.inference_mode():
        ref = fast.next_token_log_probs(fast.fusion.step(fast.embed_caption(torch.tensor([[5]]), 0),
                                                         fast.start(small[:1]).cache))
        got = quantized.next_token_log_probs(quantized.fusion.step(quantized.embed_caption(torch.tensor([[5]]), 0),
                                                                   quantized.start(small[:1]).cache))
    finite = torch.isfinite(ref)
    assert torch.equal(finite, torch.isfinite(got))
    assert torch.nn.functional.cosine_similarity(ref[finite], got[finite], dim=0) > 0.999
