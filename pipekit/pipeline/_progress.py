"""The progress display of ``run(progress=True)`` and the ``pipekit`` command.

On a terminal it is a live table (drawn with `rich <https://rich.readthedocs.io>`_) that
fits the terminal's width, one row per stage: messages in and out, the current rate, the
share of its time each stage was busy, starved and blocked, its state, and the
bottleneck marked; above it the elapsed time, the rate, and, when the source has a
length, how far it is and an ETA. Off a terminal (a log file, a pipe, CI) it writes a
plain line every ``every`` seconds, and one at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from ..kernel import ModuleStats

__all__ = ["ProgressDisplay", "compact", "duration"]


def compact(n: float) -> str:
    """A count or rate in at most 6 characters: ``999``, ``12.3k``, ``4.56M``."""
    if n < 1000:
        return f"{n:.0f}"
    for unit, size in (("k", 1e3), ("M", 1e6), ("G", 1e9)):
        if n < size * 1000 or unit == "G":
            value = n / size
            return f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f}{unit}"
    raise AssertionError  # pragma: no cover


def duration(seconds: float) -> str:
    """``4.2 s``, ``1 min 05 s``, ``2 h 03 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _share(part: float, whole: float | None) -> str:
    if not whole or whole <= 0:
        return "-"
    return f"{min(100.0, 100.0 * part / whole):.0f}%"


class ProgressDisplay:
    """A live view of a running pipeline: ``pipeline.run(progress=True)`` makes one
    that writes to ``sys.stderr``; pass your own to choose where and how.

    ``file``: where to write (default ``sys.stderr``). ``live``: a live table (default:
    if ``file`` is a terminal) or plain log lines, one every ``every`` seconds and one
    at the end. ``width``: the table's width (default: the terminal's). ``transient``:
    clear the live table at the end instead of leaving its last state (and write no
    closing log line): for a program that prints the statistics itself then.
    ``total``: how many items the source will emit, for the ETA (default: its
    ``len()``, when it has one: a list, a range).

    Example::

        p = pk.source(range(10**6)) | pk.map(parse) | pk.collect()
        p.run(progress=True)                       # live on a terminal, log lines in CI
        p.run(progress=pk.ProgressDisplay(every=60))   # a log line a minute
    """

    def __init__(
        self,
        file: IO[str] | None = None,
        *,
        live: bool | None = None,
        width: int | None = None,
        every: float = 10.0,
        transient: bool = False,
        total: int | None = None,
    ) -> None:
        self.file = file
        self.total = total
        self.live = live
        self.width = width
        self.every = every
        self.transient = transient
        self._total: int | None = None
        self._started = 0.0
        self._last_line = 0.0
        self._previous: dict[str, tuple[float, int]] = {}
        self._rates: dict[str, float] = {}
        self._console: Any = None
        self._live: Any = None

    # -- what the pipeline calls ------------------------------------------------------

    def start(self, total: int | None = None) -> None:
        """The run starts; ``total`` is the source's length, if it has one."""
        self._total = self.total if self.total is not None else total
        self._started = self._last_line = time.monotonic()
        self._previous.clear()
        self._rates.clear()
        stream = self.file if self.file is not None else sys.stderr
        live = self.live
        if live is None:
            live = bool(getattr(stream, "isatty", lambda: False)())
        self.live = live
        if not live:
            return
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=stream, force_terminal=True, width=self.width)
        out_is_terminal = bool(getattr(sys.stdout, "isatty", lambda: False)())
        self._live = Live(
            console=self._console,
            auto_refresh=False,  # drawn from the run's own updates: no thread of its own
            transient=self.transient,
            redirect_stdout=out_is_terminal,  # prints go above the table, not through it
            redirect_stderr=stream is sys.stderr,
        )
        self._live.start()

    def update(self, stats: Mapping[str, ModuleStats]) -> None:
        """New statistics (called every ``interval`` seconds of the run)."""
        now = time.monotonic()
        self._note_rates(stats, now)
        if self._live is not None:
            self._live.update(self.render(stats), refresh=True)
        elif now - self._last_line >= self.every:
            self._last_line = now
            self._write_line(stats, now)

    __call__ = update

    def stop(self, stats: Mapping[str, ModuleStats], error: BaseException | None = None) -> None:
        """The run is over (``error``: how it failed)."""
        now = time.monotonic()
        self._note_rates(stats, now)
        if self._live is not None:
            self._live.update(self.render(stats, final=True), refresh=True)
            self._live.stop()
            self._live = None
        elif not self.transient:
            self._write_line(stats, now, final=True, error=error)

    # -- what it shows ----------------------------------------------------------------

    def _note_rates(self, stats: Mapping[str, ModuleStats], now: float) -> None:
        for name, st in stats.items():
            count = st.messages_out or st.messages_in
            before = self._previous.get(name)
            if before is not None and now > before[0]:
                self._rates[name] = (count - before[1]) / (now - before[0])
            self._previous[name] = (now, count)

    def _source_done(self, stats: Mapping[str, ModuleStats]) -> int:
        first = next(iter(stats.values()), None)
        return first.messages_out if first is not None else 0

    def summary(self, stats: Mapping[str, ModuleStats], *, final: bool = False) -> str:
        """The headline: elapsed time, messages from the source, rate, progress, ETA and
        the bottleneck."""
        elapsed = time.monotonic() - self._started if self._started else 0.0
        done = self._source_done(stats)
        parts = [duration(elapsed)]
        if self._total:
            parts.append(f"{100 * done / self._total:.0f}% ({done:,}/{self._total:,})")
        else:
            parts.append(f"{done:,} in")
        if elapsed > 0:
            parts.append(f"{compact(done / elapsed)}/s")
        if self._total and not final and 0 < done < self._total:
            parts.append(f"ETA {duration(elapsed * (self._total - done) / done)}")
        for name, st in stats.items():
            if st.bottleneck:
                parts.append(f"bottleneck {name} (busy {_share(st.busy_seconds, _el(st))})")
        return "  ".join(parts)

    def render(self, stats: Mapping[str, ModuleStats], *, final: bool = False) -> Any:
        """The live table (a rich renderable)."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        width = self._console.width if self._console is not None else self.width or 80
        columns = [("in", 6), ("out", 6), ("msg/s", 6), ("busy", 4), ("starv", 5)]
        columns += [("block", 5), ("state", 10)]
        # The numbers keep their width (compact() gives at most 6 characters) and the
        # stage names give way, cut with an ellipsis, so that a row is one line; on a
        # narrow terminal the least needed columns go first.
        for dropped in ("in", "state", "starv"):
            if width - sum(w + 2 for _, w in columns) >= 12:
                break
            columns = [c for c in columns if c[0] != dropped]
        room = max(8, width - sum(w + 2 for _, w in columns))
        table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False)
        table.add_column("stage", overflow="ellipsis", no_wrap=True, max_width=room)
        for title, w in columns:
            table.add_column(
                title,
                justify="left" if title == "state" else "right",
                no_wrap=True,
                min_width=w,
                max_width=w,
            )
        shown = [title for title, _ in columns]
        for name, st in stats.items():
            elapsed = _el(st)
            rate = self._rates.get(name)
            if rate is None or final:
                count = st.messages_out or st.messages_in
                rate = count / elapsed if elapsed else 0.0
            label = Text(("> " if st.bottleneck else "  ") + name)
            if st.bottleneck:
                label.stylize("bold red")
            cells = {
                "in": compact(st.messages_in),
                "out": compact(st.messages_out),
                "msg/s": compact(rate),
                "busy": _share(st.busy_seconds, elapsed),
                "starv": _share(st.starved_seconds, elapsed),
                "block": _share(st.paused_seconds, elapsed),
                "state": str(st.state),
            }
            table.add_row(label, *(cells[title] for title in shown))
        head = Text(self.summary(stats, final=final), no_wrap=True, overflow="ellipsis")
        if not self._total:
            return Group(head, table)
        from rich.progress_bar import ProgressBar

        # The headline and a bar of the source's progress share the first line.
        line = Table.grid(expand=True, padding=(0, 1))
        line.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        line.add_column(width=min(20, max(5, width // 5)), no_wrap=True)
        line.add_row(head, ProgressBar(total=self._total, completed=self._source_done(stats)))
        return Group(line, table)

    def _write_line(
        self,
        stats: Mapping[str, ModuleStats],
        now: float,
        *,
        final: bool = False,
        error: BaseException | None = None,
    ) -> None:
        stream = self.file if self.file is not None else sys.stderr
        stages = " > ".join(
            f"{name} {compact(st.messages_out or st.messages_in)}" for name, st in stats.items()
        )
        state = " done" if final and error is None else " failed" if final else ""
        stream.write(f"pipekit{state}: {self.summary(stats, final=final)}; {stages}\n")
        stream.flush()


def _el(st: ModuleStats) -> float | None:
    if st.started_at is None:
        return None
    try:
        return st.elapsed
    except RuntimeError:  # a live snapshot read outside trio
        return None
