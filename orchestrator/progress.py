"""Progress with an ETA for runs (rounds) and sweeps (trial rounds): a live bar in a terminal, plain lines elsewhere.

The ETA is the mean time per unit measured so far in this session times the units left:
``eta = (total - done) * elapsed / (done - initial)``, where ``initial`` is what was already done when the
session started (a resumed run or sweep) and does not count towards the rate. Before the first unit of the
session there is no estimate. In a terminal, a tqdm bar is redrawn in place (message lines are printed
above it with ``tqdm.write``); in a non-terminal (a log file, CI), :meth:`Progress.update` prints a plain
status line when ``every`` seconds have passed since the last one, and always at the end.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def format_duration(seconds: float) -> str:
    """``1m05s``, ``2h03m``."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def eta_seconds(total: int, done: int, initial: int, elapsed: float) -> float | None:
    """Seconds left: ``(total - done) * elapsed / (done - initial)``; ``None`` before the first unit of the session."""
    if done <= initial or elapsed <= 0:
        return None
    return max(0, total - done) * elapsed / (done - initial)


def rate_text(done: int, initial: int, elapsed: float, unit: str) -> str:
    """``4.1 s/round`` (or ``3.2 rounds/s`` when faster than one a second); ``-`` before the first unit."""
    n = done - initial
    if n <= 0 or elapsed <= 0:
        return f"- s/{unit}"
    per = elapsed / n
    return f"{per:.1f} s/{unit}" if per >= 1 else f"{n / elapsed:.1f} {unit}s/s"


class Progress:
    """``done`` of ``total`` units with rate and ETA; live in a terminal, periodic plain lines otherwise.

    ``live``: ``None`` = whether ``stream`` is a terminal. ``every``: seconds between plain lines
    (0 = a line at every update). ``clock``: the time source (a test passes its own).
    """

    def __init__(self, total: int, initial: int = 0, unit: str = "round", desc: str = "", every: float = 30.0,
                 stream: TextIO | None = None, live: bool | None = None, log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.initial, self.done = int(total), int(initial), int(initial)
        self.unit, self.desc, self.every = unit, desc, float(every)
        self.stream = stream if stream is not None else sys.stdout
        self.log = log or (lambda line: print(line, file=self.stream, flush=True))
        self.clock = clock
        self.t0 = self.last_line = clock()
        self.live = _is_terminal(self.stream) if live is None else live
        self.bar: Any = None
        if self.live:
            from tqdm import tqdm

            # the terminal's width (80 when it reports none, as a pseudo-terminal may)
            self.bar = tqdm(total=self.total, initial=self.initial, desc=desc, file=self.stream, leave=True,
                            ncols=shutil.get_terminal_size().columns or 80,
                            bar_format="{desc} {bar} {n_fmt}/{total_fmt}{postfix}")

    def elapsed(self) -> float:
        """Seconds since the start of this session."""
        return self.clock() - self.t0

    def eta(self) -> float | None:
        """Seconds left (see the module docstring)."""
        return eta_seconds(self.total, self.done, self.initial, self.elapsed())

    def status(self, extra: str = "") -> str:
        """``3/20 rounds, 4.1 s/round, ETA 1m10s`` (+ ``extra``)."""
        eta = self.eta()
        rate = rate_text(self.done, self.initial, self.elapsed(), self.unit)
        text = f"{self.done}/{self.total} {self.unit}s, {rate}, ETA {format_duration(eta) if eta is not None else '-'}"
        return f"{text}{', ' + extra if extra else ''}"

    def line(self, extra: str = "") -> str:
        """The plain line: ``[progress 2m10s] 3/20 rounds, 4.1 s/round, ETA 1m10s``."""
        return f"[{self.desc or 'progress'} {format_duration(self.elapsed())}] {self.status(extra)}"

    def update(self, done: int, extra: str = "", total: int | None = None, plain: bool = True) -> None:
        """Set the units done (and the total, when it changed); redraw, or print a line when one is due.

        ``plain=False``: no plain line (the caller prints its own, e.g. one per round with :meth:`status`).
        """
        self.done = int(done)
        if total is not None:
            self.total = int(total)
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.n = self.done
            self.bar.set_postfix_str(self.status(extra)[len(f"{self.done}/{self.total} {self.unit}s, "):])
            return
        now = self.clock()
        if plain and (self.done >= self.total or now - self.last_line >= self.every):
            self.last_line = now
            self.log(self.line(extra))

    def write(self, message: str) -> None:
        """A message line (above the live bar in a terminal)."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            self.log(message)

    def close(self) -> None:
        """Leave the bar's last state on screen."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
