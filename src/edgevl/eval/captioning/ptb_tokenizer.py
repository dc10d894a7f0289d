"""Pure-Python imitation of coco-caption's PTBTokenizer preprocessing (Stanford PTBTokenizer 3.4.1 + filter).

coco-caption runs `PTBTokenizer -preserveLines -lowerCase` in Java and then drops the punctuation tokens in
`PUNCTUATION_TOKENS`. This module reproduces that output for ordinary caption text without Java; the cases where
it is known to differ are listed in docs/captioning_metrics.md.
"""

from __future__ import annotations

import re

# Tokens coco-caption removes after tokenization (note: the bracket tokens are lower-cased by -lowerCase
# before this filter, so "-lrb-" etc. survive, exactly as in coco-caption).
PUNCTUATION_TOKENS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

_UNICODE_MAP = str.maketrans(
    {
        "\u201c": ' " ',  # left double quote
        "\u201d": ' " ',  # right double quote
        "\u2018": "'",
        "\u2019": "'",
        "\u2014": " -- ",  # em dash
        "\u2013": " -- ",  # en dash
        "\u2026": " ... ",
        "\u00bd": "1/2",
        "\u00bc": "1/4",
        "\u00be": "3/4",
        "\u20ac": "$",
        "\u00a3": "#",
        "\n": " ",
        "\r": " ",
    }
)

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}

# Words that keep their final period (PTB's abbreviation list, restricted to ones seen in captions).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc inc co corp ltd mt ave blvd rd dept sq ft gen gov sen rep capt col lt sgt "
    "cf al bros rev hon esq jan feb mar apr jun jul aug sep sept oct nov dec ph.d".split()
)
# Words that keep their period only when a number follows ("no. 5", "fig. 2").
_ABBREVIATIONS_BEFORE_NUMBER = frozenset(["no", "fig", "vol", "p", "pp", "nos"])
# Words PTB splits into two tokens.
_SPLIT_WORDS = {
    "cannot": "can not",
    "gonna": "gon na",
    "gotta": "got ta",
    "wanna": "wan na",
    "gimme": "gim me",
    "lemme": "lem me",
    "'tis": "'t is",
    "'twas": "'t was",
}
# Leading-apostrophe words PTB keeps whole ("'em", "'90s", and clitics standing alone).
_APOSTROPHE_WORD = re.compile(r"'(?:em|cause|n|tis|twas|\d+s?|s|m|d|re|ve|ll)(?![\w@])", re.IGNORECASE)
_CONTRACTION = re.compile(r"^(.+?)(n't|'s|'m|'d|'re|'ve|'ll)$")
_DECIMAL_THEN_UNIT = re.compile(r"(\d+(?:[.:,]\d+)+)([^\W\d_]+)")  # "2.5kg" -> "2.5 kg", "10:00am" -> "10:00 am"

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<ellipsis>\.\.\.+)
    | (?P<dashes>--+)
    | (?P<word>(?:-(?=\d))?[\w@]+(?:(?:[-./](?=[\w@])|(?<=[^\W\d_])'(?=[^\W\d_])|(?<=\d)[,:](?=\d))[\w@]+)*)
    | (?P<apostrophe>')
    | (?P<quote>["`])
    | (?P<bracket>[()\[\]{}])
    | (?P<marks>[!?]+)
    | (?P<symbol>.)
    """,
    re.VERBOSE,
)


def ptb_tokenize(caption: str) -> str:
    """Tokenize and lower-case one caption the way coco-caption does, punctuation tokens removed."""
    return " ".join(t for t in _raw_tokens(caption.translate(_UNICODE_MAP)) if t not in PUNCTUATION_TOKENS)


def _raw_tokens(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        starts_word = text[pos] == "'" and (pos == 0 or text[pos - 1].isspace())
        m = _APOSTROPHE_WORD.match(text, pos) if starts_word else None
        if m:
            tokens.extend(_word_tokens(m.group()))
            pos = m.end()
            continue
        m = _TOKEN.match(text, pos)
        kind, tok = m.lastgroup, m.group()
        pos = m.end()
        if kind == "word":
            tokens.extend(_word_tokens(tok))
            if _keeps_period(tok, text, pos):
                tokens[-1] += "."
                pos += 1
        elif kind == "quote":
            tokens.append("''")  # opening or closing, coco-caption drops both
        elif kind == "bracket":
            tokens.append(_BRACKETS[tok])
        elif kind == "ellipsis":
            tokens.append("...")
        elif kind == "dashes":
            tokens.append("--")
        elif kind != "space":
            tokens.append(tok.lower())
    return tokens


def _word_tokens(word: str) -> list[str]:
    lower = word.lower()
    if lower in _SPLIT_WORDS:
        return _SPLIT_WORDS[lower].split()
    if "'n'" in lower:  # rock'n'roll -> rock 'n' roll
        return lower.replace("'n'", " 'n' ").split()
    m = _CONTRACTION.match(lower) or _DECIMAL_THEN_UNIT.fullmatch(lower)
    if m:
        return [m.group(1), m.group(2)]
    return [lower]


def _keeps_period(word: str, text: str, end: int) -> bool:
    """True when the '.' right after `word` belongs to it (abbreviations, initials, "u.s.")."""
    if end >= len(text) or text[end] != "." or text[end + 1 : end + 2] == ".":
        return False
    if end + 1 < len(text) and not text[end + 1].isspace():
        return False
    lower = word.lower()
    if re.fullmatch(r"[^\W\d_](?:\.[^\W\d_])*", lower) or lower in _ABBREVIATIONS:
        return True
    return lower in _ABBREVIATIONS_BEFORE_NUMBER and re.match(r"\s+\d", text[end + 1 :]) is not None
