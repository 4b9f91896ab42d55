"""The program's own process pools: a :class:`ProcessPools` in a trio run on a thread of
its own, so that warm workers outlive the trio run of one ``parallel_map`` call.

Each blocking ``parallel_map`` call runs its own trio loop, and a trio loop's processes
end with it; so the pools live in one long-lived loop (a daemon thread started by the
first call), and calls hand it their work (``TrioToken.run_sync_soon`` both ways: no
thread per call). The thread is the pools' owner, as an ``async with`` block would be:
:func:`shutdown_pools`, the interpreter's exit (``atexit``) and a fork (the child gets
none of it) end it, and it ENDs idle workers, kills busy ones and reaps them all before
it returns. A worker whose parent process dies without that (SIGKILL) stops by itself
(the workers' parent-death signal).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import trio

from ._pools import ProcessPools, process_pools
from ._result import Result

__all__ = ["map_shared", "shutdown_pools"]

_SHUTDOWN_WAIT = 30.0
"""Seconds :func:`shutdown_pools` waits for the pools' thread (workers are ENDed, and a
busy one is killed after its ``kill_grace``)."""


class _Job:
    """One call handed to the pools' thread."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        workers: tuple[int, int],
        limit: float | None,
        fail_fast: bool,
        idle: float,
        done: Callable[[], None],
    ) -> None:
        self.args = (fn, items, workers, limit, fail_fast, idle)
        self.done = done  # called (on the pools' thread) when the call has ended
        self.out: dict[int, Result[Any]] = {}
        self.error: BaseException | None = None
        self.scope = trio.CancelScope()

    async def run(self, pools: ProcessPools) -> None:
        try:
            with self.scope:
                await pools.map(*self.args, self.out)
                return
            self.error = trio.ClosedResourceError("the process pools were shut down")
        except Exception as exc:  # the caller's, raised in its own thread
            self.error = exc
        finally:
            self.done()


class _Service:
    """The thread that owns the program's process pools."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.started = threading.Event()
        self.token: trio.lowlevel.TrioToken | None = None
        self.error: BaseException | None = None
        self._pools: ProcessPools | None = None
        self._jobs: set[_Job] = set()
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self.thread = threading.Thread(target=self._main, name="pipekit:process-pools", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.started.wait()
        if self.token is None:
            raise RuntimeError("the process pools' thread did not start") from self.error

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported by start()
            self.error = exc
        finally:
            self.token = None
            self.started.set()

    async def _serve(self) -> None:
        async with process_pools() as pools, trio.open_nursery() as jobs:
            self._pools, self._nursery, self._stop = pools, jobs, trio.Event()
            self.token = trio.lowlevel.current_trio_token()
            self.started.set()
            await self._stop.wait()
            for job in self._jobs:  # calls still running get a ClosedResourceError
                job.scope.cancel()

    # -- on the pools' thread (through run_sync_soon) ------------------------------------

    def _submit(self, job: _Job) -> None:
        assert self._nursery is not None and self._pools is not None
        if self._stop is not None and self._stop.is_set():
            job.error = trio.ClosedResourceError("the process pools were shut down")
            job.done()
            return
        self._jobs.add(job)
        self._nursery.start_soon(self._run_job, job)

    async def _run_job(self, job: _Job) -> None:
        assert self._pools is not None
        try:
            await job.run(self._pools)
        finally:
            self._jobs.discard(job)

    def _shutdown(self) -> None:
        if self._stop is not None:
            self._stop.set()

    # -- from any other thread ------------------------------------------------------------

    def submit(self, job: _Job) -> None:
        token = self.token
        if token is None:
            raise trio.ClosedResourceError("the process pools were shut down")
        try:
            token.run_sync_soon(self._submit, job)
        except trio.RunFinishedError:
            raise trio.ClosedResourceError("the process pools were shut down") from None

    def cancel(self, job: _Job) -> None:
        token = self.token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(job.scope.cancel)

    def pids(self) -> dict[str, list[int]]:
        token = self.token
        pools = self._pools
        if token is None or pools is None:
            return {}
        try:
            return trio.from_thread.run_sync(lambda: pools.pids, trio_token=token)
        except trio.RunFinishedError:
            return {}

    def shutdown(self, wait: float) -> None:
        token = self.token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._shutdown)
        if self.thread is not threading.current_thread():
            self.thread.join(wait)


_lock = threading.Lock()
_service: _Service | None = None


def _running() -> _Service:
    """The program's pools' thread, started if there is none (or it ended)."""
    global _service
    service = _service
    if service is not None and service.token is not None and service.pid == os.getpid():
        return service
    with _lock:
        service = _service
        if service is None or service.token is None or service.pid != os.getpid():
            service = _Service()
            service.start()
            _service = service
        return service


def shutdown_pools() -> None:
    """Stop the worker processes the process backend keeps warm between calls: idle
    ones are ENDed, busy ones killed, all reaped before this returns (a call still
    running in another thread gets a ``trio.ClosedResourceError``). The next call starts
    new ones. Runs by itself at the interpreter's exit; blocks, so inside trio use
    ``await trio.to_thread.run_sync(shutdown_pools)``.

    Example::

        results = pk.parallel_map(score, batch, backend="process")   # starts workers
        pipekit.concurrency.shutdown_pools()                           # stops them
    """
    global _service
    with _lock:
        service, _service = _service, None
    if service is not None and service.pid == os.getpid():
        service.shutdown(_SHUTDOWN_WAIT)


def shared_pids() -> dict[str, list[int]]:
    """The worker pids of the program's warm pools, by target (``"module:function"``)."""
    service = _service
    if service is None or service.pid != os.getpid():
        return {}
    return service.pids()


def _forget_after_fork() -> None:
    """In a forked child: the parent's pools are not ours (no thread serves them here)."""
    global _service, _lock
    _service = None
    _lock = threading.Lock()


atexit.register(shutdown_pools)
os.register_at_fork(after_in_child=_forget_after_fork)


def map_blocking(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    workers: tuple[int, int],
    limit: float | None,
    fail_fast: bool,
    idle: float,
    out: dict[int, Result[Any]],
) -> None:
    """One call on the program's pools from a thread outside trio; waits for it (an
    interrupt, such as Ctrl+C, cancels the call and is raised once it has ended)."""
    finished = threading.Event()
    job = _Job(fn, items, workers, limit, fail_fast, idle, finished.set)
    service = _running()
    service.submit(job)
    try:
        finished.wait()
    except BaseException:
        service.cancel(job)
        finished.wait()
        raise
    out.update(job.out)
    if job.error is not None:
        raise job.error


async def map_shared(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    workers: tuple[int, int],
    limit: float | None,
    fail_fast: bool,
    idle: float,
    out: dict[int, Result[Any]],
) -> None:
    """One call on the program's pools from a trio run (not theirs); cancelling it
    cancels the call, and returns once the call has ended there."""
    service = _service
    if service is None or service.token is None or service.pid != os.getpid():
        service = await trio.to_thread.run_sync(_running)
    caller = trio.lowlevel.current_trio_token()
    finished = trio.Event()
    job = _Job(
        fn, items, workers, limit, fail_fast, idle, lambda: caller.run_sync_soon(finished.set)
    )
    service.submit(job)
    try:
        await finished.wait()
    except BaseException:
        service.cancel(job)
        with trio.CancelScope(shield=True):
            await finished.wait()
        raise
    out.update(job.out)
    if job.error is not None:
        raise job.error
