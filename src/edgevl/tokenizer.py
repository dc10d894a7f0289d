"""The CLIP byte-level BPE tokenizer, id-for-id equal to OpenAI CLIP / open_clip.

Text is cleaned (ftfy, HTML unescape twice, whitespace collapse, lower-case), split by the CLIP pre-tokenizer
regex, byte-encoded and merged with the 48,894 BPE merges of `bpe_simple_vocab_16e6.txt.gz`. Rows are
`[<start_of_text>, ids..., <end_of_text>, 0, ...]`; over-long rows are cut and end with `<end_of_text>`.

It sits on the data-loading hot path, so it caches per word and skips ftfy for plain ASCII text (where ftfy
is provably the identity); `SimpleTokenizer(cache=False)` is the uncached reference used by the benchmark.
"""

from __future__ import annotations

import gzip
import html
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources

import ftfy
import numpy as np
import regex
import torch

from edgevl.errors import EdgevlError

DEFAULT_CONTEXT_LENGTH = 77
SOT_TEXT = "<start_of_text>"
EOT_TEXT = "<end_of_text>"
_NUM_MERGES = 49152 - 256 - 2
_WORD_CACHE_LIMIT = 500_000

_PRETOKENIZE = regex.compile(
    r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = re.compile(r"\s+")  # stdlib re, like the reference (its \s differs from regex's)
# Printable ASCII without '&': ftfy.fix_text returns such strings unchanged and html.unescape is a no-op.
_PLAIN_ASCII = regex.compile(r"[ -%'-~]*")


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """Reversible map from the 256 byte values to printable unicode characters (the byte-level BPE alphabet).

    Printable latin-1 bytes map to themselves; the remaining ones are shifted to code points from 256 up, so
    that no byte maps to whitespace or a control character.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in keep}
    shift = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shift)
            shift += 1
    return mapping


def clean_text(text: str) -> str:
    """The reference cleaning: ftfy, HTML-unescape twice, strip, collapse whitespace, lower-case."""
    if _PLAIN_ASCII.fullmatch(text) is None:
        text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text))
    return _WHITESPACE.sub(" ", text).strip().lower()


def _reference_clean(text: str) -> str:
    """Cleaning without the ASCII shortcut (used by the uncached reference tokenizer and tests)."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return _WHITESPACE.sub(" ", text.strip()).strip().lower()


def _load_merges() -> list[tuple[str, str]]:
    blob = resources.files("edgevl").joinpath("assets/bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(blob).decode("utf-8").split("\n")[1 : _NUM_MERGES + 1]
    return [tuple(line.split()) for line in lines]  # type: ignore[misc]


@lru_cache(maxsize=1)
def _vocabulary() -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    merges = _load_merges()
    symbols = list(byte_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT_TEXT, EOT_TEXT]
    return {tok: i for i, tok in enumerate(vocab)}, {m: i for i, m in enumerate(merges)}


class SimpleTokenizer:
    """CLIP BPE tokenizer: `tokenizer(texts) -> LongTensor[N, context_length]`, plus `decode(ids)`.

    `truncate=False` raises instead of cutting over-long texts (OpenAI `clip.tokenize` behaviour);
    `cache=False` disables the word cache and the ASCII fast path (slow, reference behaviour).
    """

    def __init__(
        self, context_length: int = DEFAULT_CONTEXT_LENGTH, *, truncate: bool = True, cache: bool = True
    ) -> None:
        if context_length < 2:
            raise EdgevlError(f"context_length must be at least 2 (start and end tokens), got {context_length}")
        self.context_length = context_length
        self.truncate = truncate
        self.encoder, self.bpe_ranks = _vocabulary()
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.byte_encoder = byte_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.sot_token_id = self.encoder[SOT_TEXT]
        self.eot_token_id = self.encoder[EOT_TEXT]
        self.pad_token_id = 0
        self.vocab_size = len(self.encoder)
        self._cache_enabled = cache
        self._word_cache: dict[str, list[int]] = {}
        self._clean = clean_text if cache else _reference_clean

    # ------------------------------------------------------------------------------------ BPE core
    def _bpe(self, symbols: str) -> list[str]:
        """Merge the byte symbols of one pre-token by rank; the last symbol carries the `</w>` marker."""
        word = [*symbols[:-1], symbols[-1] + "</w>"]
        ranks = self.bpe_ranks
        while len(word) > 1:
            best, best_rank = None, None
            for pair in zip(word, word[1:]):
                r = ranks.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = pair, r
            if best is None:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def _word_ids(self, token: str) -> list[int]:
        if token == SOT_TEXT or token == EOT_TEXT:
            return [self.encoder[token]]
        ids = self._word_cache.get(token) if self._cache_enabled else None
        if ids is None:
            symbols = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids = [self.encoder[piece] for piece in self._bpe(symbols)]
            if self._cache_enabled:
                if len(self._word_cache) >= _WORD_CACHE_LIMIT:
                    self._word_cache.clear()
                self._word_cache[token] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without start/end tokens and without truncation."""
        ids: list[int] = []
        for token in _PRETOKENIZE.findall(self._clean(text)):
            ids.extend(self._word_ids(token))
        return ids

    # --------------------------------------------------------------------------------- public API
    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """Tokenize one text or a list of texts into a zero-padded LongTensor[N, context_length]."""
        if isinstance(texts, str):
            texts = [texts]
        ctx = context_length or self.context_length
        if ctx < 2:
            raise EdgevlError(f"context_length must be at least 2 (start and end tokens), got {ctx}")
        out = np.zeros((len(texts), ctx), dtype=np.int64)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise EdgevlError(f"tokenizer expects str texts, got {type(text).__name__} at index {row}")
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > ctx:
                if not self.truncate:
                    raise EdgevlError(
                        f"text {row} has {len(ids)} tokens, more than context_length {ctx}: {text[:60]!r}"
                    )
                ids = ids[:ctx]
                ids[-1] = self.eot_token_id
            out[row, : len(ids)] = ids
        return torch.from_numpy(out)

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = True) -> str | list[str]:
        """Ids back to text. A 2-D tensor gives one string per row.

        With `skip_special_tokens` the start token is dropped and decoding stops at the end token (padding is
        never decoded); otherwise every id is decoded, as open_clip does.
        """
        if isinstance(ids, torch.Tensor) and ids.dim() == 2:
            return [self.decode(row, skip_special_tokens) for row in ids]  # type: ignore[misc]
        seq = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if skip_special_tokens:
            if self.eot_token_id in seq:
                seq = seq[: seq.index(self.eot_token_id)]
            seq = [i for i in seq if i != self.sot_token_id]
        pieces = []
        for i in seq:
            if not 0 <= int(i) < self.vocab_size:
                raise EdgevlError(f"token id {i} is outside the vocabulary (0..{self.vocab_size - 1})")
            pieces.append(self.decoder[int(i)])
        raw = bytearray(self.byte_decoder[c] for c in "".join(pieces))
        return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()


@lru_cache(maxsize=8)
def _shared_tokenizer(context_length: int) -> SimpleTokenizer:
    return SimpleTokenizer(context_length)


def get_tokenizer(model_name: str = "", context_length: int | None = None) -> SimpleTokenizer:
    """The tokenizer for a registered model (its `text_cfg.context_length`), or the plain CLIP one.

    All edgevl text towers use the CLIP BPE vocabulary; only the context length differs per model.
    """
    if context_length is None:
        context_length = DEFAULT_CONTEXT_LENGTH
        if model_name:
            from edgevl.models.registry import get_model_config

            context_length = get_model_config(model_name)["text_cfg"].get("context_length", context_length)
    return _shared_tokenizer(int(context_length))


def tokenize(texts: str | Sequence[str], context_length: int = DEFAULT_CONTEXT_LENGTH) -> torch.Tensor:
    """Module-level shortcut: `edgevl.tokenize(["a dog"]) -> LongTensor[1, 77]`."""
    return _shared_tokenizer(context_length)(texts)


def decode(ids: Iterable[int] | torch.Tensor) -> str | list[str]:
    """Module-level shortcut for `SimpleTokenizer.decode`."""
    return _shared_tokenizer(DEFAULT_CONTEXT_LENGTH).decode(ids)
