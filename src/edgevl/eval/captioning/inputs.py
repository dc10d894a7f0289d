"""Checking and pairing tokenized caption inputs in pycocoevalcap's `gts` / `res` layout."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from edgevl.errors import DataError

References = Mapping[Hashable, Sequence[str]]
Hypotheses = Mapping[Hashable, "str | Sequence[str]"]


def pair_up(gts: References, res: Hypotheses) -> tuple[list[Hashable], list[list[str]], list[str]]:
    """Return (ids, references, hypotheses) in `gts` order; `res` values may be a str or a one-item list."""
    missing = [k for k in gts if k not in res]
    extra = [k for k in res if k not in gts]
    if missing or extra:
        raise DataError(
            f"references and hypotheses must cover the same images: {len(missing)} without a hypothesis "
            f"(e.g. {missing[:3]}), {len(extra)} without references (e.g. {extra[:3]})"
        )
    if not gts:
        raise DataError("no images to score: the references are empty")
    ids = list(gts)
    refs = [_references(k, gts[k]) for k in ids]
    hyps = [_hypothesis(k, res[k]) for k in ids]
    return ids, refs, hyps


def _references(key: Hashable, value: Sequence[str]) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) == 0:
        raise DataError(f"references of image {key!r} must be a non-empty list of strings, got {value!r:.80}")
    if not all(isinstance(v, str) for v in value):
        raise DataError(f"references of image {key!r} must all be strings, got {value!r:.80}")
    return list(value)


def _hypothesis(key: Hashable, value: str | Sequence[str]) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    raise DataError(f"image {key!r} needs exactly one hypothesis string, got {value!r:.80}")
