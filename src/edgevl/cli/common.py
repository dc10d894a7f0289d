"""What several commands share: the parser class and help layout, the model/--aot/--strict/--threads flags,
loading a CLIP model for inference and the skipped-input report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from edgevl.errors import DataError, NoUsableInputError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults next to every flag and keep description line breaks."""


class CommandParser(argparse.ArgumentParser):
    """An argument parser that can add some of its flags on first use.

    Flags generated from a config dataclass (`flags.add_config_flags`) import the config's module, which imports
    torch; `defer` postpones that until this command is parsed or its help is shown, so `edgevl --help` and the
    other commands stay instant. `add_deferred_flags` adds them now (`build_parser()` does, for the tests).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, add_flags: Callable[[argparse.ArgumentParser], None]) -> None:
        self._deferred.append(add_flags)

    def add_deferred_flags(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(self, args=None, namespace=None):
        self.add_deferred_flags()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.add_deferred_flags()
        return super().format_usage()

    def format_help(self) -> str:
        self.add_deferred_flags()
        return super().format_help()


def subparser(sub: argparse._SubParsersAction, name: str, help_text: str, description: str | None = None):
    return sub.add_parser(name, help=help_text, description=description or help_text, formatter_class=HelpFormatter)


def group_parser(sub: argparse._SubParsersAction, name: str, help_text: str, description: str | None = None,
                 *, title: str, dest: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A command with subcommands (`world make`, `reinforce run`); alone it prints its help."""
    p = subparser(sub, name, help_text, description)
    p.set_defaults(func=lambda _args: p.print_help() or 0)
    return p, p.add_subparsers(title=title, dest=dest, metavar=dest.upper())


# ------------------------------------------------------------------------------------------- flags
def add_strict_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 2) when any input is bad, instead of skipping and counting it")


def add_threads_flag(p: argparse.ArgumentParser, default: int | None = None) -> None:
    why = "1 is fastest on a busy CPU" if default == 1 else "default: torch's choice"
    p.add_argument("--threads", type=int, default=default, help=f"torch CPU threads ({why})")


def set_threads(args: argparse.Namespace) -> None:
    """Apply --threads (when given)."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def add_model_flags(p: argparse.ArgumentParser, default_model: str = "MobileCLIP-S2") -> None:
    """--model, --pretrained, --batch-size and --threads of the commands that run a CLIP model."""
    p.add_argument("--model", default=None,
                   help=f"registered model config name (see `edgevl info`); default: the --pretrained folder's own "
                   f"model, else {default_model}")
    p.set_defaults(default_model=default_model)
    p.add_argument(
        "--pretrained",
        default=None,
        help="weights: a checkpoint file (.pt/.bin/.safetensors, any supported layout), a model folder or a "
        "training run folder (its model/ or newest checkpoint); without it the model has random weights",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images or texts per forward pass")
    add_threads_flag(p)


def add_aot_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--aot", default=None, metavar="DIR",
        help="run the AOTInductor packages that `edgevl compile` wrote to DIR instead of the PyTorch model "
        "(--model and --pretrained then come from DIR)",
    )


# --------------------------------------------------------------------------------------- running
def warn_if_random_weights(args: argparse.Namespace) -> None:
    """Say so on stderr when a command builds `args.model` (already resolved) without --pretrained weights."""
    if args.pretrained is None:
        print(f"edgevl: warning: no --pretrained given, {args.model} has random weights", file=sys.stderr)


def load_for_inference(args: argparse.Namespace):
    """(model, preprocess, tokenizer) from the model flags or --aot; sets `args.model` to the resolved name."""
    import edgevl

    set_threads(args)
    if getattr(args, "aot", None):
        from edgevl.data.transforms import ImageTransform
        from edgevl.export.aot import AotCLIP

        model = AotCLIP(args.aot)
        if model.model_name is None:
            raise ValueError(f"{args.aot} was compiled without a model name, so its tokenizer is unknown")
        edgevl.keep_freed_memory()
        return model, ImageTransform(model.preprocess_cfg), edgevl.get_tokenizer(model.model_name)
    from edgevl.models.factory import resolve_model_name

    args.model = resolve_model_name(args.model, args.pretrained, args.default_model)  # results name it too
    warn_if_random_weights(args)
    model, _, preprocess = edgevl.create_model_and_transforms(args.model, pretrained=args.pretrained)
    tokenizer = edgevl.get_tokenizer(context_length=model.context_length)
    model = edgevl.optimize_for_inference(model)
    edgevl.keep_freed_memory()  # a process that runs the model batch after batch: reuse the freed activations
    return model, preprocess, tokenizer


def check_inputs(good: int, skipped: list[tuple[str, str]], strict: bool, what: str = "images") -> None:
    """List the skipped inputs; fail under --strict when there are any, and when no input was usable (exit 3)."""
    for key, reason in skipped:
        print(f"edgevl: skipped {key}: {reason}", file=sys.stderr)
    if skipped:
        print(f"edgevl: {len(skipped)} of {good + len(skipped)} {what} skipped", file=sys.stderr)
    if strict and skipped:
        key, reason = skipped[0]
        raise DataError(f"--strict: {len(skipped)} bad {what} (first: {key}: {reason})")
    if not good:
        raise NoUsableInputError(f"none of the {len(skipped)} {what} could be read; nothing to do")
