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


def _no_model(args):
    raise AssertionError("bad embed arguments must be refused before the model is loaded")


def test_os_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import edgevl.cli.inference

    monkeypatch.setattr(edgevl.cli.inference, "load_for_inference", _no_model)
    assert main(["embed", "--texts-file", str(tmp_path), "--out", str(tmp_path / "e.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgevl: error:") and "Is a directory" in err and str(tmp_path) in err
    assert len(err.splitlines()) == 1


def test_embed_checks_out_suffix_before_loading_a_model(tmp_path, capsys, monkeypatch):
    import edgevl.cli.inference

    monkeypatch.setattr(edgevl.cli.inference, "load_for_inference", _no_model)
    assert main(["embed", "--texts", "a cat", "--out", str(tmp_path / "e.txt")]) == 2
    assert "must end in .npy or .safetensors" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, message", [
    (["--opset", "99"], "--opset 99 is not supported by the dynamo exporter; choose 18 to 23"),
    (["--opset", "17"], "--opset 17 is not supported by the dynamo exporter"),
    (["--exporter", "legacy", "--opset", "21"], "--opset 21 is not supported by the legacy exporter; choose 7 to 20"),
    (["--parts", "captioner", "--captioner", "lightcap-tiny:"], "--captioner 'lightcap-tiny:' needs weights"),
])
def test_export_validates_options_before_building(tmp_path, capsys, argv, message):
    assert main(["export", "--model", "world-student-mci", "--out", str(tmp_path / "x"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_help_points_at_existing_commands():
    helps = [a.help or "" for _, parser in _walk(build_parser()) for a in parser._actions]
    commands = set(next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices)
    assert "info" in commands and "list" not in commands
    assert not [h for h in helps if "edgevl list" in h]
    assert any("(edgevl info)" in h for h in helps)
