"""What every helper needs: telling async functions from blocking ones, calling one
item into a :class:`Result`, and refusing a blocking call inside a running trio loop."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any

import trio

from ._result import Result

__all__ = ["blocking_entry", "call_async", "is_async", "timed_call", "timeout_error"]


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns a coroutine (``async def``, also behind
    ``functools.partial`` or as an object's ``async def __call__``)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object's async __call__
    )


def check_callable(fn: Any, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"{name}() takes a function first, not {fn!r}")


def timeout_error(seconds: float) -> TimeoutError:
    return TimeoutError(f"timed out after {seconds:g} s")


def timed_call(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None) -> Any:
    """``fn(*args)`` in a thread, raising a ``TimeoutError`` instead of its outcome if it
    took longer than ``timeout`` seconds (a thread cannot be stopped at the deadline)."""
    started = time.perf_counter()
    try:
        return fn(*args)
    finally:
        if timeout is not None and time.perf_counter() - started > timeout:
            raise timeout_error(timeout)


async def call_async(
    fn: Callable[..., Any], args: tuple[Any, ...], limit: float | None
) -> Result[Any]:
    """``await fn(*args)`` as a :class:`Result`; cancelled (and a ``TimeoutError``
    result) after ``limit`` seconds."""
    try:
        if limit is None:
            return Result(await fn(*args))
        with trio.move_on_after(limit):
            return Result(await fn(*args))
        return Result(error=timeout_error(limit))
    except Exception as exc:
        return Result(error=exc)


def blocking_entry(name: str, alternative: str) -> None:
    """Refuse to start ``trio.run`` for a blocking helper inside a running trio loop."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{name}() blocks, so it cannot run inside trio (it would stop every other "
        f"task): use {alternative} there"
    )
