"""``spawn``, ``spawn_link`` and ``timeout``: one call at a time, inside a scope."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, TypeVar

import trio

from ..channels import Channel
from ._calls import call_async, check_callable, is_async, timed_call
from ._defaults import check_timeout, current_defaults
from ._result import Result

__all__ = ["Scope", "scope", "spawn", "spawn_link", "timeout"]

T = TypeVar("T")

log = logging.getLogger("pipekit.concurrency")

_current: ContextVar[Scope | None] = ContextVar("pipekit_concurrency_scope", default=None)


class Scope:
    """Where :func:`spawn` and :func:`spawn_link` run their calls: a trio nursery whose
    block waits for every call started in it.

    A call started with ``spawn`` that fails does not disturb the others: its exception
    is logged at once (logger ``"pipekit.concurrency"``, with the traceback), kept in
    ``errors``, and raised when the block ends (alone as itself, several as an
    :class:`ExceptionGroup`). ``spawn_link`` failures go into their ``Result`` instead.
    An exception in the block itself, or ``cancel()``, cancels every call.

    Example::

        async with pipekit.concurrency.scope() as s:
            pk.spawn(log_visit, user)              # fire and forget
            reply = pk.spawn_link(fetch, url)      # a channel with one Result
            print((await reply.receive()).value)
        print(s.errors)                            # [] if every spawn succeeded
    """

    def __init__(self) -> None:
        self.errors: list[Exception] = []
        self._nursery: trio.Nursery | None = None
        self._manager: Any = None
        self._token: Any = None

    async def __aenter__(self) -> Scope:
        self._manager = trio.open_nursery()
        self._nursery = await self._manager.__aenter__()
        self._token = _current.set(self)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        _current.reset(self._token)
        try:
            handled: bool = await self._manager.__aexit__(kind, error, tb)
        except BaseExceptionGroup as group:
            inner = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
            if len(inner) == 1:
                raise inner[0] from None
            raise
        finally:
            self._nursery = None
        if self.errors and kind is None:
            if len(self.errors) == 1:
                raise self.errors[0]
            raise ExceptionGroup(f"{len(self.errors)} spawned calls failed", self.errors)
        return handled

    def cancel(self) -> None:
        """Cancel every call of the scope (and the rest of its block)."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _start(self, runner: Callable[[], Awaitable[None]]) -> None:
        if self._nursery is None:
            raise RuntimeError("this scope has ended: start calls inside its async with block")
        self._nursery.start_soon(runner)

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        """:func:`spawn` in this scope."""
        call = _caller(fn, args, "spawn")

        async def run() -> None:
            try:
                await call()
            except Exception as exc:
                log.error("spawned call %s failed: %r", _label(fn), exc, exc_info=exc)
                self.errors.append(exc)

        self._start(run)

    def spawn_link(
        self, fn: Callable[..., Any], *args: Any, timeout: float | str | None = None
    ) -> Channel[Result[Any]]:
        """:func:`spawn_link` in this scope."""
        check_callable(fn, "spawn_link")
        seconds = check_timeout(current_defaults().timeout if timeout is None else timeout)
        reply: Channel[Result[Any]] = Channel(1)

        async def run() -> None:
            if is_async(fn):
                result = await call_async(fn, args, seconds)
            else:  # a thread cannot be stopped: a late return becomes the TimeoutError
                call = functools.partial(trio.to_thread.run_sync, timed_call, fn, args, seconds)
                result = await call_async(call, (), None)
            reply.send_nowait(result)
            reply.close()

        self._start(run)
        return reply


def _label(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", fn))


def _caller(fn: Callable[..., Any], args: tuple[Any, ...], name: str) -> Callable[[], Any]:
    """An async function of no arguments calling ``fn(*args)``: awaited if ``fn`` is
    async, else in a worker thread (joined; a cancelled scope waits for it)."""
    check_callable(fn, name)
    if is_async(fn):
        return functools.partial(fn, *args)
    return functools.partial(trio.to_thread.run_sync, functools.partial(fn, *args))


def scope() -> Scope:
    """A new :class:`Scope`: ``async with pipekit.concurrency.scope():`` and then
    :func:`spawn` / :func:`spawn_link` inside (and in the calls they start).

    Example::

        async with pipekit.concurrency.scope():
            for user in users:
                pk.spawn(notify, user)
        # here every notify has finished; a failure was logged and is raised now
    """
    return Scope()


def _innermost(name: str) -> Scope:
    found = _current.get()
    if found is None or found._nursery is None:
        raise RuntimeError(
            f"{name}() starts a call inside a scope: wrap it in "
            "'async with pipekit.concurrency.scope():'"
        )
    return found


def spawn(fn: Callable[..., Any], *args: Any) -> None:
    """Start ``fn(*args)`` in the innermost :func:`scope` and return at once (fire and
    forget). An ``async def`` function runs as a trio task, a plain one in a worker
    thread. A failure is never swallowed: it is logged at once and raised when the
    scope's block ends (see :class:`Scope`); the other calls go on.

    Example::

        async with pipekit.concurrency.scope():
            pk.spawn(send_email, "ops@example.com", "disk full")
    """
    _innermost("spawn").spawn(fn, *args)


def spawn_link(
    fn: Callable[..., Any], *args: Any, timeout: float | str | None = None
) -> Channel[Result[Any]]:
    """Start ``fn(*args)`` in the innermost :func:`scope` and return a channel that
    delivers its :class:`Result` (the value, or the exception it raised, or a
    ``TimeoutError`` after ``timeout`` seconds: default, that of the defaults), then
    ends. The failure of the call does not disturb the scope. The channel works with
    ``await ch.receive()`` and in :func:`~pipekit.select`. ``timeout`` stops an async
    function at its deadline; a plain function runs in a thread, which cannot be
    stopped: its result is the ``TimeoutError`` once it returns late.

    Example::

        async with pipekit.concurrency.scope():
            a, b = pk.spawn_link(fetch, url_a), pk.spawn_link(fetch, url_b)
            first = await pk.select([a.case_receive(), b.case_receive()])
            print(first.value)                   # the Result that arrived first
    """
    return _innermost("spawn_link").spawn_link(fn, *args, timeout=timeout)


async def timeout(
    seconds: float | str | None, fn: Callable[..., Awaitable[T]], *args: Any
) -> Result[T]:
    """``await fn(*args)``, cancelled after ``seconds`` (a number or ``"5s"``; ``None``:
    the default timeout, if any): a :class:`Result` with the value, the exception the
    call raised, or a ``TimeoutError``. ``fn`` must be an ``async def`` function (trio
    can cancel it; a thread could not be stopped). From a script:
    ``trio.run(pk.timeout, 5, fetch, url)``.

    Example::

        r = await pk.timeout("2s", fetch, url)
        print(r.value if r.ok else f"gave up: {r.error}")
    """
    check_callable(fn, "timeout")
    if not is_async(fn):
        raise TypeError(
            f"timeout() cancels an async function at its deadline, and {_label(fn)!r} is "
            "a plain function, which a thread could not stop: make it async, or run it "
            "with pk.parallel_map([...], backend='process', timeout=...) to have it killed"
        )
    limit = check_timeout(current_defaults().timeout if seconds is None else seconds)
    return await call_async(fn, args, limit)
