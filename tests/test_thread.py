"""Tests of the thread adapter (``pipekit.adapters.thread``).

:class:`ThreadModule` runs user code in worker threads as a kernel module (``map``,
``iter``, ``port`` and ``async`` modes); :func:`open_thread_port` joins one thread to a
trio task with a pipe. Threads are synchronised with ``threading.Event``s and trio
events; "the thread is blocked" is observed by looking at the thread's stack (it is
waiting inside a lane's ``put_many_blocking`` / ``get_many_blocking``), never by
sleeping. Timeouts only guard against hangs.
"""

from __future__ import annotations

import collections
import itertools
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from pipekit.adapters._threadmap import ChunkPlan, MapTally
from pipekit.adapters._threadrunner import Interrupt
from pipekit.adapters.thread import ThreadModule, ThreadPort, open_thread_port
from pipekit.kernel import Lane, ModuleError, Pipe, ProtocolError, RemoteError, open_kernel
from pipekit.kernel.kernel import Restart

HANG_GUARD = 10.0  # seconds; only ever reached when something is broken


# --- helpers ------------------------------------------------------------------------


async def run_module(
    module: ThreadModule,
    items: Iterable[Any],
    *,
    restart: Restart = "never",
    max_restarts: int = 3,
    capacity: int | None = None,
) -> list[Any]:
    """Run ``source(items) -> module -> sink`` on a kernel; return what the sink got."""
    data = list(items)
    got: list[Any] = []

    async def produce(out: Pipe) -> None:
        for i in range(0, len(data), 1000):
            await out.send_batch(data[i : i + 1000])

    async def consume(inp: Pipe) -> None:
        async for batch in inp.batches():
            got.extend(batch)

    with trio.fail_after(HANG_GUARD):
        async with open_kernel() as k:
            src = k.add(produce, name="src")
            mod = k.add(
                module,
                name="mod",
                restart=restart,
                max_restarts=max_restarts,
                backoff=0,
                capacity=capacity,
            )
            snk = k.add(consume, name="sink")
            k.connect(src, mod)
            k.connect(mod, snk)
    return got


def stack_of(thread: threading.Thread) -> list[str]:
    """Function names on ``thread``'s stack, innermost first."""
    frame = sys._current_frames().get(thread.ident or -1)
    names: list[str] = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names


def find_thread(name: str) -> threading.Thread | None:
    for t in threading.enumerate():
        if t.name == name:
            return t
    return None


def blocked_in(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread`` is waiting on a lock inside ``function``."""
    names = stack_of(thread)
    # Condition.wait <- Event.wait <- ... <- function
    return names[:2] == ["wait", "wait"] and function in names


async def wait_blocked_in(thread_name: str, function: str) -> threading.Thread:
    """Wait until the thread called ``thread_name`` is waiting on a lock inside
    ``function`` (e.g. a lane's ``put_many_blocking``), and return it."""
    with trio.fail_after(HANG_GUARD):
        while True:
            thread = find_thread(thread_name)
            if thread is not None and blocked_in(thread, function):
                return thread
            await trio.lowlevel.checkpoint()


class ThreadSignal:
    """Set from any thread, awaited in trio (no trio worker threads involved)."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self._token = trio.lowlevel.current_trio_token()

    def set(self) -> None:
        self._token.run_sync_soon(self.event.set)

    async def wait(self) -> None:
        with trio.fail_after(HANG_GUARD):
            await self.event.wait()


@asynccontextmanager
async def no_new_threads_or_warnings() -> AsyncIterator[None]:
    """Fail if the block leaves a thread running or emits a warning."""
    before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert set(threading.enumerate()) - before == set()
    assert [str(w.message) for w in caught] == []


async def receive_all(pipe: Pipe) -> list[Any]:
    got: list[Any] = []
    with trio.fail_after(HANG_GUARD):
        async for batch in pipe.batches():
            got.extend(batch)
    return got


# --- map mode -----------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 4])
async def test_map_preserves_order_of_100k_messages(workers: int) -> None:
    n = 100_000
    got = await run_module(ThreadModule(lambda x: 2 * x, workers=workers), range(n))
    assert got == [2 * x for x in range(n)]


async def test_map_unordered_delivers_the_same_multiset() -> None:
    n = 100_000
    got = await run_module(ThreadModule(lambda x: x % 1000, workers=4, ordered=False), range(n))
    assert collections.Counter(got) == collections.Counter(x % 1000 for x in range(n))


async def test_map_runs_the_function_in_worker_threads() -> None:
    trio_thread = threading.get_ident()
    got = await run_module(ThreadModule(lambda x: threading.get_ident()), range(100))
    assert len(got) == 100
    assert trio_thread not in got


async def test_map_least_loaded_dispatch_keeps_other_worker_busy_while_one_blocks() -> None:
    """Worker A blocks on message 0 until worker B has processed ``k`` later messages
    (one message per batch): dispatch must route around the busy worker. Unordered, so
    nothing waits for re-sequencing (ordered maps bound how far others may run ahead:
    see the reorder-window test)."""
    n, k = 1000, 300
    lock = threading.Lock()
    others_done = threading.Event()
    processed = [0]

    def fn(x: int) -> tuple[int, int]:
        if x == 0:
            if not others_done.wait(timeout=HANG_GUARD):
                raise AssertionError("the other worker was starved while this one was busy")
        else:
            sum(range(5000))  # some work, so the dispatcher runs ahead of this worker
            with lock:
                processed[0] += 1
                if processed[0] == k:
                    others_done.set()
        return x, threading.get_ident()

    got = await run_module(ThreadModule(fn, workers=2, batch=1, ordered=False), range(n))
    assert sorted(x for x, _ in got) == list(range(n))
    blocked_worker = next(ident for x, ident in got if x == 0)
    by_other = [x for x, ident in got if ident != blocked_worker]
    assert len(by_other) >= k
    assert len({ident for _, ident in got}) == 2


async def test_map_failure_without_restart_fails_the_kernel_naming_the_module() -> None:
    def fn(x: int) -> int:
        if x == 500:
            raise ValueError("bad message 500")
        return x

    with pytest.raises(ModuleError) as info:
        await run_module(ThreadModule(fn), range(1000))
    assert info.value.module == "mod"
    assert isinstance(info.value.__cause__, ValueError)
    assert str(info.value.__cause__) == "bad message 500"


@pytest.mark.parametrize("workers", [1, 3])
async def test_map_restart_on_failure_loses_only_the_failing_messages(workers: int) -> None:
    n = 10_000

    def fn(x: int) -> int:
        if x % 97 == 0:
            raise ValueError(x)
        return x

    got = await run_module(
        ThreadModule(fn, workers=workers, batch=64),
        range(n),
        restart="on-failure",
        max_restarts=n,
    )
    expected = [x for x in range(n) if x % 97 != 0]
    assert sorted(got) == expected  # exactly the survivors, each once


@pytest.mark.parametrize("workers", [1, 3])
async def test_map_failure_surfaces_before_the_next_chunk_is_taken(workers: int) -> None:
    """Once a call fails, no thread takes another chunk: what ran after the failing
    message is at most the chunks already started (one per thread, ``batch`` messages
    each at most), not the chunks queued behind them."""
    lock = threading.Lock()
    called: list[int] = []

    def fn(x: int) -> int:
        with lock:
            called.append(x)
        if x == 1000:
            raise ValueError("message 1000")
        return x

    with pytest.raises(ModuleError) as info:
        await run_module(ThreadModule(fn, workers=workers, batch=64), range(20_000))
    assert str(info.value.__cause__) == "message 1000"
    assert max(called) < 1000 + workers * 64


@pytest.mark.parametrize("workers", [1, 3])
async def test_map_restart_after_a_failure_keeps_the_order_of_the_survivors(
    workers: int,
) -> None:
    n = 5_000

    def fn(x: int) -> int:
        if x % 701 == 0:
            raise ValueError(x)
        return x

    got = await run_module(
        ThreadModule(fn, workers=workers, batch=16),
        range(n),
        restart="on-failure",
        max_restarts=n,
    )
    assert got == [x for x in range(n) if x % 701 != 0]


class RecordingTally:
    """A :class:`~pipekit.adapters._threadmap.Tally` that keeps every failure."""

    def __init__(self) -> None:
        self.taken = 0
        self.fails: list[tuple[int, Any]] = []

    def fail(self, index: int, item: Any) -> None:
        self.fails.append((index, item))


@pytest.mark.parametrize("workers", [1, 3])
async def test_map_failure_names_the_failing_messages_index_and_the_message(
    workers: int,
) -> None:
    def fn(x: str) -> int:
        return int(x)

    items = [str(i) for i in range(3000)]
    items[1234] = "x"
    tally = MapTally()
    with pytest.raises(ModuleError):
        await run_module(ThreadModule(fn, workers=workers, batch=64, tally=tally), items)
    assert tally.failed == (1234, "x")


@pytest.mark.parametrize("ordered", [True, False])
async def test_map_with_several_failing_threads_names_the_first_in_input_order(
    ordered: bool,
) -> None:
    """Message 1 fails first (in time); message 0, in another thread, fails only once
    that thread has delivered and exited: the failure named (and raised) is message 0's."""
    one_failed = threading.Event()
    ran_one: list[threading.Thread] = []

    def fn(x: int) -> int:
        if x == 1:
            ran_one.append(threading.current_thread())
            one_failed.set()
            raise ValueError("message 1")
        if x == 0:
            assert one_failed.wait(HANG_GUARD)
            ran_one[0].join(HANG_GUARD)  # its failure is in before this one
            raise ValueError("message 0")
        return x

    tally = MapTally()
    module = ThreadModule(fn, workers=2, ordered=ordered, tally=tally)
    with pytest.raises(ModuleError) as info:
        await run_module(module, range(100))
    assert tally.failed == (0, 0)
    assert str(info.value.__cause__) == "message 0"


@pytest.mark.parametrize("workers", [1, 3])
async def test_map_failure_indexes_count_the_whole_input_over_restarts(workers: int) -> None:
    n = 5_000

    def fn(x: int) -> int:
        if x % 701 == 0:
            raise ValueError(x)
        return x

    tally = RecordingTally()
    await run_module(
        ThreadModule(fn, workers=workers, batch=16, tally=tally),
        range(n),
        restart="on-failure",
        max_restarts=n,
    )
    assert tally.fails == [(x, x) for x in range(0, n, 701)]  # index == message here
    assert tally.taken == n


def test_chunk_plan_batches_cheap_messages_and_sends_slow_ones_alone() -> None:
    plan = ChunkPlan(512)
    assert plan.size == 1  # nothing measured yet
    plan.learn(100, 100 * 1e-7)
    assert plan.size == 512  # cheap: as many as allowed
    for _ in range(20):
        plan.learn(1, 0.01)
    assert plan.size == 1  # slower than a chunk's worth: alone
    plan.learn(0, 0.0)  # nothing timed: no change
    assert plan.size == 1


async def test_port_mode_restart_loses_only_the_failing_messages() -> None:
    """A port function reads one message at a time (the port holds the rest of its
    batch); when it raises, the unread part of that batch goes back for the restart."""
    n = 5000

    def checker(port: ThreadPort) -> None:
        for m in port:
            if m % 250 == 0:
                raise ValueError(m)
            port.send(m)

    got = await run_module(
        ThreadModule(checker, mode="port"), range(n), restart="on-failure", max_restarts=n
    )
    assert got == [m for m in range(n) if m % 250 != 0]


# --- batched hand-off and backpressure ------------------------------------------------


async def test_thread_port_hands_messages_to_trio_in_batches_not_one_by_one() -> None:
    n = 100_000

    def produce(port: ThreadPort) -> None:
        for i in range(n):
            port.send(i)

    got: list[int] = []
    batches = 0
    async with open_thread_port(produce) as pipe:
        with trio.fail_after(HANG_GUARD):
            async for batch in pipe.batches():
                batches += 1
                got.extend(batch)
    assert got == list(range(n))
    assert batches <= n // 10, f"{batches} trio wake-ups for {n} messages"


async def test_thread_module_output_reaches_trio_in_batches() -> None:
    n = 100_000
    batches = 0
    got: list[int] = []

    async def produce(out: Pipe) -> None:
        await out.send_batch(list(range(n)))

    async def consume(inp: Pipe) -> None:
        nonlocal batches
        async for batch in inp.batches():
            batches += 1
            got.extend(batch)

    def per_message(port: ThreadPort) -> None:
        for m in port:
            port.send(m)

    with trio.fail_after(HANG_GUARD):
        async with open_kernel() as k:
            src = k.add(produce)
            mod = k.add(ThreadModule(per_message, mode="port"), name="mod")
            snk = k.add(consume)
            k.connect(src, mod)
            k.connect(mod, snk)
    assert got == list(range(n))
    assert batches <= n // 10, f"{batches} trio wake-ups for {n} messages"


async def test_thread_producer_blocks_after_exactly_capacity_unread_messages() -> None:
    capacity, n = 16, 100
    sent = [0]

    def produce(port: ThreadPort) -> None:
        for i in range(n):
            port.send(i)
            sent[0] += 1

    async with open_thread_port(produce, capacity=capacity, name="producer") as pipe:
        await wait_blocked_in("pipekit:producer:0", "put_many_blocking")
        assert sent[0] == capacity
        assert pipe.stats.queue_depth == capacity
        got = await receive_all(pipe)  # draining lets it finish
    assert got == list(range(n))
    assert sent[0] == n


async def test_trio_producer_blocks_after_exactly_capacity_when_thread_does_not_read() -> None:
    capacity, n = 16, 100
    release = threading.Event()
    received: list[int] = []

    def consume(port: ThreadPort) -> None:
        if not release.wait(timeout=HANG_GUARD):
            raise AssertionError("never released")
        received.extend(port)

    sent = 0
    async with open_thread_port(consume, capacity=capacity) as pipe:

        async def produce() -> None:
            nonlocal sent
            for i in range(n):
                await pipe.send(i)
                sent += 1
            await pipe.end()

        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                await trio.testing.wait_all_tasks_blocked()
                assert sent == capacity
                release.set()
        assert await receive_all(pipe) == []  # the thread sent nothing and returned
    assert received == list(range(n))


# --- END and ERROR --------------------------------------------------------------------


async def test_thread_returning_ends_its_output_after_all_messages() -> None:
    def produce(port: ThreadPort) -> None:
        for i in range(10):
            port.send(i)

    async with open_thread_port(produce) as pipe:
        with trio.fail_after(HANG_GUARD):
            got = [await pipe.receive() for _ in range(10)]
            with pytest.raises(trio.EndOfChannel):
                await pipe.receive()
    assert got == list(range(10))


async def test_thread_module_returning_ends_downstream() -> None:
    ended = trio.Event()

    async def consume(inp: Pipe) -> None:
        async for _ in inp:
            pass
        ended.set()  # EndOfChannel reached

    async def produce(out: Pipe) -> None:
        await out.send_batch(list(range(100)))

    with trio.fail_after(HANG_GUARD):
        async with open_kernel() as k:
            src = k.add(produce)
            mod = k.add(ThreadModule(lambda x: x))
            snk = k.add(consume)
            k.connect(src, mod)
            k.connect(mod, snk)
    assert ended.is_set()


async def test_thread_raising_fails_trio_receive_after_the_messages_sent_before() -> None:
    def produce(port: ThreadPort) -> None:
        for i in range(5):
            port.send(i)
        raise ValueError("thread broke")

    async with open_thread_port(produce) as pipe:
        with trio.fail_after(HANG_GUARD):
            got = [await pipe.receive() for _ in range(5)]
            with pytest.raises(RemoteError) as info:
                await pipe.receive()
    assert got == list(range(5))
    assert info.value.kind == "ValueError"
    assert isinstance(info.value.__cause__, ValueError)
    assert "thread broke" in str(info.value)


async def test_thread_raising_a_pipekit_error_gives_trio_that_typed_error() -> None:
    raised = ProtocolError("bad frame", kind="malformed")

    def produce(port: ThreadPort) -> None:
        port.send("first")
        raise raised

    async with open_thread_port(produce) as pipe:
        with trio.fail_after(HANG_GUARD):
            assert await pipe.receive() == "first"
            with pytest.raises(ProtocolError) as info:
                await pipe.receive()
    assert info.value is raised


async def test_thread_module_failure_fails_the_kernel_with_the_cause() -> None:
    def produce(out: ThreadPort) -> None:
        out.send_batch([1, 2, 3])
        raise LookupError("no such row")

    async def consume(inp: Pipe) -> None:
        async for _ in inp:
            pass

    with trio.fail_after(HANG_GUARD), pytest.raises(ModuleError) as info:
        async with open_kernel() as k:
            src = k.add(ThreadModule(produce, mode="port", inputs=()), name="rows")
            snk = k.add(consume)
            k.connect(src, snk)
    assert info.value.module == "rows"
    assert isinstance(info.value.__cause__, LookupError)


async def test_thread_port_echoes_what_trio_sends() -> None:
    n = 10_000

    def echo(port: ThreadPort) -> None:
        for m in port:
            port.send(m + 1)

    async with open_thread_port(echo) as pipe:

        async def produce() -> None:
            for i in range(0, n, 100):
                await pipe.send_batch(list(range(i, i + 100)))
            await pipe.end()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            got = await receive_all(pipe)
    assert got == [i + 1 for i in range(n)]


class _EvenRoute:
    """A send route that takes even numbers (all of a batch, or none) and records them."""

    def __init__(self) -> None:
        self.taken: list[int] = []

    def send(self, value: Any) -> bool:
        if value % 2:
            return False
        self.taken.append(value)
        return True

    def send_batch(self, values: Sequence[Any]) -> bool:
        if any(v % 2 for v in values):
            return False
        self.taken.extend(values)
        return True


async def test_thread_port_route_takes_what_it_accepts_and_the_lane_gets_the_rest() -> None:
    route = _EvenRoute()

    def body(port: ThreadPort) -> None:
        port.route_sends(route)
        for i in range(10):
            port.send(i)
        port.send_batch([20, 22])  # taken whole
        port.send_batch([30, 31])  # refused whole: both go to the lane
        assert port.messages_sent == 14

    async with open_thread_port(body) as pipe:
        got = await receive_all(pipe)
    assert route.taken == [0, 2, 4, 6, 8, 20, 22]
    assert got == [1, 3, 5, 7, 9, 30, 31]


async def test_thread_port_route_removed_sends_everything_to_the_lane() -> None:
    route = _EvenRoute()

    def body(port: ThreadPort) -> None:
        port.route_sends(route)
        port.send(0)
        port.route_sends(None)
        port.send(2)
        port.send_batch([4])

    async with open_thread_port(body) as pipe:
        got = await receive_all(pipe)
    assert route.taken == [0]
    assert got == [2, 4]


# --- iter, port and async modes ---------------------------------------------------------


async def test_iter_mode_runs_a_generator_over_the_stream() -> None:
    def pairs(messages: Iterator[int]) -> Iterator[tuple[int, int]]:
        it = iter(messages)
        for a in it:
            yield a, next(it)

    got = await run_module(ThreadModule(pairs, mode="iter"), range(1000))
    assert got == [(i, i + 1) for i in range(0, 1000, 2)]


async def test_iter_mode_can_drop_and_duplicate_messages() -> None:
    def odd_twice(messages: Iterator[int]) -> Iterator[int]:
        for m in messages:
            if m % 2:
                yield m
                yield m

    got = await run_module(ThreadModule(odd_twice, mode="iter"), range(100))
    assert got == [m for m in range(100) if m % 2 for _ in range(2)]


async def test_port_mode_gives_the_function_a_duplex_port() -> None:
    def tripler(port: ThreadPort) -> None:
        for m in port:
            port.send(3 * m)

    got = await run_module(ThreadModule(tripler, mode="port"), range(1000))
    assert got == [3 * m for m in range(1000)]


async def test_port_mode_source_and_sink_get_named_ports() -> None:
    received: list[int] = []

    def produce(out: ThreadPort) -> None:
        out.send_batch(list(range(500)))

    def consume(inp: ThreadPort) -> None:
        while True:
            try:
                received.extend(inp.receive_batch(7))
            except trio.EndOfChannel:
                return

    with trio.fail_after(HANG_GUARD):
        async with open_kernel() as k:
            src = k.add(ThreadModule(produce, mode="port", inputs=()))
            snk = k.add(ThreadModule(consume, mode="port", outputs=()))
            k.connect(src, snk)
    assert received == list(range(500))


async def test_async_mode_runs_in_its_own_thread_and_event_loop() -> None:
    kernel_token = trio.lowlevel.current_trio_token()
    seen: list[tuple[int, bool]] = []

    async def double(inp: Pipe, out: Pipe) -> None:
        seen.append((threading.get_ident(), trio.lowlevel.current_trio_token() is kernel_token))
        async for batch in inp.batches():
            await out.send_batch([2 * m for m in batch])

    module = ThreadModule(double)
    assert module.mode == "async"
    got = await run_module(module, range(10_000))
    assert got == [2 * m for m in range(10_000)]
    assert seen == [(seen[0][0], False)]
    assert seen[0][0] != threading.get_ident()


def _port_tripler() -> ThreadModule:
    def tripler(port: ThreadPort) -> None:
        for m in port:
            port.send(3 * m)

    return ThreadModule(tripler, mode="port")


def _iter_tripler() -> ThreadModule:
    def tripler(messages: Iterator[int]) -> Iterator[int]:
        for m in messages:
            yield 3 * m

    return ThreadModule(tripler, mode="iter")


def _async_tripler() -> ThreadModule:
    async def tripler(inp: Pipe, out: Pipe) -> None:
        async for batch in inp.batches():
            await out.send_batch([3 * m for m in batch])

    return ThreadModule(tripler)


@pytest.mark.parametrize(
    "make", [_port_tripler, _iter_tripler, _async_tripler], ids=["port", "iter", "async"]
)
async def test_thread_modules_count_messages_in_kernel_stats(
    make: Callable[[], ThreadModule],
) -> None:
    async def produce(out: Pipe) -> None:
        await out.send_batch(list(range(300)))

    async def consume(inp: Pipe) -> None:
        async for _ in inp.batches():
            pass

    with trio.fail_after(HANG_GUARD):
        async with open_kernel() as k:
            src = k.add(produce)
            mod = k.add(make(), name="mod")
            snk = k.add(consume)
            k.connect(src, mod)
            k.connect(mod, snk)
    stats = k.stats()["mod"]
    assert (stats.messages_in, stats.messages_out, stats.state) == (300, 300, "done")


# --- cancellation -------------------------------------------------------------------


async def test_cancelling_kernel_interrupts_and_joins_thread_blocked_in_send() -> None:
    def flood(out: ThreadPort) -> None:
        for i in itertools.count():
            out.send(i)

    async def never_reads(inp: Pipe) -> None:
        await trio.sleep_forever()

    async with no_new_threads_or_warnings():
        with trio.CancelScope() as scope:
            async with open_kernel() as k:
                src = k.add(ThreadModule(flood, mode="port", inputs=()), name="flood")
                snk = k.add(never_reads, capacity=8)
                k.connect(src, snk)
                await k.start()
                thread = await wait_blocked_in("pipekit:flood:0", "put_many_blocking")
                scope.cancel()
        assert scope.cancelled_caught
        assert not thread.is_alive()


async def test_cancelling_kernel_interrupts_and_joins_thread_blocked_in_receive() -> None:
    def drain(inp: ThreadPort) -> None:
        for _ in inp:
            pass

    async def never_sends(out: Pipe) -> None:
        await trio.sleep_forever()

    async with no_new_threads_or_warnings():
        with trio.CancelScope() as scope:
            async with open_kernel() as k:
                src = k.add(never_sends)
                snk = k.add(ThreadModule(drain, mode="port", outputs=()), name="drain")
                k.connect(src, snk)
                await k.start()
                thread = await wait_blocked_in("pipekit:drain:0", "get_many_blocking")
                scope.cancel()
        assert scope.cancelled_caught
        assert not thread.is_alive()


@pytest.mark.parametrize("workers", [1, 3])
async def test_cancelling_kernel_joins_map_workers_of_a_stage_stuck_on_full_output(
    workers: int,
) -> None:
    async def produce(out: Pipe) -> None:
        for i in itertools.count():
            await out.send(i)

    async def never_reads(inp: Pipe) -> None:
        await trio.sleep_forever()

    async with no_new_threads_or_warnings():
        with trio.CancelScope() as scope:
            async with open_kernel() as k:
                src = k.add(produce)
                mod = k.add(ThreadModule(lambda x: x, workers=workers, name="m"))
                snk = k.add(never_reads, capacity=8)
                k.connect(src, mod)
                k.connect(mod, snk)
                await k.start()
                # the stage's collector waits for the sink; every worker thread waits
                # for work or to hand over its results
                with trio.fail_after(HANG_GUARD):
                    while True:
                        await trio.testing.wait_all_tasks_blocked()
                        live = [find_thread(f"pipekit:m:{i}") for i in range(workers)]
                        if all(
                            t is not None
                            and (
                                blocked_in(t, "get_many_blocking")
                                or blocked_in(t, "put_many_blocking")
                            )
                            for t in live
                        ):
                            break
                scope.cancel()
        assert scope.cancelled_caught
    assert not [t for t in threading.enumerate() if t.name.startswith("pipekit:m:")]


async def test_kernel_stop_joins_thread_blocked_in_send() -> None:
    def flood(out: ThreadPort) -> None:
        for i in itertools.count():
            out.send(i)

    async def never_reads(inp: Pipe) -> None:
        await trio.sleep_forever()

    async with no_new_threads_or_warnings():
        with trio.fail_after(HANG_GUARD):
            async with open_kernel() as k:
                src = k.add(ThreadModule(flood, mode="port", inputs=()), name="flood")
                snk = k.add(never_reads, capacity=8)
                k.connect(src, snk)
                await k.start()
                thread = await wait_blocked_in("pipekit:flood:0", "put_many_blocking")
                k.stop()
        assert not thread.is_alive()


async def test_cancelling_async_mode_module_stops_its_event_loop_and_thread() -> None:
    inside = ThreadSignal()

    async def stuck(inp: Pipe, out: Pipe) -> None:
        inside.set()
        await trio.sleep_forever()

    async def produce(out: Pipe) -> None:
        await trio.sleep_forever()

    async def consume(inp: Pipe) -> None:
        await trio.sleep_forever()

    async with no_new_threads_or_warnings():
        with trio.CancelScope() as scope:
            async with open_kernel() as k:
                src = k.add(produce)
                mod = k.add(ThreadModule(stuck), name="stuck")
                snk = k.add(consume)
                k.connect(src, mod)
                k.connect(mod, snk)
                await k.start()
                await inside.wait()
                scope.cancel()
        assert scope.cancelled_caught
    assert find_thread("pipekit:stuck:0") is None


async def test_cancelling_open_thread_port_joins_thread_blocked_in_send() -> None:
    def flood(port: ThreadPort) -> None:
        for i in itertools.count():
            port.send(i)

    async with no_new_threads_or_warnings():
        with trio.CancelScope() as scope:
            async with open_thread_port(flood, capacity=8, name="flood"):
                thread = await wait_blocked_in("pipekit:flood:0", "put_many_blocking")
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert not thread.is_alive()


async def test_cancelling_open_thread_port_joins_thread_blocked_in_receive() -> None:
    def drain(port: ThreadPort) -> None:
        for _ in port:
            pass

    async with no_new_threads_or_warnings():
        with trio.CancelScope() as scope:
            async with open_thread_port(drain, name="drain"):
                thread = await wait_blocked_in("pipekit:drain:0", "get_many_blocking")
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert not thread.is_alive()


async def test_leaving_open_thread_port_ends_the_thread_side_input() -> None:
    received: list[int] = []

    def drain(port: ThreadPort) -> None:
        received.extend(port)

    async with no_new_threads_or_warnings(), open_thread_port(drain) as pipe:
        await pipe.send_batch([1, 2, 3])
    assert received == [1, 2, 3]


async def test_leaving_open_thread_port_stops_a_thread_that_is_still_sending() -> None:
    def flood(port: ThreadPort) -> None:
        for i in itertools.count():
            port.send(i)

    async with no_new_threads_or_warnings():
        with trio.fail_after(HANG_GUARD):
            async with open_thread_port(flood, capacity=8, name="flood") as pipe:
                first = [await pipe.receive() for _ in range(20)]
                await wait_blocked_in("pipekit:flood:0", "put_many_blocking")
    assert first == list(range(20))


async def test_thread_ignoring_interruption_is_abandoned_with_a_warning() -> None:
    unstick = threading.Event()
    inside = ThreadSignal()

    def stubborn(port: ThreadPort) -> None:
        inside.set()
        unstick.wait(timeout=HANG_GUARD)  # blocked outside pipekit: cannot be interrupted

    with pytest.warns(RuntimeWarning, match="did not stop within"), trio.CancelScope() as scope:
        async with open_thread_port(stubborn, name="stubborn", grace=0.05):
            await inside.wait()
            scope.cancel()
            await trio.sleep_forever()
    thread = find_thread("pipekit:stubborn:0")
    assert thread is not None and thread.daemon
    unstick.set()
    thread.join(timeout=HANG_GUARD)
    assert not thread.is_alive()


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"mode": "bogus"}, ValueError),
        ({"workers": 0}, ValueError),
        ({"mode": "iter", "workers": 2}, ValueError),
        ({"mode": "map", "inputs": ()}, ValueError),
    ],
)
def test_thread_module_rejects_bad_options(kwargs: dict[str, Any], error: type[Exception]) -> None:
    fn: Callable[[Any], Any] = lambda x: x  # noqa: E731
    with pytest.raises(error):
        ThreadModule(fn, **kwargs)


async def test_ordered_map_bounds_results_waiting_behind_a_stuck_worker() -> None:
    """One worker blocks on its message; the others may run ahead only by the reorder
    window (4 batches per worker), so what waits for re-sequencing stays bounded."""
    release = threading.Event()
    reached_window = threading.Event()
    processed = [0]
    lock = threading.Lock()
    window = 4 * 3

    def work(x: int) -> int:
        if x == 0:
            release.wait(timeout=10)
            return x
        with lock:
            processed[0] += 1
            if processed[0] >= window - 2:
                reached_window.set()
        return x

    async def produce(out: Pipe) -> None:
        for i in range(2_000):
            await out.send(i)

    got: list[int] = []

    async def consume(inp: Pipe) -> None:
        async for batch in inp.batches():
            got.extend(batch)

    module = ThreadModule(work, workers=3, batch=1)
    async with trio.open_nursery() as nursery:

        async def run_kernel() -> None:
            async with open_kernel(capacity=16) as k:
                a, b, c = k.add(produce), k.add(module, name="work"), k.add(consume)
                k.connect(a, b)
                k.connect(b, c)

        nursery.start_soon(run_kernel)
        assert await trio.to_thread.run_sync(reached_window.wait, 10)
        # The free workers have filled the window; give them every chance to go on.
        for _ in range(5):
            await trio.testing.wait_all_tasks_blocked(cushion=0.02)
        assert got == []
        assert processed[0] <= window, f"{processed[0]} results waited behind the stuck worker"
        release.set()
    assert got == list(range(2_000))


async def test_a_thread_port_that_ends_its_own_output_does_not_end_a_merge_early() -> None:
    first_sent = threading.Event()

    def quick(port: ThreadPort) -> None:
        port.send("quick")
        port.end()  # ended here, and again by the kernel when the module returns
        first_sent.set()

    async def slow(out: Pipe) -> None:
        await trio.to_thread.run_sync(first_sent.wait, HANG_GUARD)
        for i in range(5):
            await out.send(i)

    got: list[object] = []

    async def consume(inp: Pipe) -> None:
        async for x in inp:
            got.append(x)

    with trio.fail_after(HANG_GUARD):
        async with open_kernel() as k:
            q = k.add(ThreadModule(quick, mode="port", inputs=()))
            k.merge([q, k.add(slow)], k.add(consume))
    assert got == ["quick", 0, 1, 2, 3, 4]


async def test_open_thread_port_raises_a_thread_error_nobody_received() -> None:
    def broken(port: ThreadPort) -> None:
        raise KeyError("lost?")

    with pytest.raises(KeyError, match="lost"):
        async with open_thread_port(broken):
            pass


def test_thread_port_counts_exactly_whichever_way_messages_go() -> None:
    """The port counts without an integer per message (a countdown and the batch it
    holds); the counts must still be exact at any moment, requeued messages excluded."""
    inbound = Lane(2000)
    outbound = Lane(2000)
    port = ThreadPort(inbound, (outbound,), Interrupt())
    inbound.put_many_blocking(list(range(1000)))
    it = iter(port)
    assert [next(it) for _ in range(300)] == list(range(300))
    assert port.messages_received == 300
    assert port.receive() == 300
    assert port.receive_batch(10) == list(range(301, 311))
    assert port.messages_received == 311
    assert next(it) == 311  # iteration and receive() share what the port holds
    port.requeue_unread()
    assert port.messages_received == 312
    assert inbound.depth == 1000 - 312
    for i in range(700):
        port.send(i)
    port.send_batch(["a", "b"])
    assert port.messages_sent == 702
    port.messages_sent += 10  # credited traffic (the async mode does this)
    port.messages_received += 5
    assert (port.messages_sent, port.messages_received) == (712, 317)
    assert outbound.depth == 702


def test_an_interrupted_thread_port_refuses_a_send_that_would_find_room() -> None:
    abort = Interrupt()
    lane = Lane(8)
    port = ThreadPort(None, (lane,), abort)
    port.send("before")
    abort.set()
    with pytest.raises(trio.ClosedResourceError, match="interrupted"):
        port.send("after")
    assert lane.depth == 1
