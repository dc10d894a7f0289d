"""Progress of long loops (training, reinforcement) on stderr, readable both live and in a redirected log.

On a terminal it is a tqdm bar. When stderr is not a terminal (a log file, a batch job) it prints one plain line
every `EDGEVL_PROGRESS_SECONDS` seconds (default 30; 0: after every update):

    train: step 120/1000 (12%), loss 2.345, 85.3 samples/s, ETA 10m59s

and in both cases a summary line when the loop ends or stops:

    train: finished step 1000/1000 in 11m02s (1000 steps this run), 84.1 samples/s, loss 1.234
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

from edgevl.errors import ConfigError

T = TypeVar("T")
INTERVAL_ENV = "EDGEVL_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0


def progress_interval() -> float:
    """Seconds between plain progress lines: `$EDGEVL_PROGRESS_SECONDS`, else 30."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise ConfigError(f"{INTERVAL_ENV} must be a number of seconds >= 0, got {text!r}")
    return value


def format_duration(seconds: float) -> str:
    """45s, 3m05s, 2h04m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Counts finished units (steps, samples) of a loop towards `total` (None: unknown) and reports them on `stream`.

    `update(n, samples=..., loss=...)` after each unit; `close()` (or leaving a `with` block) prints the summary.
    Rates are in samples/s when updates report `samples`, else in units/s. Disabled (e.g. on non-zero ranks),
    it prints nothing.
    """

    def __init__(
        self,
        total: int | None,
        *,
        desc: str,
        initial: int = 0,
        unit: str = "step",
        interval: float | None = None,
        enabled: bool = True,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.done = self._first = initial
        self.samples = 0
        self.stats: dict[str, float] = {}
        self.stream = stream if stream is not None else sys.stderr
        self.interval = progress_interval() if interval is None else interval
        self.clock = clock
        self._start = self._line_time = clock()
        self._line_done, self._line_samples = initial, 0
        self._closed = False
        self._bar: Any = None
        if enabled and _is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rate(self, units: int, samples: int, seconds: float) -> str:
        per_second = (samples if self.samples else units) / seconds if seconds > 0 else 0.0
        return f"{per_second:.1f} {'samples' if self.samples else self.unit + 's'}/s"

    def _stats(self) -> list[str]:
        return [f"{key} {value:.4g}" for key, value in self.stats.items()]

    def update(self, n: int = 1, *, samples: int = 0, **stats: float) -> None:
        """Count `n` more finished units covering `samples` samples; `stats` (e.g. loss=) are shown as latest."""
        self.done += n
        self.samples += samples
        self.stats.update(stats)
        if not self.enabled:
            return
        now = self.clock()
        if self._bar is not None:
            rate = self._rate(self.done - self._first, self.samples, now - self._start)
            self._bar.set_postfix_str(", ".join([*self._stats(), rate]), refresh=False)
            self._bar.update(n)
        elif now - self._line_time >= self.interval:
            self._print(self._line(now))
            self._line_time, self._line_done, self._line_samples = now, self.done, self.samples

    def _count(self) -> str:
        return f"{self.unit} {self.done}/{self.total}" if self.total is not None else f"{self.done} {self.unit}s"

    def _line(self, now: float) -> str:
        pct = f" ({100 * self.done // self.total}%)" if self.total else ""
        recent = self._rate(self.done - self._line_done, self.samples - self._line_samples, now - self._line_time)
        session, elapsed = self.done - self._first, now - self._start
        eta = ""
        if session > 0 and self.total is not None and self.total > self.done:
            eta = f", ETA {format_duration((self.total - self.done) * elapsed / session)}"
        return ", ".join([f"{self.desc}: {self._count()}{pct}", *self._stats(), recent + eta])

    def summary(self) -> str:
        """'DESC: finished|stopped at UNIT k/N in T (m UNITs this run), R samples/s, loss L'."""
        elapsed = self.clock() - self._start
        state = "finished" if self.total is None or self.done >= self.total else "stopped at"
        session = self.done - self._first
        rate = self._rate(session, self.samples, elapsed)
        head = (f"{self.desc}: {state} {self._count()} in {format_duration(elapsed)} "
                f"({session} {self.unit}s this run)")
        return ", ".join([head, rate, *self._stats()])

    def close(self) -> None:
        """Close the bar and print the summary line (once)."""
        if self._closed or not self.enabled:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        self._print(self.summary())

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def track(items: Iterable[T], *, desc: str, unit: str = "item", total: int | None = None,
          enabled: bool = True) -> Iterator[T]:
    """Yield `items`, reporting each as one finished unit (a bar on a terminal, plain lines otherwise)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc=desc, unit=unit, enabled=enabled) as progress:
        for item in items:
            yield item
            progress.update()
