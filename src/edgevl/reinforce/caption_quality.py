"""Degenerate synthetic captions: the text a sampling captioner emits when it falls into a loop or says nothing.

A caption is degenerate when (checked in this order, on whitespace-separated lower-case tokens):

- `empty`: it has no letter or digit (empty after the cut at the first ".", or punctuation only);
- `dominant_token`: of 4 or more tokens, one makes up more than half ("a 2 2 2 2 2 2");
- `repeated_token`: one token 3 or more times in a row ("a dog dog dog");
- `repeated_ngram`: an n-gram of 2 or 3 tokens 3 or more times back to back ("a man a man a man").

Real captions such as "a red star and a blue circle on a gray background" match none of these.
"""

from __future__ import annotations

RULES = ("empty", "dominant_token", "repeated_token", "repeated_ngram")  # in the order they are checked
MIN_TOKENS_FOR_SHARE = 4
MAX_NGRAM = 3
MIN_RUN = 3


def _has_run(tokens: list[str], n: int) -> bool:
    """Whether some n-gram of `tokens` occurs `MIN_RUN` or more times back to back."""
    span = n * MIN_RUN
    return any(all(tokens[i + j] == tokens[i + j % n] for j in range(n, span)) for i in range(len(tokens) - span + 1))


def degenerate_reason(text: str) -> str | None:
    """The rule (`empty`, `dominant_token`, `repeated_token`, `repeated_ngram`) that `text` breaks, or None."""
    if not any(ch.isalnum() for ch in text):
        return "empty"
    tokens = text.lower().split()
    if len(tokens) >= MIN_TOKENS_FOR_SHARE and max(map(tokens.count, tokens)) * 2 > len(tokens):
        return "dominant_token"
    if _has_run(tokens, 1):
        return "repeated_token"
    if any(_has_run(tokens, n) for n in range(2, MAX_NGRAM + 1)):
        return "repeated_ngram"
    return None
