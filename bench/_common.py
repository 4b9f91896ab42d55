"""What the benchmark scripts share."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import statistics
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from multiprocessing.process import BaseProcess


def interrupted(exc: BaseException) -> bool:
    """Ctrl-C, possibly wrapped in the exception group of a trio nursery."""
    if isinstance(exc, BaseExceptionGroup):
        return any(interrupted(e) for e in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


def run_main(main: Callable[[], int]) -> None:
    """Run a benchmark's ``main`` and exit with its code; Ctrl-C exits with 130."""
    try:
        code = main()
    except BaseException as exc:
        if not interrupted(exc):
            raise
        print("\ninterrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


def die_with_parent(parent: int) -> None:
    """In a child (Linux): have the kernel SIGKILL it if the parent dies, however."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


@contextlib.contextmanager
def reaped(proc: BaseProcess) -> Iterator[BaseProcess]:
    """Make sure a started ``proc`` is gone on exit: on a normal exit it must finish by
    itself (within 30 s) with exit code 0; on an error or Ctrl-C it is terminated,
    then killed, and always joined."""
    clean = hung = False
    try:
        yield proc
        clean = True
    finally:
        if proc.pid is not None:
            proc.join(30 if clean else 0)
            if proc.is_alive():
                hung = clean
                proc.terminate()
                proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join()
    if hung:
        raise RuntimeError("benchmark child process did not exit within 30 s; it was killed")
    if proc.exitcode != 0:
        raise RuntimeError(f"benchmark child process failed with exit code {proc.exitcode}")


# --- tables ----------------------------------------------------------------------------


def paired_ratio(rounds: Sequence[float], base: Sequence[float]) -> tuple[float, float, float]:
    """Median, lowest and highest of ``rounds[i] / base[i]``: each run against the
    baseline measured in that same run, which cancels the slow and fast phases of a
    noisy machine that a ratio of two medians would compare across runs."""
    paired = [mine / theirs for mine, theirs in zip(rounds, base, strict=True)]
    return statistics.median(paired), min(paired), max(paired)


def ratio_cell(ratio: tuple[float, float, float], runs: int, *, percent: bool) -> str:
    """A ratio as printed (``1.23x`` or ``95%``), with its per-run range if runs > 1."""
    value, low, high = ratio
    if percent:
        text, extra = f"{value:.0%}", f" ({low:.0%}-{high:.0%})"
    else:
        text, extra = f"{value:.2f}x", f" ({low:.2f}-{high:.2f})"
    return text + extra if runs > 1 else text


def spread_cell(rounds: Sequence[float]) -> str:
    """Half the range of the runs, in percent of their median."""
    return f"±{(max(rounds) - min(rounds)) / 2 / statistics.median(rounds) * 100:.0f}%"


class Verdicts:
    """PASS/MISS of the rows that have a target, and their tally."""

    def __init__(self) -> None:
        self.passed = 0
        self.missed = 0

    def judge(self, ok: bool | None, note: str = "") -> str:
        """The result cell: PASS or MISS (counted), or ``note`` for a row without target."""
        if ok is None:
            return note or "-"
        self.passed += ok
        self.missed += not ok
        return "PASS" if ok else "MISS"


def render_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[int]
) -> list[str]:
    """Aligned text columns: a header, a rule and the rows; columns in ``right`` are
    right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
