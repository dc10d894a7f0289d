"""The `edgevl` command line.

Each subcommand is a pair of functions: `_add_<name>(subparsers)` declares the parser (every flag has a help
text) and sets `func` to the function that runs it. Heavy imports happen inside the run functions so that
`edgevl --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from edgevl import __version__
from edgevl.errors import EdgevlError


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults next to every flag and keep description line breaks."""


def _subparser(sub: argparse._SubParsersAction, name: str, help_text: str, description: str | None = None):
    return sub.add_parser(
        name, help=help_text, description=description or help_text, formatter_class=_HelpFormatter
    )


# --------------------------------------------------------------------------------------------- info
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = _subparser(sub, "info", "print versions, threads and the registered model configs")
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
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


# ------------------------------------------------------------------------------------- tokenize
def _add_tokenize(sub: argparse._SubParsersAction) -> None:
    p = _subparser(sub, "tokenize", "tokenize texts with the CLIP BPE tokenizer and print the ids")
    p.add_argument("texts", nargs="+", help="one or more texts (quote each)")
    p.add_argument("--context-length", type=int, default=77, help="output row length (pad/truncate)")
    p.add_argument("--trim", action="store_true", help="print only start..end ids, without padding")
    p.set_defaults(func=_run_tokenize)


def _run_tokenize(args: argparse.Namespace) -> int:
    from edgevl.tokenizer import get_tokenizer

    tok = get_tokenizer(context_length=args.context_length)
    for text, row in zip(args.texts, tok(args.texts)):
        ids = row.tolist()
        if args.trim:
            ids = ids[: ids.index(tok.eot_token_id) + 1] if tok.eot_token_id in ids else ids
        print(f"{text!r}\t{ids}")
    return 0


# The order here is the order in `edgevl --help`.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_info,
    _add_tokenize,
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by the tests to check every flag has help)."""
    parser = argparse.ArgumentParser(
        prog="edgevl",
        description="edgevl: fast image-text models (MobileCLIP, LightCap) for edge devices.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgevl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (errors are one line on stderr, exit code 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("edgevl: interrupted", file=sys.stderr)
        return 130
    except (EdgevlError, FileNotFoundError, PermissionError, ValueError) as exc:
        if args.debug:
            raise
        print(f"edgevl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
