"""The `edgevl` command line: one module per command group, each command a pair of functions.

`add_<name>(subparsers)` declares the command's parser (every flag has a help text) and sets `func` to the
`run_<name>(args)` function that runs it. Training and reinforcement flags are generated from their config
dataclasses (`flags.py`); flags several commands share live in `common.py`. Heavy imports happen inside the run
functions (and generated flags are added when their command is used), so `edgevl --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from edgevl.cli import data, demo, evaluate, export, inference, info, photos, reinforce, train, world
from edgevl.cli.common import CommandParser, HelpFormatter
from edgevl.errors import EdgevlError
from edgevl.version import __version__

EXIT_CODES_HELP = """exit codes (docs/reliability.md):
  0    done (bad inputs, if any, were skipped and counted)
  1    `reinforce verify` found problems
  2    error: bad arguments, configuration, damaged weights, --strict and a bad input
  3    no usable input: every input was bad
  4    the output folder is in use by another edgevl process
  130  interrupted"""

# The order here is the order in `edgevl --help`.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    info.add_info,
    info.add_tokenize,
    inference.add_embed,
    inference.add_classify,
    evaluate.add_eval,
    world.add_world,
    data.add_data_check,
    inference.add_eval_captions,
    data.add_augment,
    inference.add_caption,
    reinforce.add_reinforce,
    train.add_train,
    train.add_train_captioner,
    export.add_convert,
    export.add_export,
    export.add_compile,
    demo.add_demo,
    photos.add_index,
    photos.add_search,
    photos.add_serve,
]


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def build_parser(lazy: bool = False) -> argparse.ArgumentParser:
    """The full argument parser (also used by the tests to check every flag has help).

    With `lazy`, the flags generated from config dataclasses are added only when their command is parsed or its
    help shown (their modules import torch); `main` builds it so.
    """
    parser = CommandParser(
        prog="edgevl",
        description="edgevl: fast image-text models (MobileCLIP, LightCap) for edge devices.",
        epilog=EXIT_CODES_HELP,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgevl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    if not lazy:
        for p in _parsers(parser):
            p.add_deferred_flags()
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (`EXIT_CODES_HELP`; errors are one line on stderr)."""
    parser = build_parser(lazy=True)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("edgevl: interrupted", file=sys.stderr)
        return 130
    except (EdgevlError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"edgevl: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)

