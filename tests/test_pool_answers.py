"""A pool worker's answers as the pipe's reader hands them over (``receive_with``): the
results reach their run and the host in the reader's own task, and a reply that
answers nothing sent ends the worker's receive loop with a readable error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from pipekit.kernel import ProtocolError
from pipekit.workers._pool.dispatch import water_fill
from pipekit.workers._pool.queue import Flight
from pipekit.workers._pool.runs import MapRun
from pipekit.workers._pool.worker import Worker
from pipekit.workers._wire import CHUNK


class HandingPipe:
    """A worker's pipe whose reader hands ``replies`` to the waiting receiver's
    handler, one batch each, then goes quiet."""

    pid = 4242
    name = "fake"

    def __init__(self, *replies: list[Any]) -> None:
        self.replies = list(replies)
        self.tasks: set[trio.lowlevel.Task] = set()
        self.sent: list[Any] = []

    async def receive_with(self, handler: Callable[[list[Any]], int]) -> list[Any]:
        raised: list[Exception] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reader, handler, raised, nursery.cancel_scope)
            await trio.sleep_forever()
        raise raised[0]  # as FramedPipe.receive_with does with its handler's exception

    async def _reader(
        self, handler: Callable[[list[Any]], int], raised: list[Exception], scope: trio.CancelScope
    ) -> None:
        self.tasks.add(trio.lowlevel.current_task())
        while self.replies:
            batch = self.replies.pop(0)
            try:
                assert handler(batch) == len(batch)
            except Exception as exc:
                raised.append(exc)
                scope.cancel()
                return

    async def send_batch(self, requests: list[Any]) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.extend(requests)

    def kill(self) -> None:
        pass


class RecordingHost:
    """The pool's side, recording what the worker reports."""

    def __init__(self) -> None:
        self.counts: list[tuple[int, Any]] = []
        self.deaths: list[BaseException] = []
        self.tasks: set[trio.lowlevel.Task] = set()

    def answered(self, worker: Worker, count: int, timing: Any) -> None:
        self.tasks.add(trio.lowlevel.current_task())
        self.counts.append((count, timing))

    def died(self, worker: Worker, exc: BaseException) -> None:
        self.deaths.append(exc)
        worker.dead = True

    def item_failed(self, worker: Worker, index: int | None, info: Any) -> Any:
        return ("failed", index, info)


def worker_with(pipe: HandingPipe, host: RecordingHost) -> Worker:
    return Worker(host, 0, pipe, timeout=None, has_init=False, init_timeout=None)  # type: ignore[arg-type]


async def test_answers_reach_the_run_and_the_host_in_the_readers_task() -> None:
    run = MapRun()
    run.outstanding = 3
    run.wake_at = 0  # (what map sets: wake once all are in)
    pipe = HandingPipe([[CHUNK, 0, [10, 20], [], 0.5]], [[CHUNK, 2, [30], [0], 0.25]])
    host = RecordingHost()
    worker = worker_with(pipe, host)
    worker.give(Flight(0, run, 0, ["a", "b", "c"]))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.serve)
            while run.outstanding:
                await run.wait()
            nursery.cancel_scope.cancel()
    assert run.results() == [10, 20, ("failed", 2, 30)]
    assert host.counts == [(2, (2, 0.5)), (1, (1, 0.25))]
    assert host.tasks == pipe.tasks  # the reader's task: no pass through the worker's own
    assert not worker.inflight and worker.load == 0 and not host.deaths


async def test_a_reply_that_answers_nothing_sent_ends_the_receive_loop() -> None:
    run = MapRun()
    run.outstanding = 1
    pipe = HandingPipe([[CHUNK, 7, [1], [], 0.1]], [[CHUNK, 0, [2], [], 0.1]])
    host = RecordingHost()
    worker = worker_with(pipe, host)
    worker.give(Flight(0, run, 0, ["a"]))
    with trio.fail_after(10):
        await worker.serve()  # returns: the bad answer stopped it
    [death] = host.deaths
    assert isinstance(death, ProtocolError)
    assert "worker 0 (pid 4242) sent a bad answer: answer to requests 7+1" in str(death)
    assert pipe.replies == [[[CHUNK, 0, [2], [], 0.1]]]  # nothing read after it
    assert run.outstanding == 1 and host.counts == []


@pytest.mark.parametrize(
    ("loads", "caps", "expected"),
    [
        ([0], [16], [1]),
        ([3, 1, 1], [16, 16, 16], [0, 1, 0]),  # the first of the least loaded
        ([3, 16, 5], [16, 16, 16], [1, 0, 0]),  # one that is full gets nothing
        ([2, 2], [2, 2], [0, 0]),
    ],
)
def test_one_item_goes_to_the_first_least_loaded_worker_with_room(
    loads: list[int], caps: list[int], expected: list[int]
) -> None:
    assert water_fill(loads, caps, 1) == expected
