"""Batched autoregressive decoding over any step model: greedy, beam search and nucleus sampling.

A step model has `bos_id`, `eos_id` and `step(state, tokens[N]) -> log_probs[N, V]`, which feeds one token per
row and advances `state` (a KV cache for LightCap); `state.select(rows)` keeps/reorders/repeats rows. Generated
sequences exclude BOS and EOS.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from edgevl.errors import ConfigError


class StepModel(Protocol):
    bos_id: int
    eos_id: int

    def step(self, state: Any, tokens: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Hypothesis:
    """Generated token ids (no BOS/EOS), their summed log-probability, and whether a stop token ended them."""

    tokens: list[int]
    log_prob: float
    finished: bool


def _check_length(max_new_tokens: int) -> None:
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}")


def greedy_decode(model: StepModel, state: Any, batch_size: int, max_new_tokens: int,
                  stop_ids: Collection[int] = ()) -> list[Hypothesis]:
    """Arg-max decoding of `batch_size` rows; stops a row at EOS or any of `stop_ids` (kept in the output)."""
    _check_length(max_new_tokens)
    stops = torch.tensor(sorted({model.eos_id, *stop_ids}))
    tokens = torch.full((batch_size,), model.bos_id, dtype=torch.long)
    done = torch.zeros(batch_size, dtype=torch.bool)
    out, total = [], torch.zeros(batch_size, dtype=torch.float64)
    for _ in range(max_new_tokens):
        log_probs = model.step(state, tokens)
        best, tokens = log_probs.max(dim=-1)
        total += best.masked_fill_(done, 0.0)  # in place on fresh tensors: fewer ops per step
        tokens.masked_fill_(done, model.eos_id)
        out.append(tokens)
        done |= torch.isin(tokens, stops)
        if bool(done.all()):
            break
    return _collect(torch.stack(out, 1), total, model.eos_id)


def _collect(ids: torch.Tensor, log_probs: torch.Tensor, eos_id: int) -> list[Hypothesis]:
    hyps = []
    for row, lp in zip(ids.tolist(), log_probs.tolist()):
        finished = eos_id in row
        hyps.append(Hypothesis(row[: row.index(eos_id)] if finished else row, lp, finished))
    return hyps


def length_normalized(log_prob: float, length: int, length_penalty: float) -> float:
    """Beam ranking score: sum log-prob / length**length_penalty (length counts EOS when emitted)."""
    return log_prob / max(length, 1) ** length_penalty


def beam_search(model: StepModel, state: Any, batch_size: int, beam: int = 5, max_new_tokens: int = 20,
                length_penalty: float = 1.0) -> list[Hypothesis]:
    """Batched beam search; returns the best hypothesis per input row by `length_normalized` score.

    Each step keeps the `beam` best continuations by summed log-prob; a continuation ending in EOS among them
    is set aside as finished. A row stops once `beam` hypotheses are finished and no live one can still beat
    them (exact bound for length_penalty >= 0), or after `max_new_tokens`, when live beams end truncated.
    """
    _check_length(max_new_tokens)
    if beam < 1:
        raise ConfigError(f"beam size must be at least 1, got {beam}")
    if length_penalty < 0:
        raise ConfigError(f"length_penalty must be >= 0, got {length_penalty}")
    rows = torch.arange(batch_size).repeat_interleave(beam)
    state = state.select(rows)
    scores = torch.full((batch_size, beam), float("-inf"), dtype=torch.float64)
    scores[:, 0] = 0.0  # only one live beam at the start, so no duplicates
    seqs: list[list[list[int]]] = [[[] for _ in range(beam)] for _ in range(batch_size)]
    finished: list[list[tuple[float, Hypothesis]]] = [[] for _ in range(batch_size)]
    done = [False] * batch_size
    tokens = torch.full((batch_size * beam,), model.bos_id, dtype=torch.long)
    for t in range(max_new_tokens):
        log_probs = model.step(state, tokens).double()
        vocab = log_probs.shape[-1]
        cand = (scores.unsqueeze(-1) + log_probs.view(batch_size, beam, vocab)).view(batch_size, -1)
        top_scores, top_index = cand.topk(min(2 * beam, cand.shape[1]), dim=-1)
        new_scores = torch.full_like(scores, float("-inf"))
        parent = torch.arange(batch_size * beam).view(batch_size, beam).clone()
        new_tokens = torch.full((batch_size, beam), model.eos_id, dtype=torch.long)
        new_seqs: list[list[list[int]]] = []
        for b in range(batch_size):
            kept: list[list[int]] = []
            if not done[b]:
                for rank, (s, idx) in enumerate(zip(top_scores[b].tolist(), top_index[b].tolist())):
                    if s == float("-inf") or len(kept) == beam:
                        break
                    src, tok = divmod(idx, vocab)
                    if tok == model.eos_id:
                        if rank < beam:
                            hyp = Hypothesis(seqs[b][src], s, True)
                            finished[b].append((length_normalized(s, t + 1, length_penalty), hyp))
                        continue
                    slot = len(kept)
                    kept.append([*seqs[b][src], tok])
                    new_scores[b, slot], new_tokens[b, slot] = s, tok
                    parent[b, slot] = b * beam + src
                done[b] = _beam_row_done(finished[b], new_scores[b], beam, max_new_tokens, length_penalty)
            new_seqs.append(kept + [[] for _ in range(beam - len(kept))])
        seqs, scores, tokens = new_seqs, new_scores, new_tokens.view(-1)
        if all(done):
            break
        if t + 1 < max_new_tokens:
            state = state.select(parent.view(-1))
    results = []
    for b in range(batch_size):
        pool = list(finished[b])
        if not done[b]:  # out of length: live beams end truncated
            pool += [(length_normalized(s, len(seq), length_penalty), Hypothesis(seq, s, False))
                     for s, seq in zip(scores[b].tolist(), seqs[b]) if s != float("-inf")]
        results.append(max(pool, key=lambda item: item[0])[1])
    return results


def _beam_row_done(finished: list[tuple[float, Hypothesis]], live: torch.Tensor, beam: int, max_len: int,
                   length_penalty: float) -> bool:
    """True when no live beam can end above the `beam`-th best finished hypothesis."""
    if not bool(torch.isfinite(live).any()):
        return True
    if len(finished) < beam:
        return False
    threshold = sorted((score for score, _ in finished), reverse=True)[beam - 1]
    best_live = float(live.max())  # log-probs only decrease; the longest length is the most favourable
    return length_normalized(best_live, max_len, length_penalty) <= threshold


def sample_nucleus(model: StepModel, state: Any, batch_size: int, num_samples: int = 5, top_p: float = 0.9,
                   temperature: float = 1.0, max_new_tokens: int = 20, stop_ids: Collection[int] = (),
                   generator: torch.Generator | None = None) -> list[list[Hypothesis]]:
    """Nucleus (top-p) sampling, `num_samples` independent samples per input row, all decoded as one batch.

    Each step samples from the smallest set of most-likely tokens whose mass reaches `top_p`, after dividing
    log-probs by `temperature`. A sample stops at EOS or at any of `stop_ids` (e.g. "."; kept in the output).
    """
    _check_length(max_new_tokens)
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
    if temperature <= 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    if num_samples < 1:
        raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
    n = batch_size * num_samples
    state = state.select(torch.arange(batch_size).repeat_interleave(num_samples))
    stops = torch.tensor(sorted({model.eos_id, *stop_ids}))
    tokens = torch.full((n,), model.bos_id, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    out, total = [], torch.zeros(n, dtype=torch.float64)
    for _ in range(max_new_tokens):
        log_probs = model.step(state, tokens)
        probs = nucleus_probs(log_probs / temperature, top_p)
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        total += torch.where(done, 0.0, log_probs.gather(1, tokens[:, None]).squeeze(1).double())
        tokens = torch.where(done, model.eos_id, tokens)
        out.append(tokens)
        done |= torch.isin(tokens, stops)
        if bool(done.all()):
            break
    hyps = _collect(torch.stack(out, 1), total, model.eos_id)
    return [hyps[i * num_samples:(i + 1) * num_samples] for i in range(batch_size)]


def nucleus_probs(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Softmax of `logits` [N, V] restricted to each row's top-p nucleus and renormalized."""
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    keep_sorted = mass_before < top_p  # the first token is always kept
    keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
    kept = probs * keep
    return kept / kept.sum(dim=-1, keepdim=True)
