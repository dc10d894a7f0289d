"""CLI frame: every flag is documented, errors are one line, version and smoke runs."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import edgevl
from edgevl.cli import build_parser, main


def _walk(parser: argparse.ArgumentParser, path: str = "edgevl"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")


def test_every_flag_and_command_has_help():
    undocumented = []
    for path, parser in _walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                undocumented.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert undocumented == []


def test_every_command_help_renders(capsys):
    for path, _ in _walk(build_parser()):
        argv = path.split()[1:] + ["--help"]
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0, path
    assert "usage: edgevl" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"edgevl {edgevl.__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "commands" in capsys.readouterr().out


def test_tokenize_command(capsys):
    assert main(["tokenize", "a photo of a cat", "--trim"]) == 0
    assert "[49406, 320, 1125, 539, 320, 2368, 49407]" in capsys.readouterr().out


def test_errors_are_one_line_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "edgevl", "tokenize", "x", "--context-length", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("edgevl: error:")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_debug_shows_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "edgevl", "--debug", "tokenize", "x", "--context-length", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_info_runs(capsys):
    assert main(["info"]) == 0
    assert "torch" in capsys.readouterr().out
