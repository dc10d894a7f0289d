"""open_clip's CoCa beam search, scored as transformers' `BeamSearchScorer` (4.56) scores it.

Scores are sums of processed raw logits (no log-softmax); a hypothesis is stored with its score divided by its
length. Beam groups never interact (no diversity penalty is applied), so `num_beam_groups` groups of
`num_beams / num_beam_groups` beams are identical copies of one search of that width: it is run once, which gives
the same winner (ties between copies resolve to the same ids).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from edgevl.models.coca.decoding import CachedDecoding, EagerDecoding, all_stopped


class Hypotheses:
    """The best `capacity` finished hypotheses of one batch item: (score, ids), worst score tracked."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.beams, self.worst = capacity, [], 1e9

    def add(self, ids: torch.Tensor, score: float) -> None:
        """Store `ids` with `score` if there is room or it beats the worst; the worst (first on ties) leaves."""
        if len(self.beams) < self.capacity or score > self.worst:
            self.beams.append((score, ids))
            if len(self.beams) > self.capacity:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def is_done(self, best_running: float, length: int) -> bool:
        """Full, and no running beam can still beat the worst stored hypothesis."""
        return len(self.beams) >= self.capacity and self.worst >= best_running / length


def _check_beams(num_beams: int, num_beam_groups: int) -> int:
    if not isinstance(num_beams, int) or num_beams <= 1:
        raise ValueError(f"num_beams must be an int > 1 (use generation_type='top_k', top_k=1 for greedy), "
                         f"got {num_beams!r}")
    if not isinstance(num_beam_groups, int) or num_beam_groups > num_beams or num_beams % num_beam_groups:
        raise ValueError(f"num_beam_groups ({num_beam_groups!r}) must divide num_beams ({num_beams})")
    return num_beams // num_beam_groups


def _finalize(hyps: list[Hypotheses], ids: torch.Tensor, scores: torch.Tensor, done: list[bool], width: int,
              eos: int, pad: int, max_length: int | None) -> torch.Tensor:
    """Running beams of unfinished items become hypotheses (score / length); each item's best (the later one on
    ties) is written from column 0, followed by one eos when shorter than the output."""
    for b, item in enumerate(hyps):
        if not done[b]:
            for row in range(b * width, (b + 1) * width):
                item.add(ids[row], scores[row].item() / ids.shape[1])
    best = [sorted(item.beams, key=lambda entry: entry[0])[-1][1] for item in hyps]
    lengths = [len(ids_) for ids_ in best]
    out_len = max(lengths) + 1 if max_length is None else min(max(lengths) + 1, max_length)
    out = ids.new_full((len(best), out_len), pad)
    for b, ids_ in enumerate(best):
        out[b, : lengths[b]] = ids_
        if lengths[b] < out_len:
            out[b, lengths[b]] = eos
    return out


def beam_search(model: torch.nn.Module, image_embs: torch.Tensor, *, num_beams: int, num_beam_groups: int,
                sot: int, eos: int, pad: int, processors, criteria: Sequence, seq_len: int, limit: int,
                fixed_output_length: bool, cached: bool) -> torch.Tensor:
    """Ids (B, <= seq_len) of the best hypothesis per image; `image_embs` (B, N, D) are the decoder's image
    tokens, `limit` the longest input the model takes. `fixed_output_length` right-pads with `pad` to `seq_len`."""
    width = _check_beams(num_beams, num_beam_groups)
    batch, rows = image_embs.shape[0], image_embs.shape[0] * width
    steps = CachedDecoding(model, image_embs, width, limit) if cached else EagerDecoding(model, image_embs, width)
    ids = torch.full((rows, 1), sot, dtype=torch.long, device=image_embs.device)
    scores = torch.full((batch, width), -1e9, device=image_embs.device)
    scores[:, 0] = 0
    scores = scores.view(-1)
    hyps, done = [Hypotheses(width) for _ in range(batch)], [False] * batch
    while True:
        logits = processors(ids, steps.logits(ids))
        vocab, length = logits.shape[-1], ids.shape[1] + 1
        top, index = torch.topk((logits + scores[:, None]).view(batch, width * vocab), 2 * width, dim=1)
        next_scores = torch.zeros(batch, width, device=ids.device)
        next_tokens = torch.full((batch, width), pad, dtype=torch.long, device=ids.device)
        sources = torch.zeros(batch, width, dtype=torch.long, device=ids.device)  # done items copy row 0
        for b in range(batch):
            if done[b]:
                continue
            slot = 0
            for rank, (token, score, flat) in enumerate(zip((index[b] % vocab).tolist(), top[b], index[b].tolist())):
                row = b * width + flat // vocab
                if token == eos:
                    if rank < width:
                        hyps[b].add(ids[row].clone(), score.item() / length)
                else:
                    next_scores[b, slot], next_tokens[b, slot], sources[b, slot] = score, token, row
                    slot += 1
                if slot == width:
                    break
            done[b] = hyps[b].is_done(top[b].max().item(), length)
        sources = sources.view(-1)
        steps.select(sources)
        ids = torch.cat([ids[sources], next_tokens.view(-1, 1)], dim=1)
        scores = next_scores.view(-1)
        if all(done) or all_stopped(criteria, ids):
            break
    max_length = next((c.max_length for c in criteria if getattr(c, "max_length", None) is not None), None)
    out = _finalize(hyps, ids, scores, done, width, eos, pad, max_length)
    if fixed_output_length and out.shape[1] < seq_len:
        out = torch.cat([out, out.new_full((out.shape[0], seq_len - out.shape[1]), pad)], dim=1)
    return out
