"""Worker pools kept warm between process-backend calls, inside one trio run.

A :class:`ProcessPools` keeps one :class:`~pipekit.WorkerPool` per (function, per-item
timeout): the first call starts it, later calls with the same function and options use
its warm workers. A pool starts with as many processes as its first call can use (its
item count, up to ``max_workers``); a call that can use more replaces it by a larger
one, and so does a call with another ``max_workers`` (the old one closes once its last
call ends). A pool that no call used for its
idle time (``process_idle`` of the defaults in force at its last call) is closed, and
so is every pool when the :class:`ProcessPools` closes. Everything runs in the nursery of
the ``async with`` block that owns it: no worker outlives it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import trio

from ..kernel.scopes import open_plain_nursery
from ..workers import WorkerPool
from ._processes import check_importable, run_on
from ._result import Result

__all__ = ["ProcessPools", "current_pools", "process_pools"]

PoolKey = tuple[str, float | None]
"""A pool's identity: the function's target spec and the per-item timeout."""


class _Slot:
    """One cached pool and who uses it."""

    def __init__(
        self, key: PoolKey, fn: Callable[[Any], Any], most: int, size: int, idle: float
    ) -> None:
        self.key = key
        self.fn = fn
        self.most = most  # the calls' max_workers
        self.size = size  # its processes (at most ``most``)
        self.idle = idle  # seconds unused before it closes
        self.pool: WorkerPool | None = None
        self.error: BaseException | None = None  # why it could not start, or failed
        self.ready = trio.Event()  # started (or failed to)
        self.stop = trio.Event()  # asked to close
        self.closed = trio.Event()
        self.users = 0  # calls using it now
        self.idle_since = trio.current_time()
        self.retired = False  # no new calls: closes when its last call ends


class ProcessPools:
    """The warm worker pools of the process backend in one trio run (see the module
    docstring). Made by :func:`process_pools`, which owns its lifetime.

    Example::

        async with pipekit.concurrency.process_pools() as pools:
            for batch in batches:       # one pool, started once, for every batch
                results = await pk.aparallel_map(score, batch, backend="process")
            print(pools.pids)           # {'app.scoring:score': [4121, 4122]}
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._slots: dict[PoolKey, _Slot] = {}
        self._changed = trio.Event()  # a pool became idle or left: re-plan idle stops
        self._closing = False
        self._watching = trio.CancelScope()
        self.token = trio.lowlevel.current_trio_token()

    @property
    def pids(self) -> dict[str, list[int]]:
        """The open pools' worker pids, by target (``"module:function"``)."""
        return {
            slot.key[0]: slot.pool.pids
            for slot in self._slots.values()
            if slot.pool is not None and not slot.retired
        }

    async def map(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        workers: tuple[int, int],
        limit: float | None,
        fail_fast: bool,
        idle: float,
        out: dict[int, Result[Any]],
    ) -> None:
        """Run ``fn`` over ``items`` on the warm pool for ``(fn, limit)``, storing each
        :class:`Result` by index in ``out``. ``workers``: ``(max_workers, need)``, the
        most processes the call may use and how many it can (its item count, if
        known, up to ``max_workers``): the pool is started with ``need`` processes, and
        replaced by a larger one for a call that needs more (never above
        ``max_workers``), or by a new one if ``max_workers`` changed. ``idle``: seconds
        the pool stays open unused after this call."""
        slot = await self._acquire(fn, workers, limit, idle)
        clean = False
        try:
            assert slot.pool is not None
            await run_on(slot.pool, items, fail_fast, out)
            clean = True
        except trio.ClosedResourceError:
            if slot.error is None:  # the pool failed: wait to say why
                with trio.CancelScope(shield=True):
                    await slot.closed.wait()
            if slot.error is not None:
                raise slot.error from None
            raise
        finally:
            self._release(slot, clean)

    async def _acquire(
        self, fn: Callable[[Any], Any], workers: tuple[int, int], limit: float | None, idle: float
    ) -> _Slot:
        if self._closing:
            raise trio.ClosedResourceError("the process pools are closed")
        most, need = workers
        key = (check_importable(fn), limit)
        slot = self._slots.get(key)
        if slot is not None and (slot.most != most or slot.size < need or slot.error is not None):
            self._retire(slot)  # resized (or broken): a new pool for the new calls
            slot = None
        if slot is None:
            slot = self._slots[key] = _Slot(key, fn, most, need, idle)
            self._nursery.start_soon(self._host, slot, name=f"pipekit:process-pool:{key[0]}")
        slot.idle = idle
        slot.users += 1
        try:
            await slot.ready.wait()
        except BaseException:
            self._release(slot, True)
            raise
        if slot.error is not None:
            self._release(slot, True)
            raise slot.error
        return slot

    def _release(self, slot: _Slot, clean: bool) -> None:
        slot.users -= 1
        pool = slot.pool
        if not clean and pool is not None and pool.stats.inflight:
            # An aborted call left items running: the pool closes (killing the workers
            # still busy) once no call uses it, rather than run them to their end.
            self._retire(slot)
        if slot.users == 0:
            slot.idle_since = trio.current_time()
            if slot.retired:
                slot.stop.set()
            self._changed.set()

    def _retire(self, slot: _Slot) -> None:
        slot.retired = True
        if self._slots.get(slot.key) is slot:
            del self._slots[slot.key]
        if slot.users == 0:
            slot.stop.set()

    async def _host(self, slot: _Slot) -> None:
        try:
            async with WorkerPool(slot.fn, slot.size, timeout=slot.key[1]) as pool:
                slot.pool = pool
                slot.idle_since = trio.current_time()
                slot.ready.set()
                self._changed.set()  # idle from now if its first call is gone
                await slot.stop.wait()
        except Exception as exc:  # told to its calls, not to the pools' owner
            slot.error = exc
        finally:
            slot.ready.set()
            slot.closed.set()
            if self._slots.get(slot.key) is slot:
                del self._slots[slot.key]

    async def _stop_idle(self) -> None:
        """Close each pool unused for its idle time, until the pools close."""
        with self._watching:
            await self._watch()

    async def _watch(self) -> None:
        while True:
            self._changed = trio.Event()
            now = trio.current_time()
            deadline = math.inf
            for slot in list(self._slots.values()):
                if slot.users or slot.pool is None:
                    continue
                at = slot.idle_since + slot.idle
                if at <= now:
                    self._retire(slot)
                else:
                    deadline = min(deadline, at)
            with trio.move_on_at(deadline):
                await self._changed.wait()

    def _close(self) -> None:
        self._closing = True
        self._watching.cancel()
        for slot in list(self._slots.values()):
            self._retire(slot)


_current: ContextVar[ProcessPools | None] = ContextVar("pipekit_process_pools", default=None)


def current_pools() -> ProcessPools | None:
    """The :class:`ProcessPools` of the innermost :func:`process_pools` block of this
    trio run, if any."""
    pools = _current.get()
    if pools is None or pools.token is not trio.lowlevel.current_trio_token():
        return None  # a block of another run (a context copied into a thread)
    return pools


@asynccontextmanager
async def process_pools() -> AsyncIterator[ProcessPools]:
    """Keep the process backend's worker pools in this block, in this trio run:
    ``aparallel_map(..., backend="process")`` (and ``aparallel_filter``) calls inside it
    reuse warm workers, which stop when the block ends (idle ones ENDed, busy ones
    killed, all reaped) or after ``process_idle`` seconds unused. Outside such a block
    the process backend keeps its pools in one thread of their own for the whole
    program (see :func:`shutdown_pools`).

    Example::

        async with pipekit.concurrency.process_pools():
            for batch in batches:
                results = await pk.aparallel_map(score, batch, backend="process")
    """
    async with open_plain_nursery() as nursery:
        pools = ProcessPools(nursery)
        nursery.start_soon(pools._stop_idle, name="pipekit:process-pools:idle")
        token = _current.set(pools)
        try:
            yield pools
        finally:
            _current.reset(token)
            pools._close()
