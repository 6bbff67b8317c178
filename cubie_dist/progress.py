"""A progress bar for long sweeps: tqdm when importable, else a text bar.

Either way the bar stays hidden for the first :data:`DELAY_SECONDS`, so
short sweeps print nothing. The text bar writes to stderr, redrawing one
line at most every :data:`REFRESH_SECONDS`.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: Seconds before a bar first appears.
DELAY_SECONDS = 1.0
#: Seconds between redraws of the text bar.
REFRESH_SECONDS = 0.2
_WIDTH = 30


class TextProgress:
    """``[#####.....]  45%  4,500/10,000 runs  12/40 chunks  3.2 s  1,406 runs/s  ETA 3.9 s``.

    One line, redrawn in place. The rate counts runs finished since the first
    chunk of this call landed (so neither compiling nor a resumed store's runs
    count), and the ETA assumes it holds.

    Parameters
    ----------
    total_runs, total_chunks
        What 100 % means.
    initial_runs, initial_chunks
        Already done when the bar starts (a resumed store's chunks).
    stream
        Where to draw (stderr by default).
    delay, refresh
        Seconds before the first draw and between redraws.
    """

    def __init__(
        self,
        total_runs: int,
        total_chunks: int,
        initial_runs: int = 0,
        initial_chunks: int = 0,
        stream: TextIO | None = None,
        delay: float = DELAY_SECONDS,
        refresh: float = REFRESH_SECONDS,
    ) -> None:
        self.total_runs = total_runs
        self.total_chunks = total_chunks
        self.stream = stream if stream is not None else sys.stderr
        self.delay = delay
        self.refresh = refresh
        self.runs = initial_runs
        self.chunks = initial_chunks
        self._first: tuple[float, int] | None = None  # (time, runs) at the first chunk
        self._start = time.perf_counter()
        self._drawn_at: float | None = None
        self._width = 0
        self._drawn_chunks = 0

    def line(self) -> str:
        """The bar's current text: progress, rate and time left once chunks land."""
        fraction = self.runs / self.total_runs if self.total_runs else 1.0
        filled = int(fraction * _WIDTH)
        elapsed = time.perf_counter() - self._start
        text = (
            f"[{'#' * filled}{'.' * (_WIDTH - filled)}] {fraction:4.0%}  "
            f"{self.runs:,}/{self.total_runs:,} runs  "
            f"{self.chunks}/{self.total_chunks} chunks  {elapsed:.1f} s"
        )
        if self._first is None:
            if self.runs < self.total_runs:
                text += "  (first chunks: workers compile the kernel once)"
            return text
        first_at, first_runs = self._first  # the rate leaves compiling out
        since = time.perf_counter() - first_at
        if self.runs > first_runs and since > 0:
            rate = (self.runs - first_runs) / since
            text += f"  {rate:,.0f} runs/s"
            if self.runs < self.total_runs:
                text += f"  ETA {(self.total_runs - self.runs) / rate:.1f} s"
        return text

    def update(self, runs: int) -> None:
        """Count one finished chunk of ``runs`` runs; redraw when due."""
        now = time.perf_counter()
        if self._first is None:
            self._first = (now, self.runs + runs)
        self.runs += runs
        self.chunks += 1
        if now - self._start < self.delay:
            return
        if self._drawn_at is None or now - self._drawn_at >= self.refresh or (
            self.chunks == self.total_chunks
        ):
            self._draw(now)

    def _draw(self, now: float) -> None:
        line = self.line()
        self.stream.write("\r" + line.ljust(self._width))  # blank a longer last line
        self._width = len(line)
        self.stream.flush()
        self._drawn_at = now
        self._drawn_chunks = self.chunks

    def close(self) -> None:
        """Draw the final state and end the line, if the bar was ever shown."""
        if self._drawn_at is None:
            return
        if self._drawn_chunks != self.chunks:
            self._draw(time.perf_counter())
        self.stream.write("\n")
        self.stream.flush()


class _TqdmProgress:
    def __init__(self, total_runs: int, total_chunks: int, initial_runs: int = 0,
                 initial_chunks: int = 0) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=total_runs, initial=initial_runs, unit="runs", delay=DELAY_SECONDS,
            unit_scale=True,
        )

    def update(self, runs: int) -> None:
        self._bar.update(runs)

    def close(self) -> None:
        self._bar.close()


class _NoProgress:
    def update(self, runs: int) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(
    enabled: bool, total_runs: int, total_chunks: int, initial_runs: int = 0,
    initial_chunks: int = 0,
):
    """A bar with ``update(runs)`` and ``close()``; a silent one if not ``enabled``.

    ``initial_runs``/``initial_chunks`` are already done (resumed) and shown as such.
    """
    if not enabled:
        return _NoProgress()
    try:
        import tqdm  # noqa: F401  (optional)
    except ImportError:
        return TextProgress(total_runs, total_chunks, initial_runs, initial_chunks)
    return _TqdmProgress(total_runs, total_chunks, initial_runs, initial_chunks)
