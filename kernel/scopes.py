"""Nursery helpers shared by the kernel and the adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["open_plain_nursery", "sole_error", "unwrap_group"]


def sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception (other than :class:`trio.Cancelled`) directly in ``group``, or
    None if there are several or none."""
    real = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
    return real[0] if len(real) == 1 else None


def unwrap_group(
    group: BaseExceptionGroup[BaseException], keep: BaseException | None = None
) -> BaseException:
    """The exception ``group`` stands for: descend while a group holds one exception
    other than :class:`trio.Cancelled` (a cancellation from outside that arrives beside
    a real error is dropped: the error says more, and the cancelled scope still stops
    the caller at its next checkpoint), or nothing but cancellations (they stand for
    one). ``keep`` (a group raised as such, e.g. by user code) is never descended into.
    Returns ``group`` itself when it holds several errors."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup) and inner is not keep:
        real = sole_error(inner)
        if real is not None:
            inner = real
        elif all(isinstance(e, trio.Cancelled) for e in inner.exceptions):
            inner = inner.exceptions[0]
        else:
            break
    return inner


@asynccontextmanager
async def open_plain_nursery() -> AsyncIterator[trio.Nursery]:
    """A trio nursery whose failure surfaces as the exception that caused it.

    trio wraps every exception leaving a nursery in an :class:`ExceptionGroup`; for a
    resource whose callers expect one typed error (``ProcessError``, ``ProtocolError``,
    ...) that group is noise. When exactly one exception (besides cancellations) ends
    the nursery, it is re-raised as itself, with its own cause and traceback; otherwise
    the group propagates unchanged.
    """
    error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        error = sole_error(group)
        if error is None:
            raise
    if error is not None:
        raise error
