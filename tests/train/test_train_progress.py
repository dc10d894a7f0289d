"""`Trainer.fit` reports progress on a redirected stderr: timed lines (step, loss, samples/s, ETA) and a summary."""

from __future__ import annotations

import re

from train_helpers import ToyPairs, tiny_clip

from edgevl.train.trainer import Trainer

LINE = re.compile(r"^train: step (\d)/(\d) \(\d+%\), loss [\d.]+, lr [\d.e-]+, [\d.]+ samples/s(, ETA \d+s)?$")


def test_fit_prints_a_line_per_interval_and_a_summary(make_config, monkeypatch, capsys):
    monkeypatch.setenv("EDGEVL_PROGRESS_SECONDS", "0")  # a line after every step
    Trainer(make_config(steps=3), tiny_clip(), ToyPairs(40)).fit()
    *lines, summary = capsys.readouterr().err.splitlines()
    assert [LINE.match(line).group(1, 2) for line in lines] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert "ETA" in lines[0] and "ETA" not in lines[-1]
    assert re.match(r"^train: finished step 3/3 in \d+s \(3 steps this run\), [\d.]+ samples/s, loss [\d.]+, lr ",
                    summary)

    Trainer(make_config(steps=5, resume="latest"), tiny_clip(), ToyPairs(40)).fit()
    *lines, summary = capsys.readouterr().err.splitlines()
    assert [LINE.match(line).group(1) for line in lines] == ["4", "5"]
    assert summary.startswith("train: finished step 5/5 in ") and "(2 steps this run)" in summary


def test_fit_is_quiet_between_intervals(make_config, monkeypatch, capsys):
    monkeypatch.setenv("EDGEVL_PROGRESS_SECONDS", "3600")
    Trainer(make_config(steps=3), tiny_clip(), ToyPairs(40)).fit()
    assert [line.split(" in ")[0] for line in capsys.readouterr().err.splitlines()] == ["train: finished step 3/3"]
