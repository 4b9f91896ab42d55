"""Lane: one direction of a bounded, batched, thread-safe message queue.

A lane carries Python objects by reference from its writers to its one reader. It is the
in-memory transport under in-process pipes, kernel edges and thread ports:

* bounded: a writer blocks while ``capacity`` messages (and, optionally, ``max_bytes``
  of ``bytes``/``str`` messages) are queued and resumes once the reader has drained the
  lane to ``low_water`` (the in-memory PAUSE / RESUME);
* batched: ``put_many`` / ``get_many`` move lists, and a waiting side is woken once per
  batch (one pending wake-up), never once per message;
* usable from trio tasks (``await lane.put(...)``) and from plain threads
  (``lane.put_blocking(...)``), on either side, across event loops, once it is
  *shared* (the default for a ``Lane()``). The lanes under in-process pipes and kernel
  edges are created *local* (``shared=False``): used by trio tasks of one thread, their
  single-message fast paths take no lock; whoever hands such a lane to another thread
  calls :meth:`Lane.share` first (the thread adapter does);
* ended when every writer has ended (so a merge ends only after all its inputs), or
  failed with an exception that the reader raises after draining what came before it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import trio

from .errors import PipekitError

__all__ = ["DEFAULT_CAPACITY", "YIELD_EVERY", "Lane", "cancel_point", "current_task"]

DEFAULT_CAPACITY = 1024
YIELD_EVERY = 64
"""The Pipe contract's fairness bound: at most this many consecutive ``send``/``receive``
calls on one pipe end (or single-message ``put``/``get`` calls on one lane) complete
without a schedule point; every call is a cancel point."""


def _trio_run_context() -> Any:
    """trio's per-thread run context, if this trio has the fields the inline
    cancellation check reads; else an object that makes that check always take the
    full checkpoint (correct, only slower).

    Why: ``await trio.lowlevel.checkpoint_if_cancelled()`` costs ~0.19 us per call on
    the 2-core VMs (a coroutine, ``current_task()``, the check; ~2,000 instructions), a
    fifth of the whole per-message budget of issue 14; the same check read inline (the
    task's cancel status and the KeyboardInterrupt flag) costs ~0.05 us. The fields are
    trio internals, stable since trio 0.12 and probed here once."""
    try:
        from trio._core import _run
    except ImportError:  # pragma: no cover - a trio without this layout
        return _ALWAYS_CHECKPOINT

    def fields(cls: Any) -> set[str]:
        return {a.name for a in getattr(cls, "__attrs_attrs__", ())}

    if (
        {"coro", "_cancel_status", "_runner", "_cancel_points"}
        <= fields(getattr(_run, "Task", None))
        and "effectively_cancelled" in fields(getattr(_run, "CancelStatus", None))
        and "ki_pending" in fields(getattr(_run, "Runner", None))
        and hasattr(_run, "GLOBAL_RUN_CONTEXT")
    ):
        return _run.GLOBAL_RUN_CONTEXT
    return _ALWAYS_CHECKPOINT  # pragma: no cover


# Stands in for trio's run context when its fields are not there: its task's cancel
# status always says "take the full checkpoint", which is what every check is without
# the shortcut (correct, only slower), and its coroutine never runs, so no pipe end
# keeps it cached.
_ALWAYS_CHECKPOINT = SimpleNamespace(
    task=SimpleNamespace(
        coro=SimpleNamespace(cr_running=False),
        _cancel_status=SimpleNamespace(effectively_cancelled=True),
    )
)


run_context: Any = _trio_run_context()
"""See :func:`_trio_run_context`. The check, inlined where it is hot::

    task = run_context.task
    if task._cancel_status.effectively_cancelled or task._runner.ki_pending:
        await trio.lowlevel.checkpoint()   # raises Cancelled (or KeyboardInterrupt)
    task._cancel_points += 1               # as checkpoint_if_cancelled() counts it
"""


def current_task() -> Any:
    """``trio.lowlevel.current_task()`` (through :data:`run_context`)."""
    try:
        return run_context.task
    except AttributeError:
        raise RuntimeError("must be called from async context") from None


async def cancel_point() -> None:
    """``trio.lowlevel.checkpoint_if_cancelled()``, cheaper (see :data:`run_context`)."""
    task = current_task()
    if task._cancel_status.effectively_cancelled or task._runner.ki_pending:
        await trio.lowlevel.checkpoint()
        return
    task._cancel_points += 1


class _TrioWaiter:
    __slots__ = ("event", "thread", "token")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.token = trio.lowlevel.current_trio_token()
        self.thread = threading.get_ident()

    def wake(self) -> None:
        if threading.get_ident() == self.thread:
            self.event.set()
        else:
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(self.event.set)


class _ThreadWaiter:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()

    def wake(self) -> None:
        self.event.set()


_Waiter = _TrioWaiter | _ThreadWaiter
_EMPTY: Any = object()  # what try_get returns when the lane has nothing


def _weight(item: Any) -> int:
    """What a message counts against a lane's byte budget."""
    t = type(item)
    if t is bytes or t is str or t is bytearray:
        return len(item)
    if t is memoryview:
        return int(item.nbytes)
    return 0


class Lane:
    """A bounded single-reader, multi-writer queue. See the module docstring."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        *,
        writers: int = 1,
        low_water: int | None = None,
        max_bytes: int | None = None,
        shared: bool = True,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.capacity = capacity
        self.max_bytes = max_bytes
        """Optional second bound: the total size of queued ``bytes``/``str`` messages
        (other messages weigh nothing). A lone message larger than it is still admitted
        into an empty lane."""
        self._weighed = max_bytes is not None
        self._bytes = 0
        self.low_water = capacity // 2 if low_water is None else low_water
        if not 0 <= self.low_water < capacity:
            raise ValueError("low_water must be in [0, capacity)")
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._shared = shared
        self._writers = writers
        self._error: BaseException | None = None
        self._reader_closed = False
        self._reader_waiter: _Waiter | None = None
        self._writer_waiters: list[_Waiter] = []
        self._ended_keys: set[object] = set()
        self.error_delivered = False
        """True once the reader has been handed the failure this lane ended with."""
        # Flags for the single-message fast paths, so that they test one attribute
        # instead of several (each ~50 instructions) and LocalPipe need not call
        # try_put / try_get (a Python call: ~470 instructions, ~0.05 us).
        # _open: a put needs no check but the capacity (open both ways, no byte count);
        # _put_ready: the same, and the lane is local (no lock). Kept by share(),
        # end_writer(), fail(), close_reader().
        # _get_ready: the reader may popleft() a queued message with no lock, local
        # lane or shared (see pop_ready), then wake waiting writers if there are any.
        self._open = not self._weighed and writers > 0
        self._put_ready = self._open and not shared
        self._get_ready = not self._weighed
        self._put_budget = YIELD_EVERY
        self._get_budget = YIELD_EVERY
        self.blocked_seconds = 0.0
        """Total time writers spent blocked on a full lane."""
        self.starved_seconds = 0.0
        """Total time the reader spent waiting on an empty lane (its module starved)."""

    # -- introspection ----------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Messages queued now."""
        return len(self._items)

    @property
    def ended(self) -> bool:
        """True once every writer has ended or one failed the lane."""
        return self._writers <= 0

    @property
    def reader_closed(self) -> bool:
        return self._reader_closed

    @property
    def shared(self) -> bool:
        """True if the lane may be used from several threads (see :meth:`share`)."""
        return self._shared

    def share(self) -> None:
        """Make a local lane safe to use from other threads: from now on every
        operation takes the lane's lock. Call it from the thread that uses the lane so
        far, between two of its operations (in trio: anywhere outside the lane's own
        methods), before any other thread touches the lane. It cannot be undone.

        A local lane (``shared=False``) skips the lock in its single-message fast paths
        (:meth:`try_put`, :meth:`try_get`): an uncontended ``with lock`` costs ~0.1-0.17
        us per call on the 2-core VMs, a sixth of issue 14's per-message budget, and
        trio tasks of one thread never interleave inside a method without an ``await``.
        Its other operations lock anyway (that costs nothing per message)."""
        with self._lock:
            self._shared = True
            self._put_ready = False

    def add_writer(self) -> None:
        """Register one more writer (for merges); the lane ends when all have ended."""
        with self._lock:
            if self._writers <= 0:
                raise PipekitError("cannot add a writer to a lane that has ended")
            self._writers += 1

    # -- writer side ------------------------------------------------------------------

    def _offer(self, items: Sequence[Any], start: int) -> int:
        """Queue as many of ``items[start:]`` as fit. Call with the lock held."""
        if self._reader_closed:
            raise trio.BrokenResourceError("the receiving side of this pipe is closed")
        if self._writers <= 0:
            raise trio.ClosedResourceError("this pipe has already ended")
        free = self.capacity - len(self._items)
        if free <= 0:
            return start
        stop = min(len(items), start + free)
        if self._weighed:
            stop = self._fit_bytes(items, start, stop)
            if stop == start:
                return start
        if start == 0 and stop == len(items):
            self._items.extend(items)
        else:
            self._items.extend(items[start:stop])
        waiter = self._reader_waiter
        if waiter is not None:
            self._reader_waiter = None
            waiter.wake()
        return stop

    def _fit_bytes(self, items: Sequence[Any], start: int, stop: int) -> int:
        """How far the byte budget lets ``items[start:stop]`` in; updates the count."""
        assert self.max_bytes is not None
        total = self._bytes
        i = start
        while i < stop:
            w = _weight(items[i])
            if total + w > self.max_bytes and (total or self._items or i > start):
                break
            total += w
            i += 1
        self._bytes = total
        return i

    def _drained(self) -> bool:
        """Writers waiting on a full lane may go on (the low-water marks are reached)."""
        return len(self._items) <= self.low_water and (
            not self._weighed or self._bytes <= (self.max_bytes or 0) // 2
        )

    @property
    def queued_bytes(self) -> int:
        """Total size of queued ``bytes``/``str`` messages (0 unless ``max_bytes``)."""
        return self._bytes

    async def put(self, item: Any, abort: Callable[[], bool] | None = None) -> float:
        """Queue one message, waiting while the lane is full. Returns the seconds spent
        waiting. While waiting, ``abort()`` is checked whenever :meth:`wake_writers` is
        called; if it is true, :class:`trio.ClosedResourceError` is raised.

        A cancel point; every :data:`YIELD_EVERY`-th call on this lane is also a
        schedule point (and so is a call that waits)."""
        self._put_budget -= 1
        if self._put_budget <= 0:
            self._put_budget = YIELD_EVERY
            await trio.lowlevel.checkpoint()
        else:
            await cancel_point()
        if self.try_put(item):
            return 0.0
        return await self.put_waiting(item, abort)

    async def put_waiting(self, item: Any, abort: Callable[[], bool] | None = None) -> float:
        """The rest of :meth:`put` once :meth:`try_put` said no (for a caller that has
        checked cancellation itself): wait for room, or raise why there is none."""
        return await self._put_slow((item,), 0, abort)

    def _check_shared(self) -> None:
        if not self._shared:
            raise PipekitError(
                "this lane is local to the trio thread that uses it (an in-process pipe's "
                "or a kernel edge's): call lane.share() there before a thread uses it"
            )

    def try_put(self, item: Any) -> bool:
        """Queue one message if there is room now (from any thread, once shared);
        False if the lane is full, ended or its reader closed (the blocking calls then
        raise)."""
        if self._shared:
            with self._lock:
                items = self._items
                if self._open and len(items) < self.capacity:  # _put_one, inlined
                    items.append(item)
                    if self._reader_waiter is not None:
                        self.wake_reader()
                    return True
                return self._put_one(item)
        return self._put_one(item)

    @trio.lowlevel.enable_ki_protection
    def try_put_fast(self, item: Any) -> bool:
        """:meth:`try_put` for a thread other than the main thread (a thread port's) or
        for trio code: the lock is taken with ``acquire()``/``release()``, ~1,000
        instructions less per call than ``with`` (which creates and calls a bound
        ``__exit__``; a thread port's whole send costs ~5,000). A KeyboardInterrupt
        between ``acquire()`` and ``try`` would leave the lock held, and only the main
        thread outside trio can get one there: inside trio this method is KI-protected
        (trio delivers a Ctrl-C at the next checkpoint instead)."""
        if not self._shared:
            return self._put_one(item)
        lock = self._lock
        lock.acquire()
        try:
            items = self._items
            if self._open and len(items) < self.capacity:  # _put_one, inlined
                items.append(item)
                if self._reader_waiter is not None:
                    self.wake_reader()
                return True
            return self._put_one(item)
        finally:
            lock.release()

    def _put_one(self, item: Any) -> bool:
        """:meth:`try_put` with the lock held (or on a local lane)."""
        if self._weighed:
            if self._reader_closed or self._writers <= 0:
                return False
            return self._offer((item,), 0) == 1
        items = self._items
        if len(items) < self.capacity and self._writers > 0 and not self._reader_closed:
            items.append(item)
            waiter = self._reader_waiter
            if waiter is not None:
                self._reader_waiter = None
                waiter.wake()
            return True
        return False

    async def put_many(
        self, items: Sequence[Any], abort: Callable[[], bool] | None = None
    ) -> float:
        """Queue ``items`` in order, waiting whenever the lane is full. Returns the
        seconds spent waiting (``abort`` as in :meth:`put`; the items queued before an
        abort stay queued)."""
        await trio.lowlevel.checkpoint()
        with self._lock:
            done = self._offer(items, 0)
        if done < len(items):
            return await self._put_slow(items, done, abort)
        return 0.0

    async def _put_slow(
        self, items: Sequence[Any], done: int, abort: Callable[[], bool] | None
    ) -> float:
        clock_start = trio.current_time()
        waited = 0.0
        try:
            while True:
                if abort is not None and abort():
                    raise trio.ClosedResourceError(
                        "this end of the pipe was closed while a send was waiting"
                    )
                with self._lock:
                    done = self._offer(items, done)
                    if done == len(items):
                        waited = trio.current_time() - clock_start
                        return waited
                    waiter = _TrioWaiter()
                    self._writer_waiters.append(waiter)
                    if self._drained():  # a reader popped without the lock meanwhile
                        self._writer_waiters.remove(waiter)
                        continue
                try:
                    await waiter.event.wait()
                finally:
                    with self._lock:
                        if waiter in self._writer_waiters:
                            self._writer_waiters.remove(waiter)
        finally:
            self.blocked_seconds += waited or (trio.current_time() - clock_start)

    def put_blocking(self, item: Any, abort: threading.Event | None = None) -> None:
        """Thread-side :meth:`put`: blocks the calling (non-trio) thread."""
        self.put_many_blocking((item,), abort)

    def put_many_blocking(self, items: Sequence[Any], abort: threading.Event | None = None) -> None:
        """Thread-side :meth:`put_many`. If ``abort`` is set (and :meth:`wake_all`
        called) while waiting, raises :class:`trio.ClosedResourceError`."""
        self._check_shared()
        done = 0
        while True:
            with self._lock:
                if abort is not None and abort.is_set():
                    raise trio.ClosedResourceError("interrupted: the module is being stopped")
                done = self._offer(items, done)
                if done == len(items):
                    return
                waiter = _ThreadWaiter()
                self._writer_waiters.append(waiter)
                if self._drained():  # a reader popped without the lock meanwhile
                    self._writer_waiters.remove(waiter)
                    continue
            waiter.event.wait()

    def unget(self, items: Sequence[Any]) -> None:
        """Put ``items`` back at the front, in order, for the next reader (used when a
        module fails part-way through a batch, so that a restart loses nothing else).
        May exceed ``capacity`` by ``len(items)``."""
        with self._lock:
            if self._reader_closed:
                return
            self._items.extendleft(reversed(items))
            if self._weighed:
                self._bytes += sum(map(_weight, items))

    def writers_may_go_on(self) -> None:
        """Wake the waiting writers if the lane has drained to its low-water marks
        (after a reader's lock-free popleft: see :meth:`pop_ready`)."""
        if self._shared:
            with self._lock:
                self._wake_writers_if_drained()
        else:
            self._wake_writers_if_drained()

    def _wake_writers_if_drained(self) -> None:
        if self._writer_waiters and self._drained():
            for w in self._writer_waiters:
                w.wake()
            self._writer_waiters.clear()

    def wake_writers(self) -> None:
        """Wake every waiting writer so it re-checks its ``abort`` condition."""
        with self._lock:
            for w in self._writer_waiters:
                w.wake()
            self._writer_waiters.clear()

    def wake_all(self) -> None:
        """Wake every waiter so it re-checks its abort condition."""
        with self._lock:
            for w in self._writer_waiters:
                w.wake()
            self._writer_waiters.clear()
            self.wake_reader()

    def end_writer(self, key: object = None) -> None:
        """One writer is done. The lane ends when the last writer is done.

        A writer that may be ended from several places (its module and the kernel)
        passes the same ``key`` each time; only the first call with a key counts."""
        with self._lock:
            if self._writers <= 0:
                return
            if key is not None:
                if key in self._ended_keys:
                    return
                self._ended_keys.add(key)
            self._writers -= 1
            if self._writers == 0:
                self._open = self._put_ready = False
                self.wake_reader()

    def fail(self, error: BaseException) -> None:
        """End the lane with ``error``: the reader raises it after the queued messages."""
        with self._lock:
            if self._writers <= 0:
                return
            self._writers = 0
            self._open = self._put_ready = False
            self._error = error
            self.wake_reader()

    def wake_reader(self) -> None:
        """Wake the reader if it waits (after a message was appended by a fast path)."""
        waiter = self._reader_waiter
        if waiter is not None:
            self._reader_waiter = None
            waiter.wake()

    # -- reader side ------------------------------------------------------------------

    def _take(self, max_items: int) -> list[Any] | None:
        """Take up to ``max_items``; None if empty. Raises at end. Lock held."""
        if self._reader_closed:
            raise trio.ClosedResourceError("this pipe was closed")
        items = self._items
        n = len(items)
        if n:
            if n <= max_items:
                batch = list(items)
                items.clear()
            else:
                batch = [items.popleft() for _ in range(max_items)]
            if self._weighed:
                self._bytes -= sum(map(_weight, batch))
            if self._writer_waiters and self._drained():
                for w in self._writer_waiters:
                    w.wake()
                self._writer_waiters.clear()
            return batch
        if self._writers <= 0:
            if self._error is not None:
                self.error_delivered = True
                raise self._error
            raise trio.EndOfChannel
        return None

    async def get(self) -> Any:
        """Take one message, waiting while the lane is empty.

        Raises :class:`trio.EndOfChannel` once ended and drained, or the failure. A
        cancel point, and a schedule point like :meth:`put`."""
        self._get_budget -= 1
        if self._get_budget <= 0:
            self._get_budget = YIELD_EVERY
            await trio.lowlevel.checkpoint()
        else:
            await cancel_point()
        item = self.try_get(_EMPTY)
        if item is _EMPTY:
            return await self.get_waiting()
        return item

    async def get_waiting(self) -> Any:
        """The rest of :meth:`get` once :meth:`try_get` found nothing (for a caller
        that has checked cancellation itself): wait for a message, or raise the end."""
        return (await self._get_slow(1))[0]

    def pop_ready(self, default: Any = None) -> Any:
        """The reader's lock-free fast path, local lane or shared: take the next
        message if one is queued and the lane counts no bytes, else ``default``.

        Safe without the lock because a lane has one reader (one thread) and writers
        only append: a ``popleft`` can only make room under a writer's check, and a
        writer that goes to sleep on a full lane registers itself and then re-checks
        the low-water marks under its lock, while the reader pops and then looks for
        registered writers (:meth:`writers_may_go_on`); so one of them sees the other
        (the GIL orders every deque and attribute operation). LocalPipe inlines this:
        a lock round trip (``with lock``: ~2,000 instructions) was a third of a thread
        port's per-message cost."""
        items = self._items
        if items and self._get_ready:
            item = items.popleft()
            if self._writer_waiters:
                self.writers_may_go_on()
            return item
        return default

    def try_get(self, default: Any = None) -> Any:
        """Take one message if one is queued now (from any thread, once shared);
        ``default`` if the lane is empty (at its end too: the waiting calls raise)."""
        if self._shared:
            with self._lock:
                items = self._items
                if items and not self._weighed and not self._writer_waiters:
                    return items.popleft()  # _get_one, inlined
                return self._get_one(default)
        return self._get_one(default)

    def _get_one(self, default: Any) -> Any:
        """:meth:`try_get` with the lock held (or on a local lane). A lane whose reader
        closed is empty (:meth:`close_reader` clears it, :meth:`unget` adds nothing)."""
        items = self._items
        if not items:
            return default
        item = items.popleft()
        if self._weighed:
            self._bytes -= _weight(item)
        if self._writer_waiters and self._drained():
            for w in self._writer_waiters:
                w.wake()
            self._writer_waiters.clear()
        return item

    async def get_many(self, max_items: int | None = None) -> list[Any]:
        """Take between 1 and ``max_items`` (default: all queued) messages."""
        await trio.lowlevel.checkpoint()
        limit = max_items if max_items is not None else self.capacity
        with self._lock:
            batch = self._take(limit)
        if batch is not None:
            return batch
        return await self._get_slow(limit)

    async def _get_slow(self, limit: int) -> list[Any]:
        while True:
            with self._lock:
                batch = self._take(limit)
                if batch is not None:
                    return batch
                if self._reader_waiter is not None:
                    raise trio.BusyResourceError("another task is already receiving from this pipe")
                waiter = _TrioWaiter()
                self._reader_waiter = waiter
            since = trio.current_time()
            try:
                await waiter.event.wait()
            finally:
                self.starved_seconds += trio.current_time() - since
                with self._lock:
                    if self._reader_waiter is waiter:
                        self._reader_waiter = None

    def get_many_blocking(
        self, max_items: int | None = None, abort: threading.Event | None = None
    ) -> list[Any]:
        """Thread-side :meth:`get_many`: blocks the calling (non-trio) thread; see
        :meth:`put_many_blocking` for ``abort``."""
        self._check_shared()
        limit = max_items if max_items is not None else self.capacity
        while True:
            with self._lock:
                if abort is not None and abort.is_set():
                    raise trio.ClosedResourceError("interrupted: the module is being stopped")
                batch = self._take(limit)
                if batch is not None:
                    return batch
                waiter = _ThreadWaiter()
                self._reader_waiter = waiter
            since = time.perf_counter()
            waiter.event.wait()
            self.starved_seconds += time.perf_counter() - since

    def close_reader(self) -> None:
        """The reader is gone: discard what is queued; writers get BrokenResourceError."""
        with self._lock:
            self._reader_closed = True
            self._open = self._put_ready = False
            self._items.clear()
            self._bytes = 0
            for w in self._writer_waiters:
                w.wake()
            self._writer_waiters.clear()
            self.wake_reader()
