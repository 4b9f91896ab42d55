"""What the benchmark scripts share."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterator
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
