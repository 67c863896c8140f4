"""Progress display: tqdm bars in a terminal or JupyterLab (widgets that update in place), plain lines
under ``run_all`` (which sets ``MLC_PROGRESS=lines``): an executed notebook then carries one line per
epoch instead of hundreds of bar redraws, and ``run_all`` streams those lines to the terminal."""
from __future__ import annotations

import os
import time

from tqdm.auto import tqdm

PROGRESS_ENV = "MLC_PROGRESS"


def lines_mode() -> bool:
    """Whether progress is shown as plain lines (no bars)."""
    return os.environ.get(PROGRESS_ENV) == "lines"


def bar(iterable=None, **kwargs):
    """``tqdm.auto.tqdm``, disabled in lines mode."""
    if lines_mode():
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)


def duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class StepTicker:
    """In lines mode, one line every ``every`` seconds inside a long loop: step, rate and ETA."""

    def __init__(self, label: str, total: int, every: float = 30.0, emit=print):
        self.label, self.total, self.every, self.emit = label, total, every, emit
        self.t0 = self.last = time.time()

    def __call__(self, step: int) -> None:
        """Emit a line for ``step`` if ``every`` seconds have passed (lines mode only)."""
        now = time.time()
        if not lines_mode() or now - self.last < self.every or step + 1 >= self.total:
            return
        self.last = now
        rate = (step + 1) / max(now - self.t0, 1e-9)
        eta = duration((self.total - step - 1) / rate)
        self.emit(f"{self.label} step {step + 1}/{self.total} ({rate:.1f} it/s, ETA {eta})")
