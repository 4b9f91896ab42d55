"""Nursery helpers shared by the kernel and the adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["open_plain_nursery", "sole_error"]


def sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception (other than :class:`trio.Cancelled`) directly in ``group``, or
    None if there are several or none."""
    real = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
    return real[0] if len(real) == 1 else None


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
