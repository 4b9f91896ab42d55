"""``stream_map``: a function over a stream (sync or async, maybe endless), lazily,
with a bounded number of items pulled ahead."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
)
from types import TracebackType
from typing import Any, Generic, TypeVar

import trio

from ._calls import blocking_entry, call_async, check_callable, is_async, timed_call
from ._defaults import check_timeout, check_workers, current_defaults
from ._result import Result

__all__ = ["StreamMap", "stream_map"]

T = TypeVar("T")

_END = object()


class StreamMap(Generic[T]):
    """The results of :func:`stream_map`, one :class:`Result` per item: ``async with``
    it inside trio, or iterate it with ``for`` in a script.

    Example::

        async with pk.stream_map(fetch, urls, workers=8) as results:
            async for r in results:
                print(r.value)
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        source: Iterable[Any] | AsyncIterable[Any],
        workers: int,
        ordered: bool,
        buffer: int,
        timeout: float | None,
    ) -> None:
        self._fn = fn
        self._source = source
        self._workers = workers
        self._ordered = ordered
        self._buffer = buffer
        self._timeout = timeout
        self._async = is_async(fn)
        self._threads = trio.CapacityLimiter(workers)
        self._nursery_manager: Any = None
        self._nursery: trio.Nursery | None = None
        self._sync: Generator[Result[T], None, None] | None = None
        self._entered = False
        self._reset()

    def _reset(self) -> None:
        self._pulled = 0  # items taken from the source
        self._delivered = 0  # results handed out
        self._ready: dict[int, Result[T]] = {}  # ordered: by index
        self._done: deque[Result[T]] = deque()  # unordered: completion order
        self._fed = False  # the source is exhausted (or failed)
        self._source_error: BaseException | None = None
        self._changed = trio.Event()

    @property
    def pulled_ahead(self) -> int:
        """Items taken from the source whose result was not handed out yet (at most
        ``buffer``)."""
        return self._pulled - self._delivered

    # -- inside trio ----------------------------------------------------------------

    async def __aenter__(self) -> StreamMap[T]:
        if self._entered:
            raise RuntimeError("a stream_map runs once: call stream_map() again")
        self._entered = True
        self._reset()
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        self._slots = trio.Semaphore(self._buffer)  # pulled, not handed out
        self._free = trio.Semaphore(self._workers)  # calls running
        self._nursery.start_soon(self._feed)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()  # stopping early: drop what runs
        try:
            handled: bool = await self._nursery_manager.__aexit__(kind, error, tb)
        except BaseExceptionGroup as group:
            inner = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
            if len(inner) == 1:
                raise inner[0] from None
            raise
        finally:
            self._nursery = None
        return handled

    async def aclose(self) -> None:
        """Stop: cancel the calls running and pull nothing more (``async with`` does it)."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        await trio.lowlevel.checkpoint()

    def __aiter__(self) -> AsyncIterator[Result[T]]:
        if self._nursery is None:
            raise RuntimeError(
                "use 'async with pk.stream_map(...) as results: async for r in results' "
                "(the block is where the calls run, and leaving it stops them)"
            )
        return self

    async def __anext__(self) -> Result[T]:
        result = await self._next()
        self._slots.release()
        return result

    async def _next(self) -> Result[T]:
        """The next result, without giving its slot back (the caller does)."""
        if self._nursery is None:
            raise StopAsyncIteration
        while True:
            if self._ordered and self._delivered in self._ready:
                result = self._ready.pop(self._delivered)
                break
            if not self._ordered and self._done:
                result = self._done.popleft()
                break
            if self._fed and self._pulled == self._delivered:
                if self._source_error is not None:
                    error, self._source_error = self._source_error, None
                    raise error
                raise StopAsyncIteration
            self._changed = trio.Event()
            await self._changed.wait()
        self._delivered += 1
        return result

    async def _feed(self) -> None:
        try:
            if isinstance(self._source, AsyncIterable):
                iterator = aiter(self._source)
                while True:
                    await self._slots.acquire()
                    await self._free.acquire()
                    try:
                        item = await anext(iterator)
                    except StopAsyncIteration:
                        return
                    self._start(item)
            else:
                items = iter(self._source)
                while True:
                    await self._slots.acquire()
                    await self._free.acquire()
                    try:
                        item = next(items)
                    except StopIteration:
                        return
                    self._start(item)
        except Exception as exc:
            self._source_error = exc
        finally:
            self._fed = True
            self._changed.set()

    def _start(self, item: Any) -> None:
        assert self._nursery is not None
        index = self._pulled
        self._pulled += 1
        self._nursery.start_soon(self._call, index, item)

    async def _in_thread(self, item: Any) -> Any:
        """A plain ``fn`` in a worker thread; a thread cannot be stopped, so an item that
        overran ``timeout`` gets its ``TimeoutError`` when it returns."""
        return await trio.to_thread.run_sync(
            timed_call, self._fn, (item,), self._timeout, limiter=self._threads
        )

    async def _call(self, index: int, item: Any) -> None:
        try:
            if self._async:
                result = await call_async(self._fn, (item,), self._timeout)
            else:
                result = await call_async(self._in_thread, (item,), None)
        finally:
            self._free.release()
        if self._ordered:
            self._ready[index] = result
        else:
            self._done.append(result)
        self._changed.set()

    # -- from a script ------------------------------------------------------------------

    def __iter__(self) -> Iterator[Result[T]]:
        blocking_entry("iterating a stream_map", "'async with pk.stream_map(...) as results'")
        if self._sync is not None or self._entered:
            raise RuntimeError("a stream_map runs once: call stream_map() again")
        self._sync = self._iterate_in_thread()
        return self._sync

    def __enter__(self) -> StreamMap[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._sync is not None:
            self._sync.close()

    def _iterate_in_thread(self) -> Generator[Result[T], None, None]:
        """Run the stream in a trio loop on a thread of its own; hand results over one
        by one (a slot is given back only when this side takes its result, so
        ``buffer`` bounds what is pulled ahead here too)."""
        handoff: queue.SimpleQueue[Any] = queue.SimpleQueue()
        started = threading.Event()
        control: dict[str, Any] = {}

        async def drive() -> None:
            control["token"] = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as cancel:
                control["cancel"] = cancel
                started.set()
                async with self:
                    while True:
                        try:
                            handoff.put(await self._next())
                        except StopAsyncIteration:
                            break

        def thread() -> None:
            try:
                trio.run(drive)
                handoff.put(_END)
            except BaseException as exc:
                handoff.put(_Raised(exc))
            finally:
                started.set()

        worker = threading.Thread(target=thread, name="pipekit-stream_map", daemon=True)
        worker.start()
        started.wait()
        try:
            while True:
                got = handoff.get()
                if got is _END:
                    return
                if isinstance(got, _Raised):
                    raise got.error
                with contextlib.suppress(trio.RunFinishedError):
                    control["token"].run_sync_soon(self._slots.release)
                yield got
        finally:
            with contextlib.suppress(trio.RunFinishedError, KeyError):
                control["token"].run_sync_soon(control["cancel"].cancel)
            worker.join()


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def stream_map(
    fn: Callable[[Any], Any],
    source: Iterable[Any] | AsyncIterable[Any],
    *,
    workers: int | None = None,
    ordered: bool = True,
    buffer: int | None = None,
    timeout: float | str | None = None,
) -> StreamMap[Any]:
    """Call ``fn`` on the items of ``source`` as they come, ``workers`` at once, and
    hand out one :class:`Result` per item, lazily: in input order (``ordered=True``) or
    as the calls complete.

    - ``source``: an iterable or async iterable, also an endless one. At most ``buffer``
      items (default ``2 * workers``, at least ``workers``) are ever taken from it
      whose result has not been handed out; nothing is pulled before it is needed.
    - ``fn``: an ``async def`` function (a trio task per item; ``timeout`` seconds per
      item, default that of the defaults, cancels it) or a plain one (run in a worker
      thread). Errors are values, as in :func:`parallel_map`.
    - ``workers``: default ``max_workers`` of the defaults (100).
    - Inside trio: ``async with pk.stream_map(...) as results: async for r in results``.
      Leaving the block (``break`` included) cancels the calls still running and pulls
      nothing more. A sync source is pulled in trio's thread: keep its ``next()``
      quick, or make it async.
    - In a script: ``for r in pk.stream_map(...)``: the stream runs in a trio loop on a
      thread of its own; leaving the loop stops it and joins that thread (``with
      pk.stream_map(...) as results: for r in results`` makes that deterministic).

    Example::

        for r in pk.stream_map(fetch, read_urls(), workers=8):     # endless is fine
            if r.ok:
                print(r.value)
    """
    check_callable(fn, "stream_map")
    if not isinstance(source, Iterable | AsyncIterable):
        raise TypeError(f"stream_map() takes an iterable or async iterable, not {source!r}")
    settings = current_defaults()
    count = check_workers(settings.max_workers if workers is None else workers, "workers")
    room = 2 * count if buffer is None else check_workers(buffer, "buffer")
    if room < count:
        raise ValueError(
            f"buffer ({room}) must be at least workers ({count}): each running call holds "
            "an item pulled ahead"
        )
    if not isinstance(ordered, bool):
        raise TypeError(f"ordered must be True or False, not {ordered!r}")
    seconds = check_timeout(settings.timeout if timeout is None else timeout)
    return StreamMap(fn, source, count, ordered, room, seconds)
