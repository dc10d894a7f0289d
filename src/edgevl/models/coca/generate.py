"""open_clip's `CoCa.generate`, without `transformers`: beam search as `BeamSearchScorer` scores it (sums of raw
logits, groups that never interact), top-k / top-p sampling with temperature after filtering, the min-length and
repetition-penalty processors, and pad id 0 as a real token that also ends a row. The semantics, quirks included,
are written down in the CoCa spec (section 3); with `use_cache=True` (default) steps run through a KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from edgevl.errors import DataError
from edgevl.models.coca.beam import beam_search
from edgevl.models.coca.decoding import CachedDecoding, EagerDecoding, MaxLengthCriteria, StoppingCriterion, all_stopped

GENERATION_TYPES = ("beam_search", "top_p", "top_k")
SOT_ID, EOS_ID = 49406, 49407


def _token_id(value: int | torch.Tensor, name: str) -> int:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be one token id, got a tensor of shape {tuple(value.shape)}")
        return int(value.item())
    return int(value)


class LogitsProcessors:
    """open_clip's processor list: end-of-text banned while the input is shorter than `min_len`, then the
    repetition penalty on every id of the input (logit * p if negative, else / p)."""

    def __init__(self, eos: int, min_len: int, penalty: float) -> None:
        if not isinstance(min_len, int) or min_len < 0:
            raise ValueError(f"min_seq_len must be a non-negative int, got {min_len!r}")
        if not isinstance(penalty, float) or not penalty > 0:
            raise ValueError(f"repetition_penalty must be a float > 0, got {penalty!r}")
        self.eos, self.min_len, self.penalty = eos, min_len, penalty

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] < self.min_len:
            logits = logits.clone()
            logits[:, self.eos] = -math.inf
        if self.penalty != 1.0:
            seen = torch.gather(logits, 1, ids)
            logits = logits.scatter(1, ids, torch.where(seen < 0, seen * self.penalty, seen / self.penalty))
        return logits


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Logits below the k-th largest of their row become -inf (ties at the threshold are kept)."""
    k = min(max(k, 1), logits.shape[-1])
    return logits.masked_fill(logits < torch.topk(logits, k)[0][..., -1:], -math.inf)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: drop the smallest logits whose cumulative probability is <= 1 - p (the top one stays)."""
    ordered, order = torch.sort(logits, descending=False)
    drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= (1 - p)
    drop[..., -1:] = False
    return logits.masked_fill(drop.scatter(1, order, drop), -math.inf)


def _warper(generation_type: str, top_p: float, top_k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    if generation_type == "top_p":
        top_p = float(top_p)
        if not 0.0 <= top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {top_p}")
        return lambda logits: top_p_filter(logits, top_p)
    if generation_type == "top_k":
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        return lambda logits: top_k_filter(logits, top_k)
    raise ValueError(f"unknown generation_type {generation_type!r}; choose from {', '.join(GENERATION_TYPES)}")


def _sample(decoding: CachedDecoding | EagerDecoding, out: torch.Tensor, limit: int, *, seq_len: int, max_seq_len: int,
            temperature: float, warp: Callable, processors: LogitsProcessors, eos: int, pad: int,
            criteria: Sequence[StoppingCriterion], fixed_output_length: bool, cached: bool) -> torch.Tensor:
    """open_clip's sampling loop: unfinished rows (last id not eos/pad) get processed, filtered, tempered
    probabilities and one multinomial draw per step; the step that reaches `seq_len` forces eos. `limit` is the
    longest input the model takes."""
    tracked = torch.arange(out.shape[0], device=out.device)  # the rows the cache holds
    while True:
        if min(out.shape[1], max_seq_len) > limit:  # open_clip's text tower fails here, finished rows or not
            raise DataError(f"generation reached {out.shape[1]} ids, more than the {limit} this CoCa takes")
        last = out[:, -1]
        active = (last != eos) & (last != pad)
        sample = torch.full((out.shape[0], 1), pad, dtype=out.dtype, device=out.device)
        if bool(active.any()):
            x = out[:, -max_seq_len:]
            if cached:
                keep = active[tracked]
                if not bool(keep.all()):
                    decoding.select(keep.nonzero().squeeze(1), images=True)
                    tracked = tracked[keep]
                logits = decoding.logits(out[tracked])
            else:
                logits = decoding.logits(out)[active]
            x = x[active]
            probs = F.softmax(warp(processors(x, logits)) / temperature, dim=-1)
            if x.shape[1] + 1 == seq_len:
                sample[active] = eos
            else:
                sample[active] = torch.multinomial(probs, 1)
        elif not fixed_output_length:
            return out
        out = torch.cat([out, sample], dim=1)
        if all_stopped(criteria, out):
            return out


def generate(
    model: torch.nn.Module,
    image: torch.Tensor,
    text: torch.Tensor | None = None,
    seq_len: int = 30,
    max_seq_len: int = 77,
    temperature: float = 1.0,
    generation_type: str = "beam_search",
    top_p: float = 0.1,
    top_k: int = 1,
    pad_token_id: int | None = None,
    eos_token_id: int | torch.Tensor | None = None,
    sot_token_id: int | torch.Tensor | None = None,
    num_beams: int = 6,
    num_beam_groups: int = 3,
    min_seq_len: int = 5,
    stopping_criteria: Sequence[StoppingCriterion] | None = None,
    repetition_penalty: float = 1.0,
    fixed_output_length: bool = False,
    use_cache: bool = True,
    samples_per_image: int = 1,
) -> torch.Tensor:
    """Caption ids (B, <= seq_len) for images (B, 3, H, W), starting with the SOT (or the `text` prompt), exactly
    as open_clip 3.3's `CoCa.generate` with the same arguments and defaults (6 beams in 3 groups, i.e. a width-2
    beam search). Sampling draws from torch's default generator like open_clip. `stopping_criteria` (callables
    (ids, scores) -> bool per row) replace the max-length stop; `use_cache=False` runs open_clip's uncached loop.
    `samples_per_image` (edgevl's, sampling only) gives each image that many consecutive rows from one run of the image
    tower: the same ids as passing `image.repeat_interleave(samples_per_image, 0)`.
    """
    if not seq_len > min_seq_len:
        raise ValueError(f"seq_len ({seq_len}) must be larger than min_seq_len ({min_seq_len})")
    sot = _token_id(SOT_ID if sot_token_id is None else sot_token_id, "sot_token_id")
    eos = _token_id(EOS_ID if eos_token_id is None else eos_token_id, "eos_token_id")
    pad = model.pad_id if pad_token_id is None else _token_id(pad_token_id, "pad_token_id")
    processors = LogitsProcessors(eos, min_seq_len, repetition_penalty)
    criteria = list(stopping_criteria) if stopping_criteria is not None else [MaxLengthCriteria(seq_len)]
    beam = generation_type == "beam_search"
    warp = None if beam else _warper(generation_type, top_p, top_k)
    if samples_per_image < 1 or (samples_per_image > 1 and (beam or text is not None)):
        raise ValueError(f"samples_per_image={samples_per_image} needs top-k/top-p sampling without a text prompt")
    squeeze = text is not None and text.dim() == 1
    prefix = text[None] if squeeze else text
    if prefix is None:
        prefix = torch.full((image.shape[0] * samples_per_image, 1), sot, dtype=torch.long, device=image.device)
    longest = seq_len - 1 if beam else max(prefix.shape[1], seq_len - 1)
    limit = model.max_input_ids
    if stopping_criteria is None and longest > limit:
        raise DataError(f"generation would feed {longest} ids but the model takes at most {limit} "
                        f"(seq_len may be at most {limit + 1})")
    reach = longest if stopping_criteria is None else limit  # the most ids the loop may feed
    use_cache = use_cache and (beam or reach <= max_seq_len)  # a sliding window needs the uncached loop
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            image_embs = model.encode_image_with_tokens(image)[1].repeat_interleave(samples_per_image, 0)
            if beam:
                return beam_search(model, image_embs, num_beams=num_beams, num_beam_groups=num_beam_groups,
                                   sot=sot, eos=eos, pad=pad, processors=processors, criteria=criteria,
                                   seq_len=seq_len, limit=limit, fixed_output_length=fixed_output_length,
                                   cached=use_cache)
            steps = CachedDecoding(model, image_embs, 1, limit) if use_cache else EagerDecoding(
                model, image_embs, 1, max_seq_len)
            out = _sample(steps, prefix, limit, seq_len=seq_len, max_seq_len=max_seq_len, temperature=temperature,
                          warp=warp, processors=processors, eos=eos, pad=pad, criteria=criteria,
                          fixed_output_length=fixed_output_length, cached=use_cache)
            return out[0] if squeeze else out
    finally:
        model.train(was_training)
