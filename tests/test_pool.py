"""Tests of ``pk.WorkerPool``: real worker processes (``pipekit worker --mode item``)
running the functions in ``pool_workers.py``.

Nothing here sleeps to synchronise: a blocked worker is released by creating a file it
waits for, after the test has seen what it needed; the only clocks are the pool's own
per-item timeout (short, real) and a guard that fails a hung test.
"""

from __future__ import annotations

import itertools
import os
import pickle
import signal
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from pool_workers import (
    CRASH,
    CRASH_EVERY,
    CRASH_LATE,
    HANG,
    INIT_LOG_ENV,
    POISON,
    RUN_LOG_ENV,
    SLOW_SECONDS,
    STOP,
)

import pipekit as pk
from pipekit.workers import CHUNK_SECONDS, target_spec
from pipekit.workers._pool.dispatch import water_fill
from pipekit.workers._pool.queue import Flight, SegmentState
from pipekit.workers._pool.records import ProgressRecords
from pipekit.workers._pool.runs import StreamRun
from pipekit.workers._pool.sizing import FIRST_CHUNK
from pipekit.workers._pool.worker import Worker

FRESH, RAN, SUSPECT = SegmentState.FRESH, SegmentState.RAN, SegmentState.SUSPECT

WORKERS = Path(__file__).with_name("pool_workers.py")
HANG_GUARD = 20.0  # seconds; only ever reached when something is broken


def target(name: str) -> str:
    return f"{WORKERS}:{name}"


def alive(pid: int) -> bool:
    """True while ``pid`` exists, zombies included."""
    return os.path.exists(f"/proc/{pid}")


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def init_logs(directory: Path) -> dict[int, str]:
    """What ``record_init`` wrote: pid -> the text of its log file."""
    return {int(p.name): p.read_text() for p in directory.iterdir()}


def errors_in(results: list[Any]) -> dict[int, pk.WorkerError]:
    return {i: r for i, r in enumerate(results) if isinstance(r, pk.WorkerError)}


async def test_map_keeps_input_order_and_returns_a_poisoned_item_as_an_error_value() -> None:
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("poisoned"), size=2) as pool:
            results = await pool.map(range(10_000))
    assert len(results) == 10_000
    errors = errors_in(results)
    assert list(errors) == [POISON]
    err = errors[POISON]
    assert (err.kind, err.index, err.remote) == ("ValueError", POISON, True)
    assert err.message == f"poisoned item {POISON}"
    assert "raise ValueError" in err.traceback
    assert all(results[i] == i * i for i in range(10_000) if i != POISON)
    assert pool.stats.errors == 1 and pool.stats.crashes == 0


async def test_crashing_item_is_terminated_and_its_worker_replaced() -> None:
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("crash"), size=2) as pool:
            first_pids = set(pool.pids)
            results = await pool.map(range(500))
            stats = pool.stats
    errors = errors_in(results)
    assert list(errors) == [CRASH]
    err = errors[CRASH]
    assert (err.kind, err.index, err.exit_code, err.remote) == ("terminated", CRASH, 1, False)
    assert err.pid in first_pids
    assert isinstance(err.__cause__, pk.ProcessError)
    assert all(results[i] == i * i for i in range(500) if i != CRASH)
    assert stats.crashes >= 1 and stats.replacements >= 1 and stats.errors == 1


async def test_crashed_worker_leaves_no_process_behind() -> None:
    before = descendants()
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("crash"), size=2) as pool:
            seen = set(pool.pids)
            results = await pool.map(range(300))
            seen |= set(pool.pids)
    crashed = errors_in(results)[CRASH].pid
    assert crashed is not None
    seen.add(crashed)
    assert not [pid for pid in seen if alive(pid)]
    assert descendants() <= before


async def test_item_past_the_timeout_is_a_timeout_error_and_its_worker_replaced() -> None:
    items: list[Any] = list(range(40))
    items[5] = HANG
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("hang"), size=2, timeout=0.5) as pool:
            results = await pool.map(items)
            stats = pool.stats
    errors = errors_in(results)
    assert list(errors) == [5]
    err = errors[5]
    assert (err.kind, err.index) == ("timeout", 5)
    assert err.pid is not None and not alive(err.pid)
    assert [r for i, r in enumerate(results) if i != 5] == [i for i in range(40) if i != 5]
    assert stats.timeouts >= 1 and stats.replacements >= 1


async def test_init_runs_once_per_worker_and_workers_are_reused(tmp_path: Path) -> None:
    env = {**os.environ, INIT_LOG_ENV: str(tmp_path)}
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(
            target("whoami"), size=3, init=target("record_init"), env=env
        ) as pool:
            pids = set(pool.pids)
            results = await pool.map(range(3000))
    assert [x for _, _, x in results] == list(range(3000))
    assert {pid for pid, _, _ in results} == pids and len(pids) == 3
    assert {calls for _, calls, _ in results} == {1}
    assert init_logs(tmp_path) == {pid: "init\n" for pid in pids}


async def test_busy_worker_gets_no_more_items_least_loaded(tmp_path: Path) -> None:
    release = tmp_path / "release"
    items: list[Any] = [str(release), *range(1, 41)]
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("wait_for_file_or_pid"), size=2, max_inflight=1) as pool:
            results = pool.imap_unordered(items)
            others = [await results.__anext__() for _ in range(40)]
            # Every item but the blocking one is done, all by the other worker.
            assert sorted(i for i, _ in others) == list(range(1, 41))
            other_pids = {pid for _, pid in others}
            assert len(other_pids) == 1
            release.touch()
            index, blocked_pid = await results.__anext__()
            assert index == 0 and blocked_pid not in other_pids
            assert set(pool.pids) == {blocked_pid, *other_pids}


async def test_imap_unordered_yields_every_index_exactly_once() -> None:
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("square"), size=2, max_inflight=16) as pool:
            pairs = [pair async for pair in pool.imap_unordered(range(2000))]
    assert sorted(i for i, _ in pairs) == list(range(2000))
    assert all(result == i * i for i, result in pairs)


async def test_imap_unordered_pulls_a_lazy_input_only_as_needed() -> None:
    pulled = 0

    def endless() -> Iterator[int]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("square"), size=2, max_inflight=8) as pool:
            results = pool.imap_unordered(endless())
            async with results:
                got = [await results.__anext__() for _ in range(1000)]
            stats = pool.stats
    assert len({i for i, _ in got}) == 1000
    assert pulled <= 1000 + 2 * 2 * 8
    assert stats.pending == 0


async def test_submit_from_many_tasks() -> None:
    results: dict[int, Any] = {}

    async def one(pool: pk.WorkerPool, i: int) -> None:
        results[i] = await pool.submit(i)

    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("square"), size=2) as pool, trio.open_nursery() as n:
            for i in range(50):
                n.start_soon(one, pool, i)
    assert results == {i: i * i for i in range(50)}


async def test_a_fast_result_is_not_held_back_by_a_hanging_item_after_it() -> None:
    fast: list[Any] = []
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("hang"), size=1) as pool, trio.open_nursery() as nursery:

            async def submit_fast() -> None:
                fast.append(await pool.submit("fast"))
                nursery.cancel_scope.cancel()  # the hanging item is abandoned

            nursery.start_soon(submit_fast)
            while pool.stats.submitted < 1:  # the fast item is queued first
                await trio.lowlevel.checkpoint()
            nursery.start_soon(pool.submit, HANG)
    assert fast == ["fast"]


async def test_cancelling_the_pool_scope_kills_every_worker() -> None:
    before = descendants()
    pool = pk.WorkerPool(target("hang"), size=2)
    with trio.fail_after(HANG_GUARD), trio.CancelScope() as scope:
        async with pool, trio.open_nursery() as nursery:
            pids = pool.pids
            nursery.start_soon(pool.map, [HANG] * 4)
            await trio.testing.wait_all_tasks_blocked()
            assert pool.stats.inflight == 4  # both workers hold hanging items
            scope.cancel()
    assert scope.cancelled_caught
    assert len(pids) == 2 and not [pid for pid in pids if alive(pid)]
    assert descendants() <= before


async def test_failing_init_fails_the_pool() -> None:
    with trio.fail_after(HANG_GUARD), pytest.raises(pk.WorkerError) as info:
        async with pk.WorkerPool(target("square"), size=2, init=target("failing_init")) as pool:
            await pool.map(range(100))
    err = info.value
    assert (err.kind, err.remote) == ("RuntimeError", True)
    assert "cannot load the model" in err.message and "failing_init" in err.traceback


async def test_unknown_target_fails_on_enter() -> None:
    with trio.fail_after(HANG_GUARD), pytest.raises(pk.ProcessError) as info:
        async with pk.WorkerPool(target("no_such_function"), size=2):
            pass  # pragma: no cover
    assert info.value.exit_code == 2 and "no_such_function" in info.value.stderr


async def test_unencodable_item_is_an_error_value() -> None:
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("square"), size=1) as pool:
            results = await pool.map([1, object(), 3])
            submitted = await pool.submit(object())
    assert results[0] == 1 and results[2] == 9
    assert isinstance(results[1], pk.WorkerError) and results[1].kind == "CodecError"
    assert isinstance(submitted, pk.WorkerError) and submitted.index is None


async def test_unencodable_result_is_an_error_value_and_the_worker_stays() -> None:
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("unencodable_for_two"), size=1) as pool:
            pids = pool.pids
            results = await pool.map([1, 2, 3, 4])
            assert pool.pids == pids and pool.stats.crashes == 0
    assert [results[0], results[2], results[3]] == [1, 3, 4]
    assert isinstance(results[1], pk.WorkerError)
    assert (results[1].kind, results[1].index) == ("CodecError", 1)


async def test_item_larger_than_a_frame_is_an_error_value_and_the_worker_stays() -> None:
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("square"), size=1) as pool:
            pids = pool.pids
            results = await pool.map([2, "x" * (9 << 20), 3])
            assert pool.pids == pids and pool.stats.crashes == 0
    assert results[0] == 4 and results[2] == 9
    assert isinstance(results[1], pk.WorkerError)
    assert (results[1].kind, results[1].index) == ("ProtocolError", 1)


async def test_cheap_items_travel_in_large_chunks() -> None:
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("square"), size=2) as pool:
            first = pool.stats
            async with pool.imap_unordered(itertools.count()) as results:
                got = [await results.__anext__() for _ in range(20_000)]
                stats = pool.stats  # mid-stream: chunks are not yet shrinking
    assert all(result == i * i for i, result in got)
    assert first.chunksize == FIRST_CHUNK  # nothing measured yet
    assert stats.chunksize >= 256
    assert stats.max_inflight == 2 * stats.chunksize


async def test_items_much_larger_than_the_last_ones_are_chunked_by_their_own_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # After cheap small items the chunks hold thousands; 60 items of 200 kB would make
    # a 12 MB chunk, larger than a frame, were it built by the old estimate (it would
    # fail to encode and be split in halves until it fits).
    unsendable: list[BaseException] = []
    original = Worker._unsendable

    def spy(self: Worker, first: int, exc: BaseException) -> Any:
        unsendable.append(exc)
        return original(self, first, exc)

    monkeypatch.setattr(Worker, "_unsendable", spy)
    big = [bytes([i]) * 200_000 for i in range(60)]
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("size"), size=2) as pool:
            assert await pool.map(range(100_000)) == list(range(100_000))
            assert pool.stats.chunksize >= 60
            assert await pool.map(big) == [200_000] * 60
            stats = pool.stats
    assert unsendable == []
    assert stats.chunksize <= (1 << 20) // 200_000


async def test_slow_items_travel_one_at_a_time() -> None:
    assert SLOW_SECONDS > CHUNK_SECONDS  # one item is more than a chunk's worth
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("slow"), size=2) as pool:
            results = await pool.map(range(12))
            stats = pool.stats
    assert results == list(range(12))
    assert (stats.chunksize, stats.max_inflight) == (1, 2)


async def test_explicit_chunksize_and_max_inflight_are_kept() -> None:
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("square"), size=2, chunksize=50) as pool:
            assert await pool.map(range(1000)) == [i * i for i in range(1000)]
            fixed = pool.stats
        async with pk.WorkerPool(target("square"), size=2, max_inflight=60) as pool:
            assert await pool.map(range(1000)) == [i * i for i in range(1000)]
            bounded = pool.stats
    assert (fixed.chunksize, fixed.max_inflight) == (50, 100)
    assert bounded.max_inflight == 60 and bounded.chunksize <= 30


def test_chunksize_larger_than_max_inflight_is_refused() -> None:
    with pytest.raises(ValueError, match="chunksize"):
        pk.WorkerPool(target("square"), chunksize=100, max_inflight=10)


async def test_a_worker_stuck_on_a_slow_item_is_given_nothing_more(tmp_path: Path) -> None:
    # The stuck worker keeps the two first chunks it was given; everything else is done
    # by the other worker, although the chunk size and bound grow meanwhile.
    release = tmp_path / "release"
    count = 20_000
    stuck = 2 * FIRST_CHUNK - 1  # behind the blocking item, on its worker
    items: list[Any] = [str(release), *range(1, count)]
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("wait_for_file_or_pid"), size=2) as pool:
            results = pool.imap_unordered(items)
            done = [await results.__anext__() for _ in range(count - 1 - stuck)]
            assert pool.stats.max_inflight > 2 * FIRST_CHUNK  # it grew
            assert pool.stats.inflight == 1 + stuck and pool.stats.pending == 0
            release.touch()
            done += [pair async for pair in results]
    assert sorted(i for i, _ in done) == list(range(count))


async def test_large_chunks_crash_loses_one_item_and_runs_none_more_than_twice(
    tmp_path: Path,
) -> None:
    log = tmp_path / "runs"
    env = {**os.environ, RUN_LOG_ENV: str(log)}
    count = 20_000
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(
            target("crash_late_logged"), size=2, env=env, chunksize=2048
        ) as pool:
            results = await pool.map(range(count))
            stats = pool.stats
    errors = errors_in(results)
    assert list(errors) == [CRASH_LATE]
    assert (errors[CRASH_LATE].kind, errors[CRASH_LATE].index) == ("terminated", CRASH_LATE)
    assert all(results[i] == i * i for i in range(count) if i != CRASH_LATE)
    runs = Counter(int(line) for line in log.read_text().split())
    assert set(runs) == set(range(count))
    assert max(runs.values()) <= 2
    assert runs[CRASH_LATE] == 2  # in its chunk, then alone
    assert stats.crashes == 2 and stats.errors == 1


CRASH_GUARD = 180.0  # seconds: ~200 worker processes started on a loaded machine


@pytest.mark.parametrize("max_inflight", [None, 400])
async def test_only_the_items_that_crash_their_worker_are_errors(
    max_inflight: int | None,
) -> None:
    # A crash every 100 items: whatever the chunking and the timing, exactly the
    # crashing items come back as errors, every other item with its result (innocent
    # items chunked with a crashing one used to be lost twice and blamed).
    count = 10_000
    with trio.fail_after(CRASH_GUARD):
        async with pk.WorkerPool(target("crash_every"), size=2, max_inflight=max_inflight) as pool:
            results = await pool.map(range(count))
            stats = pool.stats
    crashing = [i for i in range(count) if i % CRASH_EVERY == CRASH_EVERY // 2]
    errors = errors_in(results)
    assert sorted(errors) == crashing
    assert all(e.kind == "terminated" and "while running" in e.message for e in errors.values())
    assert all(results[i] == i * i for i in range(count) if i not in errors)
    assert stats.errors == len(crashing) and stats.completed == count


async def test_a_worker_killed_from_outside_costs_no_item(tmp_path: Path) -> None:
    release = tmp_path / "release"
    count = 3000
    stuck = 2 * FIRST_CHUNK - 1
    items: list[Any] = [str(release), *range(1, count)]
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("wait_for_file_or_pid"), size=2) as pool:
            results = pool.imap_unordered(items)
            done = [await results.__anext__() for _ in range(count - 1 - stuck)]
            (blocked,) = set(pool.pids) - {pid for _, pid in done}
            os.kill(blocked, signal.SIGKILL)
            release.touch()
            done += [pair async for pair in results]
            stats = pool.stats
    assert sorted(i for i, _ in done) == list(range(count))
    assert not [r for _, r in done if isinstance(r, pk.WorkerError)]
    assert stats.crashes == 1 and stats.errors == 0
    assert stats.retried == 1 + stuck


async def test_without_a_progress_record_every_unanswered_item_is_isolated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ProgressRecords, "create", classmethod(lambda cls, slots: None))
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("crash"), size=2) as pool:
            results = await pool.map(range(500))
            stats = pool.stats
    assert list(errors_in(results)) == [CRASH]
    assert all(results[i] == i * i for i in range(500) if i != CRASH)
    assert stats.crashes == 2 and stats.errors == 1


async def test_item_raising_stop_iteration_is_an_error_value() -> None:
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("stop_iteration"), size=1) as pool:
            results = await pool.map(list(range(100)))
    errors = errors_in(results)
    assert list(errors) == [STOP] and errors[STOP].kind == "StopIteration"
    assert all(results[i] == i * i for i in range(100) if i != STOP)


class _Record:
    """A stand-in for the shared progress record: what the dead worker was running."""

    def __init__(self, start: int, end: int) -> None:
        self.record = (start, end)

    def read(self, slot: int) -> tuple[int, int]:
        return self.record


class _DeadWorker:
    """What the pool reads of a worker whose process is gone, when it settles its items."""

    def __init__(self, flights: list[Flight]) -> None:
        self.slot = 0
        self.pid = 4242
        self.inflight = deque(flights)
        self.load = sum(len(f.items) - f.done for f in flights)
        self.loss = pk.ProcessError("terminated", "boom", program="python", exit_code=1)
        self.timed_out = None

    def describe(self) -> str:
        return "worker 0 (pid 4242)"

    def take_flights(self) -> list[Flight]:
        flights = list(self.inflight)
        self.inflight.clear()
        self.load = 0
        return flights


def settle(flights: list[Flight], record: tuple[int, int] | None) -> pk.WorkerPool:
    """A pool (not started) after settling a dead worker that held ``flights``."""
    pool = pk.WorkerPool(target("square"), size=1)
    supervisor = pool._supervisor
    supervisor.progress = _Record(*record) if record else None  # type: ignore[assignment]
    worker: Any = _DeadWorker(flights)
    supervisor.limbo = worker.load
    supervisor.settle(worker)
    return pool


def queued(pool: pk.WorkerPool) -> list[tuple[list[int], SegmentState]]:
    """The queue: segments of items that never ran, then those that ran once (which
    wait for a worker holding nothing else)."""
    dispatcher = pool._dispatcher
    return [
        ([s.base + k for k in range(s.pos, s.stop)], s.state)  # type: ignore[operator]
        for s in [*dispatcher.pending, *dispatcher.reruns]
    ]


def suspects(pool: pk.WorkerPool) -> list[int | None]:
    return [index for _, index, _ in pool._dispatcher.suspects]


def test_settling_a_crash_requeues_by_what_ran() -> None:
    # Ids 100..109 are items 0..9, 110..114 items 10..14; the worker answered items 0-1
    # and was running the slice of ids 104..107 (items 4-7).
    run = StreamRun()
    first = Flight(100, run, 0, list(range(10)))
    first.done = 2
    pool = settle([first, Flight(110, run, 10, list(range(10, 15)))], (104, 108))
    assert queued(pool) == [([8, 9], FRESH), ([10, 11, 12, 13, 14], FRESH), ([2, 3], RAN)]
    assert suspects(pool) == [4, 5, 6, 7]
    assert not run.ready  # nothing delivered: all 13 unanswered items run again
    assert (pool.stats.pending, pool.stats.retried) == (13, 13)


async def test_items_that_ran_once_run_again_on_a_worker_holding_nothing_else() -> None:
    # Items 2-3 ran to the end on the dead worker: run again on a worker that is then
    # given nothing else until they are answered, so that another item crashing it
    # cannot take them along a second time.
    run = StreamRun()
    first = Flight(100, run, 0, list(range(10)))
    first.done = 2
    pool = settle([first, Flight(110, run, 10, list(range(10, 15)))], (104, 108))
    dispatcher = pool._dispatcher
    dispatcher.suspects.clear()  # placed elsewhere: this test is about items 2-3
    busy, idle = _worker(pool, 0), _worker(pool, 1)
    busy.give(Flight(500, run, 20, [20]))
    dispatcher.join(busy)
    dispatcher.join(idle)
    dispatcher.dispatch()
    assert [(f.start, f.items, f.state) for f in idle.inflight] == [(2, [2, 3], RAN)]
    assert all(f.state is FRESH for f in busy.inflight)
    idle.fed = False  # as if it had answered something: still nothing more for it
    dispatcher.dispatch()
    assert [(f.start, f.items) for f in idle.inflight] == [(2, [2, 3])]


def _worker(pool: pk.WorkerPool, slot: int) -> Worker:
    """A pool worker whose process is a stand-in (only what dispatch looks at)."""

    class _Pipe:
        pid = 1000 + slot

    return Worker(
        pool._supervisor,
        slot,
        _Pipe(),  # type: ignore[arg-type]
        timeout=None,
        has_init=False,
        init_timeout=None,
    )


def test_settling_does_not_run_an_item_a_third_time() -> None:
    # Items 0-5 had already run once (their answers lost with another worker).
    run = StreamRun()
    pool = settle([Flight(100, run, 0, list(range(6)), RAN)], (102, 104))
    errors = dict(run.ready)
    assert sorted(errors) == [0, 1, 2, 3]
    assert all(isinstance(e, pk.WorkerError) and e.kind == "terminated" for e in errors.values())
    assert "already lost once" in errors[0].message
    assert queued(pool) == [([4, 5], RAN)] and not pool._dispatcher.suspects


def test_settling_a_lone_item_makes_it_the_culprit_whatever_the_record() -> None:
    run = StreamRun()
    pool = settle([Flight(100, run, 7, [7], SUSPECT)], (90, 95))
    ((index, error),) = run.ready
    assert index == 7 and isinstance(error, pk.WorkerError) and error.kind == "terminated"
    assert error.exit_code == 1 and not pool._dispatcher.pending and not pool._dispatcher.suspects


def test_settling_without_a_record_suspects_every_unanswered_item() -> None:
    run = StreamRun()
    first = Flight(100, run, 0, list(range(5)))
    first.done = 3
    pool = settle([first, Flight(105, run, 5, [5, 6])], None)
    assert suspects(pool) == [3, 4, 5, 6]
    assert not pool._dispatcher.pending and not run.ready


def test_worker_error_pickles_with_its_fields() -> None:
    err = pk.WorkerError("terminated", "boom", index=3, pid=42, exit_code=1, stderr="tail")
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, pk.WorkerError)
    assert (copy.kind, copy.message, copy.index, copy.pid, copy.exit_code, copy.stderr) == (
        "terminated",
        "boom",
        3,
        42,
        1,
        "tail",
    )
    assert str(copy) == "terminated: boom"


@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=6),
    st.integers(0, 400),
)
def test_batch_dispatch_matches_choosing_the_least_loaded_worker_per_item(
    load_and_room: list[tuple[int, int]], available: int
) -> None:
    loads = [n for n, _ in load_and_room]
    caps = [n + room + 1 for n, room in load_and_room]
    expected = [0] * len(loads)
    current = list(loads)
    for _ in range(available):
        free = [i for i in range(len(current)) if current[i] < caps[i]]
        if not free:
            break
        best = min(free, key=lambda i: current[i])
        current[best] += 1
        expected[best] += 1
    assert water_fill(loads, caps, available) == expected


# -- function objects as targets ----------------------------------------------------------


class _Holder:
    def method(self, x: int) -> int:
        return x

    @staticmethod
    def static(x: int) -> int:
        return x

    @classmethod
    def klass(cls, x: int) -> int:
        return x


class _Callable:
    def __call__(self, x: int) -> int:
        return x


def test_target_spec_names_a_module_level_function_by_module_and_qualname() -> None:
    import math

    import pool_workers

    assert target_spec(pool_workers.square) == "pool_workers:square"
    assert target_spec(math.sqrt) == "math:sqrt"
    assert target_spec(str.upper) == "builtins:str.upper"
    assert target_spec(_Holder.static) == f"{__name__}:_Holder.static"
    assert target_spec(_Holder.klass) == f"{__name__}:_Holder.klass"
    assert target_spec("pkg.mod:fn") == "pkg.mod:fn"
    assert target_spec(WORKERS) == str(WORKERS)


def test_target_spec_refuses_a_lambda_naming_the_fix() -> None:
    with pytest.raises(TypeError, match=r"lambda.*top level of a module"):
        target_spec(lambda x: x)


def test_target_spec_refuses_a_closure_naming_the_fix() -> None:
    k = 3

    def times_k(x: int) -> int:
        return x * k

    with pytest.raises(TypeError, match=r"inside another function.*top level"):
        target_spec(times_k)


def test_target_spec_refuses_a_bound_method_of_an_object() -> None:
    with pytest.raises(TypeError, match=r"bound to a _Holder object.*module-level function"):
        target_spec(_Holder().method)


def test_target_spec_refuses_a_partial_and_a_callable_object() -> None:
    import functools

    with pytest.raises(TypeError, match="no module-level name"):
        target_spec(functools.partial(int, base=2))
    with pytest.raises(TypeError, match="no module-level name"):
        target_spec(_Callable())


def _replaced(x: int) -> int:
    return x


_first_replaced = _replaced


def _replaced(x: int) -> int:  # type: ignore[no-redef]
    return -x


def test_target_spec_refuses_a_function_its_module_name_no_longer_reaches() -> None:
    with pytest.raises(TypeError, match=r"not reachable as .*_replaced"):
        target_spec(_first_replaced)


def test_target_spec_refuses_a_non_callable() -> None:
    with pytest.raises(TypeError, match="not a int"):
        target_spec(3)  # type: ignore[arg-type]


async def test_pool_runs_a_function_object_and_its_init_object() -> None:
    import pool_workers

    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(pool_workers.square, size=2, init=pool_workers.noop) as pool:
            assert await pool.map(range(20)) == [i * i for i in range(20)]


async def test_pool_refuses_a_lambda_before_starting_any_process() -> None:
    before = descendants()
    with pytest.raises(TypeError, match="lambda"):
        pk.WorkerPool(lambda x: x, size=1)
    assert descendants() <= before


SCRIPT = """
import sys
import trio
import pipekit as pk

def cube(x):
    return x ** 3

async def main():
    async with pk.WorkerPool(cube, size=1) as pool:
        print(await pool.map([1, 2, 3]))

if __name__ == "__main__":
    trio.run(main)
"""


def test_pool_runs_a_function_of_a_script_main(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=HANG_GUARD
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 8, 27]"


def test_a_function_of_python_c_main_gets_a_value_error_naming_the_fix() -> None:
    import subprocess
    import sys

    code = (
        "import pipekit.workers as w\n"
        "def f(x): return x\n"
        "try: w.target_spec(f)\n"
        "except ValueError as e: print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD
    )
    assert "put it in a .py module" in done.stdout, done.stderr


def test_run_stage_takes_a_function_object() -> None:
    import pool_workers

    stage = pk.run(pool_workers.square, mode="item", workers=2)
    assert (pk.source(range(6)) | stage | pk.collect()).run() == [0, 1, 4, 9, 16, 25]


# -- start-up --------------------------------------------------------------------------------


async def test_worker_process_imports_only_the_child_runtime() -> None:
    """Workers start through a bootstrap that leaves the other floors unimported."""
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("pipeline_floor_loaded"), size=1) as pool:
            assert await pool.map([0]) == [False]


async def test_worker_code_can_still_use_all_of_pipekit() -> None:
    with trio.fail_after(HANG_GUARD):
        async with pk.WorkerPool(target("uses_pipekit"), size=1) as pool:
            assert await pool.map([1]) == [[2, True, True]]


def test_boot_refuses_bad_arguments() -> None:
    import subprocess
    import sys

    from pipekit.workers._child.boot import boot_argv

    done = subprocess.run(
        boot_argv(sys.executable, ["mod:fn", "--bogus", "x"]),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert done.returncode != 0
    assert "unexpected argument '--bogus'" in done.stderr


def test_pool_runs_a_function_of_a_module_run_with_python_m(tmp_path: Path) -> None:
    import subprocess
    import sys

    package = tmp_path / "app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "job.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-m", "app.job"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 8, 27]"


def test_a_function_target_puts_its_import_root_first_on_the_workers_pythonpath(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pool_workers

    from pipekit.workers._targets import resolve_target

    where = resolve_target(pool_workers.square)
    assert where.path == str(WORKERS.parent.resolve())
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = where.env(None)
    assert env is not None and env["PYTHONPATH"].split(os.pathsep) == [where.path, "/elsewhere"]
    assert where.env(env) is env  # already there: nothing to add
    assert resolve_target("mod:fn").env({"A": "1"}) == {"A": "1"}  # a string adds nothing


def test_a_standard_library_function_adds_nothing_to_the_pythonpath() -> None:
    import json

    from pipekit.workers._targets import resolve_target

    assert resolve_target(json.dumps).path is None
