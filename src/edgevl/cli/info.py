"""`edgevl info` and `edgevl tokenize`."""

from __future__ import annotations

import argparse

from edgevl.cli.common import subparser
from edgevl.version import __version__


def add_info(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "info", "print versions, threads and the registered model configs")
    p.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    import platform

    import torch

    print(f"edgevl {__version__}")
    print(f"python {platform.python_version()}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    print(f"cuda available: {torch.cuda.is_available()}")
    try:
        from edgevl.models.registry import list_models
    except ImportError:
        return 0
    print("models: " + ", ".join(list_models()))
    return 0


def add_tokenize(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "tokenize", "tokenize texts with the CLIP BPE tokenizer and print the ids")
    p.add_argument("texts", nargs="+", help="one or more texts (quote each)")
    p.add_argument("--context-length", type=int, default=77, help="output row length (pad/truncate)")
    p.add_argument("--trim", action="store_true", help="print only start..end ids, without padding")
    p.set_defaults(func=run_tokenize)


def run_tokenize(args: argparse.Namespace) -> int:
    from edgevl.tokenizer import get_tokenizer

    tok = get_tokenizer(context_length=args.context_length)
    for text, row in zip(args.texts, tok(args.texts)):
        ids = row.tolist()
        if args.trim:
            ids = ids[: ids.index(tok.eot_token_id) + 1] if tok.eot_token_id in ids else ids
        print(f"{text!r}\t{ids}")
    return 0
