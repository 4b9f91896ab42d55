"""The thread adapter's ``map`` mode: a per-message function in several worker threads
that take chunks of messages from one queue, chunks sized from the measured time per
message, results re-sequenced (unless unordered); a failure names the message it
failed on."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from ..kernel.lane import Lane
from ..kernel.modules import batch_failure
from ..kernel.pipe import LocalPipe, Pipe
from ._threadrunner import ThreadRunner

__all__ = ["CHUNK_SECONDS", "ChunkPlan", "MapTally", "Tally", "run_map"]

CHUNK_SECONDS = 0.002
"""A chunk holds about this much work (seconds per message, as the threads measure it,
times its length): cheap messages travel by the hundred, and a message slower than this
travels alone, so every thread has work and a failure surfaces within milliseconds."""

_Job = tuple[int, int, list[Any]]  # (chunk number, index of its first message, messages)
_Failed = tuple[int, Any] | None  # (index, message) of a chunk's first failed message


class Tally(Protocol):
    """Where a map module is in its input, over all its runs (restarts included): a
    pipeline passes its stage's meter.

    Example::

        tally = MapTally()
        ThreadModule(parse, workers=4, tally=tally)   # after a failure: tally.failed
    """

    taken: int
    """Messages the threads took from the input (those given back are not)."""

    def fail(self, index: int, item: Any) -> None:
        """The module is failing on ``item``, the input's message ``index`` (from 0)."""


class MapTally:
    """The plain :class:`Tally`: ``failed`` is ``(index, message)`` of the message the
    module last failed on, or ``None``.

    Example::

        tally = MapTally()
        tally.fail(3, "x")
        assert tally.failed == (3, "x")
    """

    __slots__ = ("failed", "taken")

    def __init__(self) -> None:
        self.taken = 0
        self.failed: tuple[int, Any] | None = None

    def fail(self, index: int, item: Any) -> None:
        self.failed = (index, item)


class ChunkPlan:
    """How many messages the next chunk holds: one until the threads have timed a
    chunk, then about :data:`CHUNK_SECONDS` of work, at most ``most``. The estimate is a
    geometric moving average of the measured seconds per message, so it follows a change
    of pace within a few chunks."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.item_seconds: float | None = None
        self.size = 1

    def learn(self, items: int, seconds: float) -> None:
        """``items`` messages just took ``seconds`` of a thread's time."""
        if items <= 0:
            return
        sample = max(seconds / items, 1e-9)
        old = self.item_seconds
        self.item_seconds = sample if old is None else (old * sample) ** 0.5
        self.size = max(1, min(self.most, int(CHUNK_SECONDS / self.item_seconds)))


class _Chunks:
    """The chunks waiting for a worker thread: one FIFO that every thread takes from (so
    an idle thread always gets the next chunk), fed from the trio thread. Once
    :meth:`stop` is called (a chunk failed), no thread takes another chunk."""

    def __init__(self) -> None:
        self._jobs: deque[_Job] = deque()
        self._lock = threading.Lock()
        self._waiters: deque[threading.Event] = deque()
        self._ended = False
        self.stopped = False

    def put(self, job: _Job) -> None:
        with self._lock:
            self._jobs.append(job)
            if self._waiters:
                self._waiters.popleft().set()

    def _wake_all(self) -> None:
        for waiter in self._waiters:
            waiter.set()
        self._waiters.clear()

    def end(self) -> None:
        """No more chunks: threads finish what is queued, then see the end."""
        with self._lock:
            self._ended = True
            self._wake_all()

    def stop(self) -> None:
        """Take nothing more: queued chunks stay for :meth:`drain`."""
        with self._lock:
            self.stopped = True
            self._wake_all()

    def wake_all(self) -> None:
        """Wake every waiting thread to re-check its abort flag."""
        with self._lock:
            self._wake_all()

    def get_many_blocking(self, abort: threading.Event) -> list[_Job]:
        """The next chunk (in a list of one), or ``[]`` at the end or once stopped;
        raises :class:`trio.ClosedResourceError` once ``abort`` is set."""
        while True:
            with self._lock:
                if abort.is_set():
                    raise trio.ClosedResourceError("interrupted: the module is being stopped")
                if self.stopped:
                    return []
                if self._jobs:
                    return [self._jobs.popleft()]
                if self._ended:
                    return []
                waiter = threading.Event()
                self._waiters.append(waiter)
            waiter.wait()

    def drain(self) -> list[_Job]:
        """Every chunk no thread took, in order."""
        with self._lock:
            jobs = list(self._jobs)
            self._jobs.clear()
            return jobs


def _apply(fn: Callable[[Any], Any], batch: list[Any]) -> tuple[list[Any], list[Exception], int]:
    """``fn`` on each message of ``batch``, in order: ``(results, errors, first)``, where
    ``first`` is the place in ``batch`` of the first message whose call raised (-1 if
    none). As :func:`~pipekit.kernel.modules.process_batch`, at the same cost per
    message: the failures are counted only when they happen."""
    out: list[Any] = []
    errors: list[Exception] = []
    first = -1
    append = out.append
    for msg in batch:
        try:
            append(fn(msg))
        except Exception as exc:
            if not errors:
                first = len(out)
            errors.append(exc)
    return out, errors, first


async def run_map(
    fn: Callable[[Any], Any],
    inp: Pipe,
    out: Pipe,
    runner: ThreadRunner,
    *,
    workers: int,
    ordered: bool,
    batch_size: int,
    tally: Tally | None = None,
) -> None:
    """Run ``fn`` on every message from ``inp`` in ``workers`` threads of ``runner``,
    sending the results to ``out``.

    The messages are cut into chunks (see :class:`ChunkPlan`; at most ``batch_size``)
    that the threads take from one queue; results come back tagged with their chunk
    number and are re-sequenced (if ``ordered``). At most two chunks per thread are out
    at once, and an ordered map runs at most ``4 * workers`` chunks ahead of the oldest
    one not yet delivered, so memory stays bounded behind a stuck thread.

    When ``fn`` fails, the thread that ran it stops every thread from taking another
    chunk; the chunks already started are finished and delivered, and then the first
    error in input order is raised (after ``tally.fail(index, message)``, the message's
    place in the input over every run): only the failing messages are lost. What no
    thread took goes back to the input (an in-process pipe), in order, for a restart;
    ``tally.taken`` counts the rest."""
    n = workers
    tally = tally if tally is not None else MapTally()
    chunks = _Chunks()
    results = Lane(2 * n, writers=n)  # (seq, results, errors, failed, messages, seconds)
    runner.watch(results)
    runner.on_interrupt(chunks.wake_all)
    abort = runner.abort
    plan = ChunkPlan(max(1, batch_size))
    most_out = 2 * n  # chunks queued or running, at most
    window = 4 * n  # an ordered map runs at most this many chunks ahead
    state = _State()

    def worker() -> None:
        get, put = chunks.get_many_blocking, results.put_many_blocking
        clock = time.perf_counter
        try:
            while True:
                jobs = get(abort)
                if not jobs:
                    return
                seq, index, batch = jobs[0]
                start = clock()
                res, errs, first = _apply(fn, batch)
                seconds = clock() - start
                failed: _Failed = None
                if errs:
                    chunks.stop()  # before anyone takes another chunk
                    failed = (index + first, batch[first])
                put([(seq, res, errs, failed, len(batch), seconds)], abort)
        except BaseException:
            chunks.stop()  # the runner reports it; nobody else takes more meanwhile
            raise
        finally:
            results.end_writer()

    for i in range(n):
        runner.start(worker, str(i))

    # What the dispatcher holds: a batch received from ``inp``, of which ``held[pos:]``
    # is not yet in a chunk; ``index``: the input index of the next message to chunk.
    held: list[Any] = []
    pos = 0
    index = tally.taken

    async def dispatch(scope: trio.CancelScope) -> None:
        nonlocal held, pos, index
        seq = 0
        try:
            with scope:
                while True:
                    if pos >= len(held):
                        held, pos = [], 0
                        try:
                            held = await inp.receive_batch(batch_size)
                        except trio.EndOfChannel:
                            break
                    while state.out >= most_out or (ordered and seq - state.delivered >= window):
                        state.freed = trio.Event()
                        await state.freed.wait()
                    chunk = held[pos : pos + plan.size]
                    chunks.put((seq, index, chunk))
                    pos += len(chunk)
                    index += len(chunk)
                    state.out += 1
                    seq += 1
        finally:
            chunks.end()

    async def deliver(
        res: list[Any], errs: list[Exception], failed: _Failed, scope: trio.CancelScope
    ) -> None:
        if res:
            await out.send_batch(res)
        if failed is not None:
            # The first in input order: unordered chunks may come back in any order.
            if state.failure is None or failed[0] < state.failure[0][0]:
                state.failure = (failed, errs)
            scope.cancel()

    async def collect(scope: trio.CancelScope) -> None:
        pending: dict[int, tuple[list[Any], list[Exception], _Failed]] = {}
        next_seq = 0
        while True:
            try:
                items = await results.get_many()
            except trio.EndOfChannel:  # every thread is done: nothing more will be taken
                scope.cancel()
                return
            for seq, res, errs, failed, count, seconds in items:
                state.out -= 1
                plan.learn(count, seconds)
                state.freed.set()
                if ordered:
                    pending[seq] = (res, errs, failed)
                else:
                    await deliver(res, errs, failed, scope)
            while next_seq in pending:
                res, errs, failed = pending.pop(next_seq)
                next_seq += 1
                await deliver(res, errs, failed, scope)
                state.delivered = next_seq
                state.freed.set()

    dispatcher = trio.CancelScope()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dispatch, dispatcher)
            nursery.start_soon(collect, dispatcher)
        await runner.wait()
    finally:
        # Never taken by a thread, so neither lost nor received: back to the input.
        chunks.stop()
        given_back = [msg for _, _, batch in chunks.drain() for msg in batch]
        tally.taken = index - len(given_back)
        _give_back(inp, given_back + held[pos:])
    if state.failure is not None:
        (failed_index, failed_item), errs = state.failure
        tally.fail(failed_index, failed_item)
        raise batch_failure(errs)


class _State:
    """What the dispatcher and the collector share."""

    def __init__(self) -> None:
        self.out = 0  # chunks queued or running
        self.delivered = 0  # chunks delivered in order so far
        self.freed = trio.Event()  # set when a chunk comes back or is delivered
        self.failure: tuple[tuple[int, Any], list[Exception]] | None = None
        """The first failure in input order: ``((index, message), errors)``."""


def _give_back(inp: Pipe, messages: Sequence[Any]) -> None:
    if messages and isinstance(inp, LocalPipe) and inp.receive_lane is not None:
        inp.receive_lane.unget(messages)
        inp.add_counts(received=-len(messages))
