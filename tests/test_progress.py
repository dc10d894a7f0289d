"""Progress reporting: plain timed lines when stderr is redirected, a bar on a terminal, a summary in both."""

from __future__ import annotations

import io

import pytest

from edgevl.errors import ConfigError
from edgevl.progress import Progress, format_duration, progress_interval


class Clock:
    """A settable stand-in for time.monotonic."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(progress: Progress, clock: Clock, steps: int, seconds: float = 4.0) -> None:
    for i in range(steps):
        clock.now += seconds
        progress.update(samples=8, loss=2.0 - i / 10)


def test_redirected_output_gets_a_line_every_interval_and_a_summary():
    clock, out = Clock(), io.StringIO()
    progress = Progress(10, desc="train", interval=10, stream=out, clock=clock)
    _run(progress, clock, 10)
    progress.close()
    progress.close()  # once only
    assert out.getvalue().splitlines() == [
        "train: step 3/10 (30%), loss 1.8, 2.0 samples/s, ETA 28s",
        "train: step 6/10 (60%), loss 1.5, 2.0 samples/s, ETA 16s",
        "train: step 9/10 (90%), loss 1.2, 2.0 samples/s, ETA 4s",
        "train: finished step 10/10 in 40s (10 steps this run), 2.0 samples/s, loss 1.1",
    ]


def test_resumed_and_stopped_loops_say_so():
    clock, out = Clock(), io.StringIO()
    with Progress(100, desc="train", initial=40, interval=0, stream=out, clock=clock) as progress:
        clock.now += 1
        progress.update(samples=32, loss=0.5)
        clock.now += 3
        progress.update(samples=32, loss=0.25)
    first, second, summary = out.getvalue().splitlines()
    assert first == "train: step 41/100 (41%), loss 0.5, 32.0 samples/s, ETA 59s"
    assert second == "train: step 42/100 (42%), loss 0.25, 10.7 samples/s, ETA 1m56s"  # recent rate, mean ETA
    assert summary == "train: stopped at step 42/100 in 4s (2 steps this run), 16.0 samples/s, loss 0.25"


def test_units_without_samples_are_counted_in_their_own_rate():
    clock, out = Clock(), io.StringIO()
    progress = Progress(4, desc="reinforce", unit="sample", interval=0, stream=out, clock=clock)
    clock.now += 2
    progress.update(2)
    assert out.getvalue() == "reinforce: sample 2/4 (50%), 1.0 samples/s, ETA 2s\n"


def test_terminal_gets_a_bar_and_the_summary_but_no_plain_lines():
    clock, out = Clock(), Terminal()
    progress = Progress(5, desc="train", interval=0, stream=out, clock=clock)
    _run(progress, clock, 5)
    progress.close()
    text = out.getvalue()
    assert "\r" in text and "5/5" in text and "2.0 samples/s" in text  # tqdm's bar with the postfix
    assert "ETA" not in text
    assert text.splitlines()[-1] == "train: finished step 5/5 in 20s (5 steps this run), 2.0 samples/s, loss 1.6"


def test_disabled_progress_prints_nothing():
    clock, out = Clock(), io.StringIO()
    progress = Progress(3, desc="train", interval=0, stream=out, clock=clock, enabled=False)
    _run(progress, clock, 3)
    progress.close()
    assert out.getvalue() == ""


def test_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("EDGEVL_PROGRESS_SECONDS", raising=False)
    assert progress_interval() == 30.0
    monkeypatch.setenv("EDGEVL_PROGRESS_SECONDS", "2.5")
    assert progress_interval() == 2.5
    assert Progress(1, desc="x", stream=io.StringIO()).interval == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("EDGEVL_PROGRESS_SECONDS", bad)
        with pytest.raises(ConfigError, match=f"EDGEVL_PROGRESS_SECONDS must be a number of seconds >= 0, got '{bad}'"):
            progress_interval()


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (59.6, "1m00s"), (185, "3m05s"), (7440, "2h04m")])
def test_durations(seconds, text):
    assert format_duration(seconds) == text


def test_track_reports_each_item_and_a_summary(monkeypatch, capsys):
    from edgevl.progress import track

    monkeypatch.setenv("EDGEVL_PROGRESS_SECONDS", "0")
    assert list(track([10, 20, 30], desc="zero-shot", unit="batch")) == [10, 20, 30]
    err = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in err[:3]] == [f"zero-shot: batch {k}/3" for k in (1, 2, 3)]
    assert len(err) == 4 and err[-1].startswith("zero-shot: finished batch 3/3")
