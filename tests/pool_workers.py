"""Worker functions for ``test_pool.py``, run inside ``pipekit worker`` child processes
(targets are given as ``path/to/pool_workers.py:function``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

POISON = 4321
CRASH = 13
CRASH_LATE = 15_000
STOP = 7
HANG = "hang"
INIT_LOG_ENV = "POOL_TEST_INIT_LOG"
RUN_LOG_ENV = "POOL_TEST_RUN_LOG"
SLOW_SECONDS = 0.06

_init_calls = 0


def square(x: int) -> int:
    return x * x


def size(x: Any) -> int:
    """The length of a bytes or str item; any other item itself."""
    return len(x) if isinstance(x, (bytes, str)) else int(x)


def unencodable_for_two(x: int) -> Any:
    """A result no codec can encode for 2; ``x`` itself otherwise."""
    return object() if x == 2 else x


def poisoned(x: int) -> int:
    """Raises for :data:`POISON`: a per-item failure, the worker goes on."""
    if x == POISON:
        raise ValueError(f"poisoned item {x}")
    return x * x


def crash(x: int) -> int:
    """Kills its own process for :data:`CRASH` (no cleanup, exit code 1)."""
    if x == CRASH:
        os._exit(1)
    return x * x


def crash_late_logged(x: int) -> int:
    """Appends ``x`` to ``$POOL_TEST_RUN_LOG`` (one line per call, written at once), then
    kills its own process for :data:`CRASH_LATE`."""
    fd = os.open(os.environ[RUN_LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, b"%d\n" % x)
    finally:
        os.close(fd)
    if x == CRASH_LATE:
        os._exit(1)
    return x * x


def stop_iteration(x: int) -> int:
    """Raises StopIteration for :data:`STOP` (which ``map`` in C would swallow)."""
    if x == STOP:
        raise StopIteration
    return x * x


def slow(x: int) -> int:
    """Takes :data:`SLOW_SECONDS`: an item costly enough to travel alone."""
    time.sleep(SLOW_SECONDS)
    return x


def hang(x: Any) -> Any:
    """Never returns for :data:`HANG` (what a per-item timeout is for)."""
    if x == HANG:
        while True:
            time.sleep(1)
    return x


def record_init() -> None:
    """INIT: count the call and append this pid to ``$POOL_TEST_INIT_LOG/<pid>``."""
    global _init_calls
    _init_calls += 1
    log = Path(os.environ[INIT_LOG_ENV]) / str(os.getpid())
    with log.open("a") as f:
        f.write("init\n")


def whoami(x: int) -> list[int]:
    """``[pid, init calls in this process, x]``."""
    return [os.getpid(), _init_calls, x]


def failing_init() -> None:
    raise RuntimeError("cannot load the model")


def wait_for_file_or_pid(x: Any) -> int:
    """A string item blocks until that path exists; every item returns the pid."""
    if isinstance(x, str):
        deadline = time.monotonic() + 30
        while not os.path.exists(x):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{x} never appeared")
            time.sleep(0.002)
    return os.getpid()


CRASH_EVERY = 100


def crash_every(x: int) -> int:
    """Kills its own process for every item ``x % CRASH_EVERY == CRASH_EVERY // 2``."""
    if x % CRASH_EVERY == CRASH_EVERY // 2:
        os._exit(1)
    return x * x


def noop() -> None:
    """An ``init`` that does nothing (passed as a function object)."""


def pipeline_floor_loaded(x: Any) -> bool:
    """Whether this worker process has imported the pipeline floor."""
    import sys

    return "pipekit.pipeline" in sys.modules


def uses_pipekit(x: int) -> list[Any]:
    """Worker code that uses ``import pipekit as pk`` (its names load on first use)."""
    import pipekit as pk

    return [
        (pk.source([x]) | pk.map(lambda v: v + 1)).run()[0],
        callable(pk.WorkerPool),
        isinstance(pk.__version__, str),
    ]
