"""The thread backend of ``parallel_map``: ``n`` threads that each take the next item
themselves (one lock per item, no hand-off per item), so slow items spread over every
thread and cheap items cost about a microsecond of bookkeeping."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import trio

from ..kernel.scopes import open_plain_nursery
from ._calls import timeout_error
from ._result import Result

__all__ = ["map_threads"]


async def map_threads(
    fn: Callable[[Any], Any],
    items: Iterator[tuple[int, Any]],
    workers: int,
    limit: float | None,
    fail_fast: bool,
    out: dict[int, Result[Any]],
) -> None:
    """Run ``fn`` over ``items`` (``(index, item)`` pairs) in ``workers`` threads,
    storing each :class:`Result` in ``out[index]``.

    A thread cannot be stopped: an item that overruns ``limit`` seconds still runs to its end,
    and its result is then a ``TimeoutError``. With ``fail_fast`` the first failure
    stops every thread before its next item and is raised. Cancellation (of the caller)
    does the same: each thread checks it between items."""
    lock = threading.Lock()
    failures: list[BaseException] = []
    stop = threading.Event()
    clock = time.perf_counter

    def run() -> None:
        while not stop.is_set():
            with lock:
                try:
                    index, item = next(items)
                except StopIteration:
                    return
                except BaseException:
                    stop.set()
                    raise
            started = clock()
            try:
                result: Result[Any] = Result(fn(item))
            except Exception as exc:
                result = Result(error=exc)
            if limit is not None and clock() - started > limit:
                result = Result(error=timeout_error(limit))
            out[index] = result
            if fail_fast and result.error is not None:
                with lock:
                    failures.append(result.error)
                stop.set()
                return
            trio.from_thread.check_cancelled()

    start = functools.partial(trio.to_thread.run_sync, run, limiter=trio.CapacityLimiter(workers))
    try:
        async with open_plain_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(start)
    except BaseException:
        stop.set()
        raise
    if failures:
        raise failures[0]
