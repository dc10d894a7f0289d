"""Command-line flags generated from a config dataclass, so that each default and help text exists once.

Every field of the dataclass is a flag unless its metadata says `"cli": False`; the help text is the field's
`metadata["help"]`. The flag is `--` + the field name with dashes (`batch_size` -> `--batch-size`), its default
is the field's and its type comes from the annotation:

- `bool` defaulting to False: `--x` (store_true). Defaulting to True: `--no-x`, kept as `no_x` in the parsed
  namespace so that `--help` shows the flag's own default (False), and its help text says what `--no-x` does
  (`progress`: "no progress bar"); with `"negatable": True` both `--x` and `--no-x` (BooleanOptionalAction);
- `int`, `float`, `str`, and `X | None` as X;
- `list[X]` / `tuple[X, ...]` (or `| None`): one or more values (`nargs="+"`).

A field without a default is a required flag. Optional metadata keys:

- `"flag"`: another flag name (`fmt` is `--format`); `"choices"`, `"metavar"`: as in argparse;
- `"required"`: the command needs the flag although the field has a default (for library callers);
- `"parse"`: a function from the flag's text to the field's value (`"a,b"` -> `("a", "b")`), called by
  `config_from_args` so that its errors read like the config's own checks; a list default is shown joined by
  commas;
- `"cli_default"`: the flag's default when the command works out a missing value itself (`--model`: the
  --pretrained folder's own model); the field's default is then `%(fallback)s` in the help text.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def cli_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of dataclass `cls` that are command-line flags, in declaration order."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def field_default(f: dataclasses.Field) -> Any:
    """The field's default value (a fresh one for a default_factory); `dataclasses.MISSING` when it has none."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def inverted(f: dataclasses.Field) -> bool:
    """True for a bool field defaulting to True whose flag is `--no-x`."""
    return f.default is True and not f.metadata.get("negatable", False)


def flag_name(f: dataclasses.Field) -> str:
    name = f.name.replace("_", "-")
    return f.metadata.get("flag", f"--no-{name}" if inverted(f) else f"--{name}")


def flag_dest(f: dataclasses.Field) -> str:
    """Where argparse stores the flag's value."""
    return f"no_{f.name}" if inverted(f) else f.name


def _flag_type(hint: Any) -> tuple[type, type | None]:
    """(value type, container of several values or None) of an annotation: `int | None` -> (int, None),
    `tuple[str, ...]` -> (str, tuple)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) in (list, tuple):
        return typing.get_args(hint)[0], typing.get_origin(hint)
    if hint not in (bool, int, float, str):
        raise TypeError(f"no command-line flag type for {hint!r}")
    return hint, None


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per command-line field of dataclass `cls` (see the module docstring)."""
    hints = typing.get_type_hints(cls)
    for f in cli_fields(cls):
        meta = f.metadata
        default = field_default(f)
        kwargs: dict[str, Any] = {"dest": flag_dest(f), "help": meta["help"]}
        kwargs.update({key: meta[key] for key in ("choices", "metavar") if key in meta})
        kind, container = _flag_type(hints[f.name])
        if kind is bool:
            if meta.get("negatable", False):
                kwargs.update(action=argparse.BooleanOptionalAction, default=default)
            else:
                kwargs["action"] = "store_true"  # `--x`, or `--no-x` of a True default: False unless given
        else:
            if "parse" not in meta:
                kwargs.update({"type": kind} if kind is not str else {})
                kwargs.update({"nargs": "+"} if container else {})
            elif isinstance(default, (list, tuple)):  # the flag is text, parsed in config_values
                default = ",".join(map(str, default))
            if default is dataclasses.MISSING or meta.get("required", False):
                kwargs["required"] = True
            else:
                kwargs["default"] = meta.get("cli_default", default)
        action = parser.add_argument(flag_name(f), **kwargs)
        if "cli_default" in meta:
            action.fallback = default  # help text: %(fallback)s


def config_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """{field name: value} of the command-line fields of `cls`, from the parsed flags."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in cli_fields(cls):
        value = getattr(args, flag_dest(f))
        if inverted(f):
            value = not value
        parse = f.metadata.get("parse")
        if parse is not None and isinstance(value, str):
            value = parse(value)
        elif isinstance(value, list) and _flag_type(hints[f.name])[1] is tuple:
            value = tuple(value)
        values[f.name] = value
    return values


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """`cls` built from the parsed flags (fields that are no flags keep their defaults), `overrides` winning."""
    return cls(**{**config_values(cls, args), **overrides})
