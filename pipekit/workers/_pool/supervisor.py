"""The pool's workers over its lifetime: one slot per worker process, each starting a
process and a replacement when it dies, and the accounting of what the workers report
(answers, failed items, deaths, timeouts) down to settling a dead worker's items."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import trio

from ...adapters.stdio import ProcessSpec, open_process
from ...kernel import PipekitError
from ...kernel.scopes import open_plain_nursery
from .._wire import PROGRESS_ENV
from .crashes import (
    MAX_BARREN_DEATHS,
    barren_error,
    loss_error,
    remote_cause,
    startup_error,
    triage,
)
from .dispatch import Dispatcher
from .errors import WorkerError, remote_error, unsendable_error
from .queue import Entry
from .records import ProgressRecords
from .stats import Counters
from .worker import Worker


class Supervisor:
    """Keeps ``size`` worker processes of ``spec`` running and is the
    :class:`~pipekit.workers._worker.WorkerHost` they report to.

    A worker that dies is killed (its process group) and replaced; its unanswered items
    wait until its process is reaped, then are settled from its progress record
    (:meth:`settle`). The pool fails if a worker cannot be started, if ``init`` raises,
    or after :data:`MAX_BARREN_DEATHS` fresh workers in a row died."""

    def __init__(
        self,
        spec: ProcessSpec,
        size: int,
        *,
        env: Mapping[str, str] | None,
        init: str | None,
        timeout: float | None,
        init_timeout: float | None,
        dispatcher: Dispatcher,
        counters: Counters,
    ) -> None:
        self.spec = spec
        self.size = size
        self.env = env
        self.init = init
        self.timeout = timeout
        self.init_timeout = init_timeout
        self.dispatcher = dispatcher
        self.counters = counters
        self.workers: list[Worker | None] = [None] * size
        self.progress: ProgressRecords | None = None
        self.started = trio.Event()  # every slot has had a live worker
        self.closing = False
        self.failed = False  # a slot is failing the pool
        self.barren_deaths = 0
        self.limbo = 0  # unanswered items of dead workers not yet settled

    @property
    def pids(self) -> list[int]:
        """The pids of the live workers, in slot order."""
        return [w.pid for w in self.workers if w is not None and not w.dead]

    # -- lifetime -----------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start every worker and wait for their handshakes; on the way out END idle
        workers, kill busy ones (or all, after an exception) and reap them all."""
        self.progress = ProgressRecords.create(self.size)
        try:
            async with self._workers_running():
                yield
        finally:
            if self.progress is not None:
                self.progress.close()

    @asynccontextmanager
    async def _workers_running(self) -> AsyncIterator[None]:
        async with open_plain_nursery() as nursery:
            for slot in range(self.size):
                nursery.start_soon(self._run_slot, slot, name=f"pipekit:pool:{slot}")
            await self.started.wait()
            try:
                yield
            except BaseException:
                self._shut(trio.ClosedResourceError("the worker pool was aborted"))
                nursery.cancel_scope.cancel()
                raise
            self._shut(trio.ClosedResourceError("the worker pool is closed"))
            for worker in list(self.dispatcher.live):
                if worker.inflight:
                    self.kill(worker)  # nobody waits for these results any more
                else:
                    worker.request_close()

    def _shut(self, error: BaseException) -> None:
        self.closing = True
        self.dispatcher.close(error)

    def _slot_spec(self, slot: int) -> ProcessSpec:
        """The spec of the next worker in ``slot``: with its progress record, reset."""
        progress = self.progress
        if progress is None:
            return self.spec
        progress.reset(slot)
        env = dict(os.environ if self.env is None else self.env)
        env[PROGRESS_ENV] = progress.where(slot)
        return replace(self.spec, env=env)

    async def _run_slot(self, slot: int) -> None:
        while not self.closing:
            worker: Worker | None = None
            try:
                async with open_process(self._slot_spec(slot)) as pipe:
                    worker = Worker(
                        self,
                        slot,
                        pipe,
                        timeout=self.timeout,
                        has_init=self.init is not None,
                        init_timeout=self.init_timeout,
                    )
                    self._register(worker)
                    await worker.serve()
            except (PipekitError, trio.BrokenResourceError) as exc:
                if worker is None:  # cannot start a worker: the pool fails
                    if self.failed:
                        return  # another slot already fails the pool
                    self.failed = True
                    raise
                if not worker.dead:
                    self.died(worker, exc)
            if worker is not None:
                self._unregister(worker)
                if worker.dead:
                    self.settle(worker)  # the process is gone: its record is final
            if worker is not None and worker.fatal is not None:
                if self.failed:
                    return  # another slot already fails the pool
                self.failed = True
                raise worker.fatal
            if self.closing:
                return

    def _register(self, worker: Worker) -> None:
        self.workers[worker.slot] = worker
        dispatcher = self.dispatcher
        dispatcher.join(worker)
        if not self.started.is_set() and len(dispatcher.live) == self.size:
            self.started.set()
        if self.closing:
            worker.request_close()
        else:
            dispatcher.dispatch()

    def _unregister(self, worker: Worker) -> None:
        if self.workers[worker.slot] is worker:
            self.workers[worker.slot] = None
        self.dispatcher.leave(worker)

    # -- what the workers report (WorkerHost) -------------------------------------------

    def answered(self, worker: Worker, count: int, timing: tuple[int, float] | None) -> None:
        sizer = self.dispatcher.sizer
        if timing is not None and sizer.adaptive:
            sizer.learn(timing[0], timing[1], worker.bytes_per_item(count))
        self.counters.completed += count
        self.barren_deaths = 0
        self.dispatcher.dispatch()

    def item_failed(self, worker: Worker, index: int | None, info: Any) -> WorkerError:
        self.counters.errors += 1
        return remote_error(info, index, worker.pid)

    def oversize_chunk(self, items: int) -> None:
        self.dispatcher.sizer.frame_overflow(items)

    def unsendable(self, worker: Worker, entry: Entry, exc: BaseException) -> None:
        self.deliver_error(entry, unsendable_error(exc, entry[1], worker.pid))
        self.dispatcher.dispatch()

    def died(self, worker: Worker, exc: BaseException) -> None:
        """The worker's channel broke: it crashed (or, rarely, misbehaved). Its items are
        settled once the process is reaped (:meth:`settle`)."""
        if worker.dead:
            return
        remote = remote_cause(exc)
        if (
            worker.answered == 0
            and remote is not None
            and remote.kind not in ("SystemExit", "KeyboardInterrupt")
        ):
            # INIT raised (or the runtime failed before serving): nothing an item did.
            fatal = startup_error(worker, remote, exc, self.init)
            self.dispatcher.requeue(
                [entry for flight in worker.take_flights() for entry in flight.unanswered()]
            )
            self.kill(worker, fatal=fatal)
            return
        self.counters.crashes += 1
        barren: WorkerError | None = None
        if worker.answered == 0:
            self.barren_deaths += 1
            if self.barren_deaths >= MAX_BARREN_DEATHS:
                barren = barren_error(worker, exc)
        self.kill(worker, fatal=barren, loss=exc)
        self.dispatcher.dispatch()

    def timed_out(self, worker: Worker, allowance: float) -> None:
        if worker.dead:
            return
        self.counters.timeouts += 1
        self.kill(worker, timed_out=allowance)
        self.dispatcher.dispatch()

    # -- dead workers -------------------------------------------------------------------

    def kill(
        self,
        worker: Worker,
        *,
        fatal: BaseException | None = None,
        loss: BaseException | None = None,
        timed_out: float | None = None,
    ) -> None:
        """Stop using ``worker`` and SIGKILL its process group (``fatal``, ``loss``,
        ``timed_out``: why, see :meth:`Worker.kill`); its slot starts a replacement
        unless the pool is closing. Its unanswered items wait for :meth:`settle`."""
        worker.kill(fatal=fatal, loss=loss, timed_out=timed_out)
        if not self.closing and worker.fatal is None:
            self.counters.replacements += 1
        self.dispatcher.leave(worker)
        self.limbo += worker.load

    def settle(self, worker: Worker) -> None:
        """Decide what becomes of the unanswered items of ``worker``, which died or was
        killed and whose process is reaped, from its progress record (see
        :func:`~pipekit.workers._crashes.triage`). A single unanswered item is the
        culprit at once."""
        load = worker.load
        flights = worker.take_flights()
        self.limbo -= load
        if self.closing:
            return
        dispatcher = self.dispatcher
        program = self.spec.argv[0]
        if sum(len(flight.items) - flight.done for flight in flights) == 1:
            # A single unanswered item is the culprit (whatever the record says: with
            # max_inflight=1, no item runs twice).
            entry = next(e for flight in flights for e in flight.unanswered())
            if not entry[0].cancelled:
                self.deliver_error(entry, loss_error(worker, entry[1], program))
            dispatcher.dispatch()
            return
        record = self.progress.read(worker.slot) if self.progress is not None else None
        again, suspects, lost = triage(flights, record)
        for entry in lost:
            self.deliver_error(entry, loss_error(worker, entry[1], program, again=True))
        if suspects:
            self.counters.retried += len(suspects)
            dispatcher.isolate(suspects)
        if again:
            dispatcher.put_back(again)
            self.counters.retried += sum(len(segment) for segment in again)
        dispatcher.dispatch()

    def deliver_error(self, entry: Entry, error: WorkerError) -> None:
        """Complete the item ``entry`` with the error value ``error``."""
        self.counters.errors += 1
        self.counters.completed += 1
        entry[0].complete(entry[1], error)
