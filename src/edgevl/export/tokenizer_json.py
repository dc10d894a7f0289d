"""The CLIP tokenizer as one JSON file an app can read: byte map, vocabulary, merges, special ids, rules.

The file holds everything `edgevl.tokenizer.SimpleTokenizer` uses, so a phone app (or
`edgevl.export.standalone_litert`) reproduces its ids without Python's edgevl: clean the text, split it with
`pretokenize_regex`, map each UTF-8 byte through `byte_to_unicode`, merge pairs by rank, look pieces up in `vocab`.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgevl.io import atomic_write_text

TOKENIZER_FILE = "tokenizer.json"


def tokenizer_document(context_length: int) -> dict:
    """The JSON-ready description of the CLIP BPE tokenizer at `context_length`."""
    from edgevl.tokenizer import _PRETOKENIZE, EOT_TEXT, SOT_TEXT, SimpleTokenizer, byte_to_unicode

    tokenizer = SimpleTokenizer(context_length)
    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.__getitem__)
    return {
        "type": "clip-bpe",
        "context_length": context_length,
        "sot_token": SOT_TEXT, "eot_token": EOT_TEXT,
        "sot_id": tokenizer.sot_token_id, "eot_id": tokenizer.eot_token_id, "pad_id": tokenizer.pad_token_id,
        "cleaning": ["ftfy.fix_text (non-ASCII text only)", "html.unescape twice", "collapse whitespace to one space",
                     "strip", "lower-case"],
        "pretokenize_regex": _PRETOKENIZE.pattern,
        "pretokenize_flags": "IGNORECASE; \\p{L} letters, \\p{N} digits (Unicode classes)",
        "end_of_word_suffix": "</w>",
        "row_layout": "[sot_id, ids..., eot_id, pad_id...]; longer texts are cut to context_length with eot_id last",
        "byte_to_unicode": {str(b): c for b, c in byte_to_unicode().items()},
        "merges": [f"{a} {b}" for a, b in merges],
        "vocab": tokenizer.encoder,
    }


def write_tokenizer_json(path: str | Path, context_length: int) -> Path:
    """Atomically write the tokenizer JSON to `path`."""
    return atomic_write_text(Path(path), json.dumps(tokenizer_document(context_length), ensure_ascii=False))
