"""ROUGE-L as coco-caption computes it: max LCS precision and max LCS recall over references, F with beta 1.2."""

from __future__ import annotations

from collections.abc import Sequence

from edgevl.eval.captioning.inputs import Hypotheses, References, pair_up

BETA = 1.2


def rouge_l(gts: References, res: Hypotheses) -> tuple[float, list[float]]:
    """ROUGE-L over tokenized captions: (mean over images, per-image scores in `gts` order)."""
    _, refs, hyps = pair_up(gts, res)
    per_image = [_rouge_l_sentence(hyp, hyp_refs) for hyp, hyp_refs in zip(hyps, refs)]
    return sum(per_image) / len(per_image), per_image


def _rouge_l_sentence(hyp: str, refs: Sequence[str]) -> float:
    # coco-caption splits on single spaces, so an empty caption is one empty token (this matters for "").
    hyp_tokens = hyp.split(" ")
    precision = recall = 0.0
    for ref in refs:
        ref_tokens = ref.split(" ")
        lcs = lcs_length(ref_tokens, hyp_tokens)
        precision = max(precision, lcs / len(hyp_tokens))
        recall = max(recall, lcs / len(ref_tokens))
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + BETA**2) * precision * recall / (recall + BETA**2 * precision)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a)*len(b)) dynamic programming)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0]
        for j, token_b in enumerate(b):
            current.append(previous[j] + 1 if token_a == token_b else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]
