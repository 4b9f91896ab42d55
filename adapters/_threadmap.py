"""The thread adapter's ``map`` mode: a per-message function in several worker threads,
fed batches by least load, its results re-sequenced (unless unordered)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from ..kernel.lane import Lane
from ..kernel.modules import batch_failure, process_batch
from ..kernel.pipe import LocalPipe, Pipe
from ._threadrunner import ThreadRunner

__all__ = ["run_map"]


async def run_map(
    fn: Callable[[Any], Any],
    inp: Pipe,
    out: Pipe,
    runner: ThreadRunner,
    *,
    workers: int,
    ordered: bool,
    batch_size: int,
) -> None:
    """Run ``fn`` on every message from ``inp`` in ``workers`` threads of ``runner``,
    sending the results to ``out``.

    Batches (of at most ``batch_size``) go to the least-loaded worker thread; results
    come back tagged with their batch number and are re-sequenced (if ``ordered``). When
    ``fn`` fails, nothing new is dispatched, every batch in flight is finished and
    delivered, and then the first error is raised: only the failing messages are
    lost."""
    n = workers
    work = [Lane(2) for _ in range(n)]  # items: (seq, batch)
    results = Lane(2 * n, writers=n)  # items: (seq, results, errors)
    runner.watch(*work, results)
    abort = runner.abort
    load = [0] * n  # batches dispatched to each worker and not yet collected
    # At most this many batches in flight per worker (one being processed, one
    # queued), so a put into a work lane never blocks: the dispatcher must never
    # wait behind a worker that is stuck while another one is idle.
    per_worker = 2
    # Ordered results wait for their predecessors; with one worker stuck the others
    # may run ahead by at most this many batches, so the reorder buffer is bounded.
    window = 4 * n
    delivered = [0]  # batches delivered in order so far
    slot_freed = [trio.Event()]
    worker_of: dict[int, int] = {}
    failure: list[Exception] = []

    def worker(lane: Lane) -> None:
        try:
            while True:
                try:
                    jobs = lane.get_many_blocking(1, abort)
                except trio.EndOfChannel:
                    return
                done = [(seq, *process_batch(fn, batch)) for seq, batch in jobs]
                results.put_many_blocking(done, abort)
        finally:
            results.end_writer()

    for i, lane in enumerate(work):
        runner.start(lambda lane=lane: worker(lane), str(i))  # type: ignore[misc]

    async def dispatch(scope: trio.CancelScope) -> None:
        in_lane = inp.receive_lane if isinstance(inp, LocalPipe) else None
        seq = 0
        try:
            with scope:
                while True:
                    try:
                        batch = await inp.receive_batch(batch_size)
                    except trio.EndOfChannel:
                        break
                    try:
                        while min(load) >= per_worker or (
                            ordered and seq - delivered[0] >= window
                        ):  # every worker is busy, or the reorder window is full
                            slot_freed[0] = trio.Event()
                            await slot_freed[0].wait()
                        k = min(range(n), key=load.__getitem__)
                        await work[k].put((seq, batch))
                    except BaseException:
                        if isinstance(inp, LocalPipe) and in_lane is not None:
                            in_lane.unget(batch)  # never reached a worker: not lost
                            inp.add_counts(received=-len(batch))  # nor received
                        raise
                    load[k] += 1
                    worker_of[seq] = k
                    seq += 1
        finally:
            for lane in work:
                lane.end_writer()

    async def deliver(res: list[Any], errs: list[Exception], scope: trio.CancelScope) -> None:
        if res:
            await out.send_batch(res)
        if errs and not failure:
            failure.append(batch_failure(errs))
            scope.cancel()

    async def collect(scope: trio.CancelScope) -> None:
        pending: dict[int, tuple[list[Any], list[Exception]]] = {}
        next_seq = 0
        while True:
            try:
                items = await results.get_many()
            except trio.EndOfChannel:
                return
            for seq, res, errs in items:
                load[worker_of.pop(seq)] -= 1
                slot_freed[0].set()
                if ordered:
                    pending[seq] = (res, errs)
                else:
                    await deliver(res, errs, scope)
            while next_seq in pending:
                res, errs = pending.pop(next_seq)
                next_seq += 1
                await deliver(res, errs, scope)
                delivered[0] = next_seq
                slot_freed[0].set()

    dispatcher = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dispatch, dispatcher)
        nursery.start_soon(collect, dispatcher)
    await runner.wait()
    if failure:
        raise failure[0]
