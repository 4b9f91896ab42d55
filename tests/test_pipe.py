"""In-process pipes: ``open_pipe_pair``, ``LocalPipe`` and the ``Lane`` under them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from pipekit.kernel import (
    Lane,
    LocalPipe,
    PipekitError,
    RemoteError,
    open_pipe_pair,
)

HANG_GUARD = 5  # seconds; a guard against hangs, never used to synchronise


class Producer:
    """Sends ``count`` messages (or forever) and remembers how many sends returned."""

    def __init__(self, pipe: LocalPipe, messages: Any) -> None:
        self.pipe = pipe
        self.messages = messages
        self.sent = 0
        self.finished = False
        self.error: BaseException | None = None

    async def run(self) -> None:
        try:
            for msg in self.messages:
                await self.pipe.send(msg)
                self.sent += 1
            self.finished = True
        except trio.BrokenResourceError as exc:
            self.error = exc


# -- ordering and the Channel contract ---------------------------------------------------


async def test_messages_arrive_in_order_with_send_and_receive() -> None:
    a, b = open_pipe_pair(capacity=8)
    received: list[int] = []

    async def consume() -> None:
        async for msg in b:
            received.append(msg)

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            for i in range(1000):
                await a.send(i)
            await a.end()
    assert received == list(range(1000))


async def test_messages_arrive_in_order_with_send_batch_and_receive_batch() -> None:
    a, b = open_pipe_pair(capacity=64)
    received: list[int] = []

    async def consume() -> None:
        async for batch in b.batches(max_items=10):
            assert 1 <= len(batch) <= 10
            received.extend(batch)

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            for start in range(0, 1000, 100):
                await a.send_batch(list(range(start, start + 100)))
            await a.end()
    assert received == list(range(1000))


async def test_objects_are_passed_by_reference() -> None:
    a, b = open_pipe_pair()
    obj: dict[str, list[int]] = {"x": [1, 2]}
    await a.send(obj)
    assert await b.receive() is obj


async def test_both_directions_are_independent() -> None:
    a, b = open_pipe_pair()
    await a.send("to b")
    await b.send("to a")
    assert await b.receive() == "to b"
    assert await a.receive() == "to a"


async def test_receive_after_peer_end_raises_end_of_channel() -> None:
    a, b = open_pipe_pair()
    await a.send(1)
    await a.end()
    assert await b.receive() == 1
    with pytest.raises(trio.EndOfChannel):
        await b.receive()
    with pytest.raises(trio.EndOfChannel):
        await b.receive()


async def test_blocked_receive_is_woken_by_end() -> None:
    a, b = open_pipe_pair()
    outcome: list[str] = []

    async def consume() -> None:
        try:
            await b.receive()
        except trio.EndOfChannel:
            outcome.append("end")

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            assert outcome == []
            await a.end()
    assert outcome == ["end"]


async def test_send_after_end_raises_closed_resource_error() -> None:
    a, _b = open_pipe_pair()
    await a.end()
    with pytest.raises(trio.ClosedResourceError):
        await a.send(1)
    with pytest.raises(trio.ClosedResourceError):
        await a.send_batch([1, 2])


async def test_end_is_idempotent() -> None:
    a, b = open_pipe_pair()
    await a.send("x")
    await a.end()
    await a.end()
    assert await b.receive() == "x"
    with pytest.raises(trio.EndOfChannel):
        await b.receive()


async def test_half_close_leaves_the_other_direction_open() -> None:
    a, b = open_pipe_pair()
    await a.end()
    with pytest.raises(trio.EndOfChannel):
        await b.receive()
    await b.send("reply")
    await b.end()
    assert await a.receive() == "reply"
    with pytest.raises(trio.EndOfChannel):
        await a.receive()


async def test_fail_raises_remote_error_in_peer_after_earlier_messages() -> None:
    a, b = open_pipe_pair()
    original = ValueError("bad input")
    await a.send(1)
    await a.send(2)
    await a.fail(original)
    assert await b.receive() == 1
    assert await b.receive() == 2
    with pytest.raises(RemoteError) as info:
        await b.receive()
    assert info.value.kind == "ValueError"
    assert info.value.message == "bad input"
    assert info.value.__cause__ is original
    assert isinstance(info.value, trio.BrokenResourceError)


async def test_fail_with_a_pipekit_error_passes_it_through_unwrapped() -> None:
    a, b = open_pipe_pair()
    original = PipekitError("typed")
    await a.fail(original)
    with pytest.raises(PipekitError) as info:
        await b.receive()
    assert info.value is original


async def test_send_after_fail_raises_closed_resource_error() -> None:
    a, _b = open_pipe_pair()
    await a.fail(ValueError("x"))
    with pytest.raises(trio.ClosedResourceError):
        await a.send(1)


async def test_aclose_ends_our_direction_and_breaks_the_peers_sends() -> None:
    a, b = open_pipe_pair()
    await b.aclose()
    with pytest.raises(trio.EndOfChannel):
        await a.receive()
    with pytest.raises(trio.BrokenResourceError):
        await a.send(1)


async def test_use_after_aclose_raises_closed_resource_error() -> None:
    a, _b = open_pipe_pair()
    await a.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await a.send(1)
    with pytest.raises(trio.ClosedResourceError):
        await a.receive()
    await a.aclose()  # idempotent


async def test_aclose_by_consumer_wakes_a_blocked_producer_with_broken_resource() -> None:
    a, b = open_pipe_pair(capacity=4)
    producer = Producer(a, range(100))
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer.run)
            await trio.testing.wait_all_tasks_blocked()
            assert producer.sent == 4
            await b.aclose()
    assert isinstance(producer.error, trio.BrokenResourceError)
    assert producer.sent == 4


async def test_second_concurrent_receiver_raises_busy_resource_error() -> None:
    _a, b = open_pipe_pair()
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.receive)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await b.receive()
            nursery.cancel_scope.cancel()


async def test_receive_only_end_cannot_send() -> None:
    lane = Lane(4)
    pipe = LocalPipe(lane, ())
    with pytest.raises(trio.ClosedResourceError):
        await pipe.send(1)


async def test_send_only_end_cannot_receive() -> None:
    pipe = LocalPipe(None, (Lane(4),))
    with pytest.raises(trio.ClosedResourceError):
        await pipe.receive()


# -- backpressure and bounded memory -----------------------------------------------------


async def test_producer_blocks_once_capacity_messages_are_buffered() -> None:
    a, b = open_pipe_pair(capacity=100)
    producer = Producer(a, range(1000))
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer.run)
            await trio.testing.wait_all_tasks_blocked()
            assert producer.sent == 100
            assert not producer.finished
            assert b.stats.queue_depth == 100
            nursery.cancel_scope.cancel()


async def test_send_batch_blocks_without_exceeding_capacity() -> None:
    a, b = open_pipe_pair(capacity=100)
    finished = trio.Event()

    async def produce() -> None:
        await a.send_batch(list(range(250)))
        finished.set()

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            await trio.testing.wait_all_tasks_blocked()
            assert b.stats.queue_depth == 100
            assert not finished.is_set()
            received: list[int] = []
            while len(received) < 250:
                received.extend(await b.receive_batch())
                assert b.stats.queue_depth <= 100
            await finished.wait()
    assert received == list(range(250))


async def test_blocked_producer_resumes_only_at_low_water() -> None:
    a, b = open_pipe_pair(capacity=100)  # low water: 50
    producer = Producer(a, range(1000))
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer.run)
            await trio.testing.wait_all_tasks_blocked()
            assert producer.sent == 100
            for _ in range(49):
                await b.receive()
            await trio.testing.wait_all_tasks_blocked()
            assert producer.sent == 100  # 51 queued: still above low water
            await b.receive()
            await trio.testing.wait_all_tasks_blocked()
            assert producer.sent == 150  # refilled to capacity, blocked again
            assert b.stats.queue_depth == 100
            nursery.cancel_scope.cancel()


async def test_end_after_backpressure_still_delivers_every_earlier_message() -> None:
    a, b = open_pipe_pair(capacity=16)
    producer_done = trio.Event()

    async def produce() -> None:
        for i in range(100):
            await a.send(i)
        await a.end()
        producer_done.set()

    received: list[int] = []
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            await trio.testing.wait_all_tasks_blocked()
            assert b.stats.queue_depth == 16
            assert not producer_done.is_set()
            while True:
                try:
                    received.append(await b.receive())
                except trio.EndOfChannel:
                    break
    assert received == list(range(100))
    assert producer_done.is_set()


async def test_paused_seconds_counts_time_blocked_on_a_full_pipe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = open_pipe_pair(capacity=10)

    async def produce() -> None:
        for i in range(20):
            await a.send(i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(5)  # virtual time the producer spends blocked
        for _ in range(20):
            await b.receive()
    assert a.stats.paused_seconds == pytest.approx(5.0)


async def test_stalled_consumer_offered_a_million_messages_keeps_rss_flat(
    rss: Callable[[], int],
) -> None:
    a, b = open_pipe_pair()  # default capacity
    # A lazily generated stream of distinct ~100-byte objects: ~130 MB if buffered.
    producer = Producer(a, (i.to_bytes(8, "big") * 12 for i in range(1_000_000)))
    before = rss()
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer.run)
            await trio.testing.wait_all_tasks_blocked()
            grown = rss() - before
            assert producer.sent == a.send_lanes[0].capacity
            assert b.stats.queue_depth == a.send_lanes[0].capacity
            nursery.cancel_scope.cancel()
    assert grown < 20 * 1024 * 1024


# -- stats ----------------------------------------------------------------------------


async def test_stats_count_messages_each_way() -> None:
    a, b = open_pipe_pair()
    for i in range(7):
        await a.send(i)
    await a.send_batch([1, 2, 3])
    await b.send("r")
    for _ in range(4):
        await b.receive()
    await b.receive_batch()
    assert a.stats.messages_sent == 10
    assert b.stats.messages_received == 10
    assert b.stats.messages_sent == 1
    assert a.stats.queue_depth == 1
    assert b.stats.queue_depth == 0
    assert a.stats.bytes_sent == 0  # objects travel by reference


# -- lanes: split, merge, threads --------------------------------------------------------


async def test_split_pipe_delivers_every_message_to_every_lane_in_order() -> None:
    lanes = [Lane(8), Lane(8), Lane(8)]
    sender = LocalPipe(None, lanes)
    receivers = [LocalPipe(lane, ()) for lane in lanes]
    results: list[list[int]] = [[], [], []]

    async def consume(i: int) -> None:
        async for msg in receivers[i]:
            results[i].append(msg)

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(consume, i)
            for i in range(100):
                await sender.send(i)
            await sender.send_batch(list(range(100, 200)))
            await sender.end()
    assert results == [list(range(200))] * 3


async def test_lane_with_several_writers_ends_only_after_the_last_one_ends() -> None:
    lane = Lane(64, writers=3)
    writers = [LocalPipe(None, (lane,)) for _ in range(3)]
    reader = LocalPipe(lane, ())
    for i, w in enumerate(writers):
        await w.send(i)
    await writers[0].end()
    await writers[1].end()
    assert sorted([await reader.receive() for _ in range(3)]) == [0, 1, 2]
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            ended = trio.Event()

            async def wait_end() -> None:
                with pytest.raises(trio.EndOfChannel):
                    await reader.receive()
                ended.set()

            nursery.start_soon(wait_end)
            await trio.testing.wait_all_tasks_blocked()
            assert not ended.is_set()
            await writers[2].end()
    assert ended.is_set()


async def test_lane_fed_from_a_thread_blocks_that_thread_at_capacity() -> None:
    lane = Lane(10)
    reader = LocalPipe(lane, ())
    progress: list[int] = []

    def thread_writer() -> None:
        for i in range(50):
            lane.put_blocking(i)
            progress.append(i)
        lane.end_writer()

    received: list[int] = []
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, thread_writer)
            # Wait (by polling the lane, not by sleeping) until the thread has filled it.
            while lane.depth < 10:
                await trio.testing.wait_all_tasks_blocked()
                await trio.lowlevel.checkpoint()
            assert len(progress) <= 10
            async for msg in reader:
                received.append(msg)
    assert received == list(range(50))


def test_lane_rejects_invalid_bounds() -> None:
    with pytest.raises(ValueError):
        Lane(0)
    with pytest.raises(ValueError):
        Lane(10, low_water=10)


async def test_byte_budget_blocks_a_writer_before_the_message_count_does() -> None:
    lane = Lane(1000, max_bytes=10_000)
    chunk = b"x" * 1000
    sent = 0

    async def writer() -> None:
        nonlocal sent
        for _ in range(50):
            await lane.put(chunk)
            sent += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == 10
        assert lane.queued_bytes == 10_000
        assert lane.depth == 10
        # Draining to half the budget lets the writer go on.
        assert len(await lane.get_many(6)) == 6
        await trio.testing.wait_all_tasks_blocked()
        assert sent == 16
        nursery.cancel_scope.cancel()


async def test_byte_budget_admits_a_lone_oversize_message_into_an_empty_lane() -> None:
    lane = Lane(10, max_bytes=100)
    await lane.put(b"y" * 1000)  # would deadlock if refused
    assert lane.queued_bytes == 1000
    assert await lane.get() == b"y" * 1000
    assert lane.queued_bytes == 0


async def test_byte_budget_ignores_messages_that_are_not_bytes_or_text() -> None:
    lane = Lane(5, max_bytes=1)
    await lane.put_many([{"big": "x" * 1000}] * 5)
    assert lane.depth == 5
    assert lane.queued_bytes == 0


@pytest.mark.parametrize("close", ["aclose", "end"])
async def test_a_send_blocked_on_a_full_pipe_wakes_when_its_own_end_closes(close: str) -> None:
    a, _b = open_pipe_pair(capacity=1)
    await a.send(0)  # full: b never receives
    async with trio.open_nursery() as nursery:

        async def blocked() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await a.send(1)

        nursery.start_soon(blocked)
        await trio.testing.wait_all_tasks_blocked()
        await getattr(a, close)()
        with trio.fail_after(1):
            await trio.testing.wait_all_tasks_blocked()
            assert not nursery.child_tasks, "send() still blocked after its own end closed"


# -- one message at a time: cancellation, fairness, local and shared lanes (issue 14) -----


async def test_a_pipe_end_used_by_two_tasks_checks_each_ones_own_cancellation() -> None:
    """The fast path caches the calling task per pipe end; a call from another task
    (here one whose scope is cancelled) must see that task's state, not the cache."""
    a, b = open_pipe_pair()
    await a.send("from the first task")  # caches this task
    outcome: list[str] = []

    async def cancelled_sender() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await a.send("must not arrive")
        outcome.append("cancelled" if scope.cancelled_caught else "sent")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancelled_sender)
    await a.send("again from the first task")  # not cancelled: goes through
    await a.end()
    assert outcome == ["cancelled"]
    assert [m async for m in b] == ["from the first task", "again from the first task"]


async def test_64_calls_complete_between_yields_and_every_call_is_a_cancel_point() -> None:
    a, b = open_pipe_pair()
    task = trio.lowlevel.current_task()

    async def yields_of(call: Callable[[], Any], n: int) -> list[int]:
        """The calls (1-based) among ``n`` during which this task yielded."""
        found = []
        for i in range(1, n + 1):
            before = task._schedule_points
            await call()
            if task._schedule_points != before:
                found.append(i)
        return found

    assert await yields_of(lambda: a.send(None), 3 * 64 + 1) == [65, 129, 193]
    assert a.stats.messages_sent == 3 * 64 + 1
    with trio.CancelScope() as scope:
        scope.cancel()
        await b.receive()  # messages are waiting, yet it raises
    assert scope.cancelled_caught
    assert b.stats.queue_depth == 3 * 64 + 1
    assert await yields_of(b.receive, 3 * 64 + 1) == [65, 129, 193]
    assert b.stats.messages_received == 3 * 64 + 1


async def test_stats_count_messages_not_calls_when_calls_fail() -> None:
    a, b = open_pipe_pair(capacity=4)
    for i in range(100):
        await a.send(i)
        assert await b.receive() == i
    await b.aclose()
    for _ in range(70):  # failing calls count toward the yield, not as messages
        with pytest.raises(trio.BrokenResourceError):
            await a.send("lost")
    await a.end()
    for _ in range(3):
        with pytest.raises(trio.ClosedResourceError):
            await b.receive()
    assert a.stats.messages_sent == 100
    assert b.stats.messages_received == 100


async def test_without_trios_internals_every_call_is_a_full_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If trio's run context lacks the fields the inline check reads, the pipes fall
    back to a full checkpoint per call: slower, never wrong."""
    import pipekit.kernel.lane as lane_module

    monkeypatch.setattr(lane_module, "run_context", lane_module._ALWAYS_CHECKPOINT)
    a, b = open_pipe_pair()
    with trio.testing.assert_checkpoints():
        await a.send(1)
    with trio.testing.assert_checkpoints():
        assert await b.receive() == 1
    with trio.CancelScope() as scope:
        scope.cancel()
        await a.send(2)
    assert scope.cancelled_caught
    assert b.stats.queue_depth == 0


def test_a_local_lane_refuses_blocking_calls_until_shared() -> None:
    lane = Lane(4, shared=False)
    with pytest.raises(PipekitError, match=r"call lane.share\(\)"):
        lane.put_blocking("x")
    with pytest.raises(PipekitError, match=r"call lane.share\(\)"):
        lane.get_many_blocking()
    assert lane.try_put("x")
    lane.share()
    assert lane.shared
    lane.put_blocking("y")
    assert lane.get_many_blocking() == ["x", "y"]


async def test_a_shared_lane_read_without_its_lock_loses_no_wakeup() -> None:
    """The trio side pops a shared lane without its lock while a thread writes to it
    with one; with a tiny capacity the writer waits on nearly every message, so a lost
    wake-up (reader and writer each waiting for the other) would hang here."""
    lane = Lane(2, low_water=1)
    reader = LocalPipe(lane, name="reader")
    n = 20_000

    def write() -> None:
        for i in range(n):
            if i % 3:
                lane.put_blocking(i)
            elif not lane.try_put_fast(i):
                lane.put_many_blocking((i,))
        lane.end_writer()

    got: list[int] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, write)
            async for msg in reader:
                got.append(msg)
    assert got == list(range(n))


class _ReaderPopsInTheWindow(Lane):
    """A shared lane whose reader empties it (without the lock, as a trio reader may)
    right after a writer found it full and before that writer registered to wait: the
    window the writers' re-check closes."""

    def _offer(self, items: Any, start: int) -> int:
        done = super()._offer(items, start)
        if done < len(items):
            while self._items:
                self._items.popleft()  # the reader sees no writer waiting yet
        return done


@pytest.mark.parametrize("writer", ["thread", "trio"])
async def test_a_writer_that_found_the_lane_full_rechecks_before_it_sleeps(writer: str) -> None:
    lane = _ReaderPopsInTheWindow(2, low_water=1)
    assert lane.try_put(0) and lane.try_put(1)  # full
    with trio.fail_after(HANG_GUARD):
        if writer == "thread":
            await trio.to_thread.run_sync(lane.put_blocking, 2)
        else:
            await lane.put(2)
    assert lane.depth == 1
