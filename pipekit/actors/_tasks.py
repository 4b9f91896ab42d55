"""The tasks behind processes: a local process's, a thread process's, and waiting for
room in a full mailbox."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import CoroutineType
from typing import Any

import trio

from ._context import set_current
from ._errors import Terminated
from ._proc import Proc

__all__ = ["process_main", "thread_main", "wait_for_room"]


async def wait_for_room(proc: Proc) -> None:
    task = trio.lowlevel.current_task()

    def wake() -> None:
        trio.lowlevel.reschedule(task)

    if proc.room_waiters is None:
        proc.room_waiters = []
    waiters = proc.room_waiters
    waiters.append(wake)

    def abort(_: Any) -> trio.lowlevel.Abort:
        if wake in waiters:
            waiters.remove(wake)
        return trio.lowlevel.Abort.SUCCEEDED

    await trio.lowlevel.wait_task_rescheduled(abort)


async def process_main(proc: Proc, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """The task of one process: run it, then report how it ended."""
    set_current(proc)
    result: Any = None
    error: BaseException | None = None
    scope = proc.scope
    if scope is None:
        scope = proc.scope = trio.CancelScope()
    try:
        try:
            with scope:
                try:
                    value = fn(*args)
                    if type(value) is CoroutineType or inspect.isawaitable(value):
                        value = await value
                    result = value
                except Exception as exc:
                    error = exc
        except BaseExceptionGroup as group:
            # A group holding this scope's own Cancelled beside real errors: the scope
            # took its Cancelled out; the errors are the process's.
            errors, rest = group.split(Exception)
            if rest is not None:
                raise
            assert errors is not None
            error = errors.exceptions[0] if len(errors.exceptions) == 1 else errors
    except BaseException:
        error = Terminated("node closed")
        raise
    finally:
        if scope.cancelled_caught:
            result = None
            error = proc.kill_reason or Terminated("cancel deadline passed")
        proc.node.exited(proc, result, error)


async def thread_main(
    proc: Proc, fn: Callable[..., Any], args: tuple[Any, ...], limiter: trio.CapacityLimiter
) -> None:
    """The task of a thread process: its function in a thread of its own. A kill makes
    its next process call raise (a thread cannot be stopped from outside); the task
    waits for the thread, as structured concurrency wants."""
    set_current(proc)
    result: Any = None
    error: BaseException | None = None
    try:
        try:
            result = await trio.to_thread.run_sync(fn, *args, limiter=limiter)
        except Exception as exc:
            error = exc
    except BaseException:
        error = Terminated("node closed")
        raise
    finally:
        if proc.kill_reason is not None:
            result, error = None, proc.kill_reason
        proc.node.exited(proc, result, error)
