"""Progress for long loops: a tqdm bar on a terminal, plain lines in a log.

When stderr is a terminal, :func:`progress` is a tqdm bar. When it is not (piped to a file,
``| tee``, a batch job), a bar's carriage returns would write thousands of fragments, so
instead one plain line is printed every ``SPECLM_PROGRESS_EVERY`` seconds (default 10):

    speclm: embed: 1,536/10,240 win (15%), 24.3 win/s, 1m03s elapsed, 5m58s left

and a last line when the loop ends (only if a line was printed before: short loops stay
quiet). ``show=False`` prints nothing; ``show=True`` forces a bar or lines (the form still
follows the stream).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TextIO

EVERY_ENV = "SPECLM_PROGRESS_EVERY"
DEFAULT_EVERY = 10.0


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def every_seconds() -> float:
    try:
        return max(float(os.environ.get(EVERY_ENV, DEFAULT_EVERY)), 0.0)
    except ValueError:
        return DEFAULT_EVERY


def _duration(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _count(x: float, scale: bool) -> str:
    if scale:
        from tqdm import tqdm

        return tqdm.format_sizeof(x)
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


class Lines:
    """The plain-line form: the part of tqdm's interface speclm uses (update, close, write,
    set_postfix_str, total, n, a context manager)."""

    def __init__(self, total: float | None = None, desc: str = "", unit: str = "it", initial: float = 0,
                 unit_scale: bool = False, every: float | None = None, file: TextIO | None = None):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.unit_scale = unit_scale
        self.every = every_seconds() if every is None else every
        self.file = file
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.n0 = initial
        self.printed = 0
        self.closed = False

    def _stream(self) -> TextIO:
        return self.file if self.file is not None else sys.stderr

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = now - self.start
        done = self.n - self.n0
        rate = done / elapsed if elapsed > 0 else 0.0
        what = f"{_count(self.n, self.unit_scale)}"
        if self.total:
            what += f"/{_count(self.total, self.unit_scale)} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            what += f" {self.unit}"
        parts = [what, f"{rate:.3g} {self.unit}/s", f"{_duration(elapsed)} elapsed"]
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"{_duration((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        return f"speclm: {self.desc + ': ' if self.desc else ''}{', '.join(parts)}"

    def _emit(self, text: str) -> None:
        f = self._stream()
        print(text, file=f, flush=True)

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.printed += 1
            self._emit(self.line(now))

    def refresh(self) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kw) -> None:
        items = {**(ordered_dict or {}), **kw}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def write(self, s: str) -> None:
        self._emit(s)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.printed:
            self._emit(self.line() + " (done)")

    def __enter__(self) -> "Lines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: float | None = None, desc: str = "", unit: str = "it", show: bool | None = None,
             file: TextIO | None = None, every: float | None = None, **tqdm_kw):
    """A tqdm bar (terminal), plain lines (not a terminal) or nothing (``show=False``)."""
    from tqdm import tqdm

    stream = sys.stderr if file is None else file
    if show is False:
        return tqdm(total=total, desc=desc, unit=unit, disable=True, file=stream, **tqdm_kw)
    if is_terminal(stream):
        return tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True, **tqdm_kw)
    return Lines(total, desc, unit, initial=tqdm_kw.get("initial", 0), unit_scale=bool(tqdm_kw.get("unit_scale")),
                 every=every, file=file)


def track(iterable: Iterable, total: float | None = None, **kw) -> Iterator:
    """Iterate ``iterable`` with :func:`progress` (one update per item)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with progress(total, **kw) as bar:
        for item in iterable:
            yield item
            bar.update(1)


def write(msg: str, file: TextIO | None = None) -> None:
    """Print a message without breaking a bar on a terminal (tqdm.write), plainly otherwise."""
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr if file is None else file)
