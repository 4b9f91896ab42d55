"""Module-level functions for the process backend tests of ``test_concurrency.py``: a
worker process imports them by name."""

from __future__ import annotations

import os
import time
from pathlib import Path


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def busy(spin: float) -> list[float]:
    """Burn CPU for ``spin`` seconds; return ``[pid, start, end]`` (wall clock)."""
    start = time.time()
    while time.time() - start < spin:
        sum(range(1000))
    return [os.getpid(), start, time.time()]


def pid_then_sleep(arg: list[str | float]) -> int:
    """Write this worker's pid into the file ``arg[0]``, then sleep ``arg[1]`` seconds."""
    Path(str(arg[0])).write_text(str(os.getpid()))
    time.sleep(float(arg[1]))
    return os.getpid()


def pid(_: object) -> int:
    """This worker's pid."""
    return os.getpid()


def pid_or_crash(x: int) -> int:
    """This worker's pid; the worker process dies (``os._exit``) on a negative item."""
    if x < 0:
        os._exit(3)
    return os.getpid()


def pid_after(seconds: float) -> int:
    """This worker's pid, after sleeping ``seconds``."""
    time.sleep(seconds)
    return os.getpid()
