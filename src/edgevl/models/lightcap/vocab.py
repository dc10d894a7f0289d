"""Word-level caption vocabulary: a small table built from training captions and stored as JSON with the model.

Captions are lower-cased and split into words and punctuation; every token is one word, so "max 20 words" is
"max 20 tokens". Ids 0-3 are the special tokens; an untrained model gets BERT-style `[unusedN]` slots.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from edgevl.errors import ConfigError

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
SPECIALS = (PAD, BOS, EOS, UNK)
PERIOD = "."
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-case `text` and split it into words and single punctuation marks."""
    return _TOKEN_RE.findall(text.lower())


class WordVocab:
    """Bidirectional word <-> id table with `[PAD] [BOS] [EOS] [UNK]` first."""

    def __init__(self, words: Sequence[str]) -> None:
        words = list(words)
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ConfigError(f"a word vocabulary must start with {list(SPECIALS)}, got {words[:4]}")
        if len(set(words)) != len(words):
            dup = next(w for w, n in Counter(words).items() if n > 1)
            raise ConfigError(f"duplicate word {dup!r} in the caption vocabulary")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = range(4)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def period_id(self) -> int | None:
        """Id of "." (the stop token of the synthetic-caption recipe), or None if the vocabulary lacks it."""
        return self.index.get(PERIOD)

    @classmethod
    def placeholder(cls, size: int) -> WordVocab:
        """Special tokens, ".", and `[unusedN]` slots up to `size` entries: the table of an untrained model."""
        if size < len(SPECIALS) + 1:
            raise ConfigError(f"vocab_size must be at least {len(SPECIALS) + 1}, got {size}")
        return cls([*SPECIALS, PERIOD, *(f"[unused{i}]" for i in range(size - len(SPECIALS) - 1))])

    @classmethod
    def from_captions(cls, captions: Iterable[str], min_count: int = 1, max_size: int | None = None) -> WordVocab:
        """Build a vocabulary of the words seen at least `min_count` times, most frequent first."""
        counts = Counter(w for text in captions for w in split_words(text))
        ranked = sorted((w for w, n in counts.items() if n >= min_count and w not in SPECIALS),
                        key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIALS))]
        return cls([*SPECIALS, *ranked])

    def encode(self, text: str) -> list[int]:
        """Word ids of `text` (unknown words -> `[UNK]`), without BOS/EOS."""
        return [self.index.get(w, self.unk_id) for w in split_words(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`: stops at EOS, skips PAD/BOS, attaches punctuation to the previous word."""
        out: list[str] = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id) or not 0 <= i < len(self.words):
                continue
            word = self.words[i]
            if out and len(word) == 1 and not word.isalnum():
                out[-1] += word
            else:
                out.append(word)
        return " ".join(out)

    def to_json(self) -> str:
        return json.dumps({"type": "word", "words": self.words}, ensure_ascii=False)

    @classmethod
    def load(cls, path: str | Path) -> WordVocab:
        """Read a vocabulary JSON written by `to_json` (raises ConfigError naming the file if malformed)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            words = data["words"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read caption vocabulary {str(path)!r}: {exc}") from exc
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ConfigError(f"caption vocabulary {str(path)!r}: 'words' must be a list of strings")
        return cls(words)
