"""Flags generated from the config dataclasses (edgevl.cli.flags): one default per option, help beside each field."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from edgevl.cli import build_parser, main
from edgevl.cli.flags import add_config_flags, cli_fields, config_from_args, field_default, flag_name, inverted
from edgevl.reinforce.config import ReinforceConfig
from edgevl.train.captioner_config import CaptionerTrainConfig
from edgevl.train.config import TrainConfig

CONFIGS = {("train",): TrainConfig, ("train-captioner",): CaptionerTrainConfig, ("reinforce", "run"): ReinforceConfig}


def _command(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


def _flags(path: tuple[str, ...]) -> dict[str, argparse.Action]:
    return {option: action for action in _command(path)._actions for option in action.option_strings}


@pytest.mark.parametrize("path, cls", CONFIGS.items(), ids=["-".join(p) for p in CONFIGS])
def test_every_config_field_is_a_flag_with_the_fields_default(path, cls):
    flags = _flags(path)
    for f in cli_fields(cls):
        action = flags[flag_name(f)]
        default = field_default(f)
        if default is dataclasses.MISSING or f.metadata.get("required"):
            assert action.required, f.name
        elif inverted(f):
            assert flag_name(f) == f"--no-{f.name.replace('_', '-')}" and action.default is False, f.name
        elif "cli_default" in f.metadata:
            assert action.default == f.metadata["cli_default"] and action.fallback == default, f.name
        elif "parse" in f.metadata and isinstance(action.default, str):
            assert f.metadata["parse"](action.default) == default, f.name
        else:
            assert action.default == default and type(action.default) is type(default), f.name
        assert action.choices == f.metadata.get("choices"), f.name


@pytest.mark.parametrize("path, cls", CONFIGS.items(), ids=["-".join(p) for p in CONFIGS])
def test_every_generated_flag_has_help_from_its_field(path, cls):
    flags = _flags(path)
    for f in cli_fields(cls):
        assert f.metadata["help"].strip() and flags[flag_name(f)].help == f.metadata["help"], f.name
    assert "%(fallback)s" not in _command(path).format_help()


def test_fields_left_off_the_command_line_are_the_callers_own():
    off = [f.name for f in dataclasses.fields(CaptionerTrainConfig) if f not in cli_fields(CaptionerTrainConfig)]
    assert off == ["min_lr", "grad_clip_norm", "scst_top_p", "log_every", "progress"]
    assert cli_fields(TrainConfig) == list(dataclasses.fields(TrainConfig))
    assert cli_fields(ReinforceConfig) == list(dataclasses.fields(ReinforceConfig))


@pytest.fixture
def captured(monkeypatch):
    """Run a command with its library function replaced: returns the config object it was given."""
    seen = []

    def capture(result):
        return lambda cfg, *args, **kwargs: seen.append(cfg) or result

    import edgevl.reinforce.generate
    import edgevl.train.captioner
    import edgevl.train.launch

    monkeypatch.setattr(edgevl.train.launch, "train", capture({}))
    monkeypatch.setattr(edgevl.train.captioner, "train_captioner", capture({"steps": 0, "val": None}))
    monkeypatch.setattr(edgevl.reinforce.generate, "reinforce",
                        capture({"totals": {"samples": 1, "skipped": 0, "input": 1}, "shards": ["0.tar"]}))

    def run(argv):
        assert main(argv) == 0
        return seen.pop()

    return run


def test_train_flags_build_the_train_config(captured):
    assert captured(["train", "--train-data", "csv:x.csv"]) == TrainConfig(train_data="csv:x.csv")
    cfg = captured(["train", "--train-data", "csv:x.csv", "--batch-size", "7", "--no-channels-last", "--lock-image",
                    "--teachers", "a:w1, b:w2", "--distill-logit-scale", "50", "60", "--grad-clip-norm", "0",
                    "--mode", "online-distill", "--ema", "0.99", "--strict"])
    assert cfg == TrainConfig(train_data="csv:x.csv", batch_size=7, channels_last=False, lock_image=True,
                              teachers=["a:w1", "b:w2"], distill_logit_scale=[50.0, 60.0], grad_clip_norm=None,
                              mode="online-distill", ema=0.99, strict=True)
    assert captured(["train", "--train-data", "x", "--model", "MobileCLIP-S0"]).model == "MobileCLIP-S0"


def test_train_captioner_flags_build_the_captioner_config(captured):
    assert captured(["train-captioner", "--train-data", "x", "--out", "o"]) == CaptionerTrainConfig(
        train_data="x", out="o")
    cfg = captured(["train-captioner", "--train-data", "x", "--out", "o", "--backbone", "run", "--no-concepts",
                    "--heads", "2", "--scst-lr", "1e-4", "--threads", "1"])
    assert cfg == CaptionerTrainConfig(train_data="x", out="o", backbone="run", no_concepts=True, heads=2,
                                       scst_lr=1e-4)


def test_reinforce_flags_build_the_reinforce_config(captured):
    base = ["reinforce", "run", "--data", "wds:d.tar", "--out", "o", "--teachers", "t1:w,t2:w"]
    assert captured(base) == ReinforceConfig(data="wds:d.tar", out="o", teachers=("t1:w", "t2:w"))
    cfg = captured([*base, "--logit-scales", "100,50", "--format", "pth.gz", "--no-images", "--no-progress",
                    "--dtype", "bf16", "--num-augs", "3"])
    assert cfg == ReinforceConfig(data="wds:d.tar", out="o", teachers=("t1:w", "t2:w"), logit_scales=(100.0, 50.0),
                                  fmt="pth.gz", images=False, progress=False, dtype="bf16", num_augs=3)


def test_a_bad_flag_text_is_a_one_line_config_error(captured, capsys):
    argv = ["reinforce", "run", "--data", "d", "--out", "o", "--teachers", "t", "--logit-scales", "1,x"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == "edgevl: error: --logit-scales must be comma-separated numbers, got '1,x'"


@dataclasses.dataclass
class _Options:
    name: str = dataclasses.field(metadata={"help": "a name"})
    count: int = dataclasses.field(default=2, metadata={"help": "how many", "choices": (1, 2, 3)})
    scale: float | None = dataclasses.field(default=None, metadata={"help": "a scale"})
    sizes: tuple[int, ...] = dataclasses.field(default=(1, 2), metadata={"help": "sizes"})
    fast: bool = dataclasses.field(default=False, metadata={"help": "go fast"})
    color: bool = dataclasses.field(default=True, metadata={"help": "no colours"})
    shine: bool = dataclasses.field(default=True, metadata={"help": "shine", "negatable": True})
    kind: str = dataclasses.field(default="a", metadata={"help": "kind", "flag": "--type"})
    hidden: object = dataclasses.field(default=None, metadata={"cli": False})


def test_flag_kinds_follow_the_annotations():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, _Options)
    parse = lambda *argv: config_from_args(_Options, parser.parse_args(argv))  # noqa: E731
    assert parse("--name", "n") == _Options(name="n")
    assert parse("--name", "n", "--count", "3", "--scale", "0.5", "--sizes", "4", "5", "--fast", "--no-color",
                 "--no-shine", "--type", "b") == _Options("n", 3, 0.5, (4, 5), True, False, False, "b")
    assert parse("--name", "n", "--shine").shine is True
    assert parse("--name", "n", "--sizes", "7").sizes == (7,)  # the annotated container
    for argv in (["--name", "n", "--count", "4"], ["--name", "n", "--count", "x"], ["--name", "n", "--hidden", "1"],
                 ["--name", "n", "--color"], []):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)


def test_unsupported_annotation_is_refused():
    @dataclasses.dataclass
    class Bad:
        where: dict = dataclasses.field(default=None, metadata={"help": "a mapping"})

    with pytest.raises(TypeError, match="no command-line flag type"):
        add_config_flags(argparse.ArgumentParser(), Bad)


@pytest.mark.parametrize("argv", [["--help"], ["reinforce", "--help"], ["info", "--help"]])
def test_help_without_generated_flags_does_not_import_torch(argv):
    code = (f"import sys, contextlib, io\nfrom edgevl.cli import main\nwith contextlib.redirect_stdout(io.StringIO()), "
            f"contextlib.suppress(SystemExit):\n    main({argv!r})\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
