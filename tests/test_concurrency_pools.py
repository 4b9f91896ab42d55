"""The process backend's warm pools: reuse across calls, resize, idle stop (trio's
MockClock), crash replacement, opt-out, shutdown, and no worker left behind at the
interpreter's exit or when the parent process is killed."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import conc_workers as workers
import psutil
import pytest
import trio
import trio.testing

import pipekit as pk
from pipekit.concurrency import (
    aparallel_map,
    defaults,
    parallel_filter,
    parallel_map,
    process_pools,
    shutdown_pools,
)

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TARGET = "conc_workers:pid"


@pytest.fixture(autouse=True)
def _fresh_pools() -> Iterator[None]:
    """Every test starts and ends without the program's warm pools."""
    shutdown_pools()
    yield
    shutdown_pools()


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie not yet reaped counts as gone)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def pids_of(results: list[pk.Result[int]]) -> set[int]:
    return {r.unwrap() for r in results}


# -- the program's pools (blocking calls, each with no trio loop of its own) -----------


def test_a_second_call_reuses_the_warm_workers_of_the_first() -> None:
    first = pids_of(parallel_map(workers.pid_after, [0.05] * 4, backend="process", max_workers=2))
    second = pids_of(parallel_map(workers.pid_after, [0.05] * 4, backend="process", max_workers=2))
    assert len(first) == 2 and second == first


def test_calls_from_separate_trio_runs_share_the_programs_pools() -> None:
    async def call() -> set[int]:
        return pids_of(await aparallel_map(workers.pid, range(3), backend="process", max_workers=2))

    first = trio.run(call)
    assert trio.run(call) == first and parallel_filter(workers.pid, [1], backend="process")


def test_threads_calling_at_once_share_one_warm_pool() -> None:
    warm = pids_of(parallel_map(workers.pid_after, [0.05] * 4, backend="process", max_workers=2))
    seen: list[set[int]] = []

    def call() -> None:
        seen.append(
            pids_of(parallel_map(workers.pid_after, [0.0] * 50, backend="process", max_workers=2))
        )

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(seen) == 4 and set().union(*seen) <= warm


def test_a_call_with_another_max_workers_resizes_the_pool() -> None:
    one = pids_of(parallel_map(workers.pid_after, [0.05] * 4, backend="process", max_workers=1))
    two = pids_of(parallel_map(workers.pid_after, [0.05] * 4, backend="process", max_workers=2))
    assert len(one) == 1 and len(two) == 2 and not one & two


def test_reuse_false_runs_a_pool_for_the_call_only() -> None:
    first = pids_of(parallel_map(workers.pid, [1, 2], backend="process", reuse=False))
    second = pids_of(parallel_map(workers.pid, [1, 2], backend="process", reuse=False))
    assert not first & second and all(gone(pid) for pid in first | second)


def test_shutdown_pools_stops_the_workers_and_the_next_call_starts_new_ones() -> None:
    first = pids_of(parallel_map(workers.pid, [1, 2], backend="process"))
    shutdown_pools()
    assert all(gone(pid) for pid in first)
    assert not pids_of(parallel_map(workers.pid, [1, 2], backend="process")) & first


def test_a_crashed_worker_is_replaced_and_its_item_is_an_error_value() -> None:
    warm = pids_of(parallel_map(workers.pid, [1], backend="process", max_workers=1))
    results = parallel_map(workers.pid_or_crash, [1, -1, 2], backend="process", max_workers=1)
    error = results[1].error
    assert isinstance(error, pk.WorkerError) and error.kind == "terminated"
    assert results[0].ok and results[2].ok
    after = pids_of(parallel_map(workers.pid_or_crash, [3], backend="process", max_workers=1))
    assert len(after) == 1 and not after & warm  # the replacement serves the next call


def test_a_timed_out_item_kills_its_worker_and_the_pool_goes_on(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    slow: list[list[str | float]] = [[str(pid_file), 60.0]]
    results = parallel_map(
        workers.pid_then_sleep, slow, backend="process", max_workers=1, timeout=0.5
    )
    assert isinstance(results[0].error, TimeoutError)
    assert gone(int(pid_file.read_text()))
    quick: list[list[str | float]] = [[str(pid_file), 0.0]]
    again = parallel_map(workers.pid_then_sleep, quick, backend="process", timeout=0.5)
    assert again[0].ok


def test_fail_fast_closes_a_warm_pool_whose_items_are_still_running() -> None:
    # Items of 0.3 s: the pool learns to send them one at a time.
    warm = pids_of(parallel_map(workers.pid_after, [0.3] * 4, backend="process", max_workers=2))
    with pytest.raises(pk.WorkerError, match="non-negative"):
        parallel_map(
            workers.pid_after, [-1.0, 30.0, 30.0], backend="process", max_workers=2, fail_fast=True
        )
    # The pool closed (its busy worker killed, not left on its 30 s items): a new one.
    again = pids_of(parallel_map(workers.pid_after, [0.0] * 2, backend="process", max_workers=2))
    assert not again & warm


def test_cancelling_a_call_from_trio_cancels_it_on_the_pools() -> None:
    async def main() -> float:
        with trio.move_on_after(0.5) as scope:
            await aparallel_map(workers.pid_after, [30.0] * 2, backend="process", max_workers=2)
        assert scope.cancelled_caught
        return trio.current_time() - scope.deadline

    assert trio.run(main) < 20  # it ended at the cancellation, not after its 30 s items
    assert parallel_map(workers.pid, [1, 2], backend="process", max_workers=2)[0].ok


# -- a block's own pools (MockClock for the idle time) ---------------------------------


async def test_process_pools_keeps_one_pool_for_the_block_and_stops_it_at_its_end() -> None:
    async with process_pools() as pools:
        first = pids_of(
            await aparallel_map(workers.pid, range(4), backend="process", max_workers=2)
        )
        second = pids_of(
            await aparallel_map(workers.pid, range(4), backend="process", max_workers=2)
        )
        started = pools.pids[TARGET]
        assert first | second <= set(started) and len(started) == 2
    assert pools.pids == {} and all(gone(pid) for pid in started)


async def test_a_pool_starts_with_the_workers_its_first_call_can_use_and_grows() -> None:
    async with process_pools() as pools:
        await aparallel_map(workers.pid, [1], backend="process", max_workers=2)
        (one,) = pools.pids[TARGET]  # one item: one process, not max_workers
        await aparallel_map(workers.pid, [1, 2, 3], backend="process", max_workers=2)
        grown = pools.pids[TARGET]
        await aparallel_map(workers.pid, [1], backend="process", max_workers=2)
        assert len(grown) == 2 and one not in grown and pools.pids[TARGET] == grown


async def test_an_idle_pool_stops_after_process_idle(mock_clock: trio.testing.MockClock) -> None:
    async with process_pools() as pools:
        with defaults(process_idle="10s"):
            await aparallel_map(workers.pid, [1], backend="process", max_workers=1)
            (warm,) = pools.pids[TARGET]
            mock_clock.jump(9)
            await trio.testing.wait_all_tasks_blocked()
            assert pools.pids == {TARGET: [warm]}  # not yet
            await aparallel_map(workers.pid, [1], backend="process", max_workers=1)
            mock_clock.jump(9.5)  # 9.5 s after the last call: still warm
            await trio.testing.wait_all_tasks_blocked()
            assert pools.pids == {TARGET: [warm]}
            mock_clock.jump(1)
            await trio.testing.wait_all_tasks_blocked()
            assert pools.pids == {}  # stopped: the next call starts a new pool
            (fresh,) = pids_of(
                await aparallel_map(workers.pid, [1], backend="process", max_workers=1)
            )
    assert fresh != warm and gone(warm) and gone(fresh)


def test_process_idle_is_a_duration() -> None:
    with defaults(process_idle="2m") as d:
        assert d.process_idle == 120
    with pytest.raises(ValueError), defaults(process_idle=-1):
        pass
    with pytest.raises(TypeError), defaults(process_idle=[1]):
        pass


def test_reuse_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="reuse must be True or False"):
        parallel_map(workers.pid, [1], backend="process", reuse=1)  # type: ignore[arg-type]


# -- nothing left behind ---------------------------------------------------------------


def _script(body: str) -> list[str]:
    code = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(TESTS)!r}, {str(ROOT)!r}]
        import conc_workers
        import pipekit as pk
        pids = sorted({{r.unwrap() for r in pk.parallel_map(
            conc_workers.pid_after, [0.05] * 4, backend="process", max_workers=2)}})
        print(*pids, flush=True)
        """
    )
    return [sys.executable, "-c", code + textwrap.dedent(body)]


def test_no_worker_outlives_the_interpreter_that_started_it() -> None:
    done = subprocess.run(_script(""), capture_output=True, text=True, timeout=60, check=True)
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 2 and all(gone(pid) for pid in pids)  # reaped before it exited


def test_workers_stop_when_their_parent_process_is_killed() -> None:
    parent = subprocess.Popen(
        _script("import time; time.sleep(60)"), stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        children = [psutil.Process(pid) for pid in pids]
        assert all(child.ppid() == parent.pid for child in children)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive
