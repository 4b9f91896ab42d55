"""pipekit.concurrency: parallel_map/filter, stream_map, spawn/spawn_link, timeout, Atom,
Result and the defaults. Virtual time (trio's MockClock) for everything that waits;
real threads and processes only where they are the point."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import conc_workers as workers
import psutil
import pytest
import trio
import trio.testing

import pipekit as pk
from pipekit.channels import Channel, after, channel
from pipekit.concurrency import (
    Atom,
    Result,
    aparallel_filter,
    aparallel_map,
    current_defaults,
    defaults,
    parallel_filter,
    parallel_map,
    scope,
    set_defaults,
    shutdown_pools,
    spawn,
    spawn_link,
    stream_map,
    timeout,
)


@pytest.fixture(autouse=True)
def _no_warm_pools() -> Iterator[None]:
    """No process-backend workers kept warm past a test (other test files count their
    processes)."""
    yield
    shutdown_pools()


# -- Result ----------------------------------------------------------------------------


def test_a_result_holds_a_value_or_an_error() -> None:
    good: Result[int] = Result(3)
    error = ValueError("bad")
    bad: Result[int] = Result(error=error)
    assert (good.ok, good.value, good.error, good.unwrap()) == (True, 3, None, 3)
    assert (bad.ok, bad.value, bad.error) == (False, None, error)
    assert bad.unwrap_or(7) == 7 and good.unwrap_or(7) == 3
    assert repr(good) == "Result(3)" and repr(bad) == "Result(error=ValueError('bad'))"


def test_unwrap_raises_the_original_error() -> None:
    error = KeyError("k")
    with pytest.raises(KeyError) as caught:
        Result(error=error).unwrap()
    assert caught.value is error


def test_a_result_refuses_both_a_value_and_an_error_or_a_non_exception() -> None:
    with pytest.raises(ValueError, match="not both"):
        Result(1, error=ValueError())
    with pytest.raises(TypeError, match="must be an exception"):
        Result(error="oops")  # type: ignore[arg-type]


# -- parallel_map: tasks ---------------------------------------------------------------


async def test_a_hundred_waits_of_half_a_second_take_one_period_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def io(i: int) -> int:
        await trio.sleep(0.5)
        return i * 10

    start = trio.current_time()
    results = await aparallel_map(io, range(100))
    assert trio.current_time() - start == pytest.approx(0.5)
    assert [r.unwrap() for r in results] == [i * 10 for i in range(100)]


async def test_max_workers_bounds_how_many_run_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    running = peak = 0

    async def io(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(1)
        running -= 1
        return i

    results = await aparallel_map(io, range(10), max_workers=3)
    assert peak == 3 and trio.current_time() == pytest.approx(4)
    assert [r.value for r in results] == list(range(10))


async def test_one_failure_and_one_timeout_among_a_thousand_come_back_in_their_places(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def work(i: int) -> int:
        if i == 100:
            raise ValueError("item 100 is bad")
        await trio.sleep(60 if i == 900 else 0.1)
        return i

    results = await aparallel_map(work, range(1000), timeout=5)
    assert len(results) == 1000
    assert isinstance(results[100].error, ValueError)
    assert isinstance(results[900].error, TimeoutError)
    assert "5 s" in str(results[900].error)
    assert [r.value for i, r in enumerate(results) if i not in (100, 900)] == [
        i for i in range(1000) if i not in (100, 900)
    ]
    assert trio.current_time() < 10  # the slow one was cancelled 5 s after it started


async def test_fail_fast_cancels_the_rest_and_raises(
    autojump_clock: trio.testing.MockClock,
) -> None:
    finished = 0

    async def work(i: int) -> int:
        nonlocal finished
        await trio.sleep(1 if i == 7 else 100)
        if i == 7:
            raise ValueError("seven")
        finished += 1
        return i

    with pytest.raises(ValueError, match="seven"):
        await aparallel_map(work, range(1000), fail_fast=True)
    assert finished == 0 and trio.current_time() == pytest.approx(1)


async def test_a_timeout_counts_as_a_failure_for_fail_fast(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(TimeoutError):
        await aparallel_map(trio.sleep, [1, 10, 1], timeout=2, fail_fast=True)


async def test_a_lazy_iterable_is_pulled_only_as_workers_are_free(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pulled = 0
    ahead: list[int] = []

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(20):
            pulled += 1
            yield i

    async def work(i: int) -> int:
        ahead.append(pulled - i)  # items pulled beyond this one
        await trio.sleep(1)
        return i

    results = await aparallel_map(work, items(), max_workers=2)
    assert [r.value for r in results] == list(range(20)) and max(ahead) <= 2


async def test_an_error_of_the_items_iterator_is_raised() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    async def work(i: int) -> int:
        return i

    with pytest.raises(OSError, match="disk gone"):
        await aparallel_map(work, items())


async def test_the_blocking_form_inside_trio_names_the_async_one() -> None:
    with pytest.raises(RuntimeError, match="aparallel_map"):
        parallel_map(str, [1])
    with pytest.raises(RuntimeError, match="aparallel_filter"):
        parallel_filter(bool, [1])


def test_the_blocking_form_runs_from_a_script() -> None:
    async def double(x: int) -> int:
        await trio.lowlevel.checkpoint()
        return 2 * x

    assert [r.value for r in parallel_map(double, [1, 2, 3])] == [2, 4, 6]


def test_plain_functions_run_in_threads_and_async_ones_as_tasks() -> None:
    main = threading.get_ident()

    def where(_: int) -> int:
        return threading.get_ident()

    async def where_async(_: int) -> int:
        return threading.get_ident()

    assert main not in {r.value for r in parallel_map(where, [1, 2])}
    assert {r.value for r in parallel_map(where_async, [1, 2])} == {main}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backend": "fibers"}, ValueError, "backend must be"),
        ({"backend": "task"}, TypeError, "runs async functions"),
        ({"max_workers": 0}, ValueError, "at least 1"),
        ({"max_workers": True}, TypeError, "max_workers"),
        ({"timeout": 0}, ValueError, "more than 0"),
        ({"timeout": "soon"}, ValueError, "not a duration"),
        ({"fail_fast": 1}, TypeError, "fail_fast"),
    ],
)
def test_bad_arguments_get_readable_errors(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        parallel_map(abs, [1], **kwargs)


def test_an_async_function_on_the_thread_backend_and_bad_inputs_are_refused() -> None:
    async def f(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="use backend='task'"):
        parallel_map(f, [1], backend="thread")
    with pytest.raises(TypeError, match="iterable"):
        parallel_map(abs, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="function first"):
        parallel_map(5, [1])  # type: ignore[arg-type]


# -- parallel_map: threads -------------------------------------------------------------


def test_the_thread_backend_keeps_order_and_returns_errors_as_values() -> None:
    def work(i: int) -> int:
        if i % 10 == 3:
            raise ValueError(i)
        return -i

    results = parallel_map(work, range(100), backend="thread", max_workers=8)
    for i, r in enumerate(results):
        assert (r.ok and r.value == -i) or (i % 10 == 3 and isinstance(r.error, ValueError))


def test_slow_items_keep_every_thread_busy() -> None:
    barrier = threading.Barrier(16, timeout=30)  # passes only when 16 calls run at once
    lock = threading.Lock()
    running = peak = 0

    def slow(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        barrier.wait()
        with lock:
            running -= 1
        return i

    results = parallel_map(slow, range(64), backend="thread", max_workers=16)
    assert peak == 16 and [r.unwrap() for r in results] == list(range(64))


def test_a_thread_item_that_overruns_its_timeout_gets_a_timeout_error() -> None:
    results = parallel_map(time.sleep, [0, 0.2, 0], backend="thread", timeout=0.05)
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].error, TimeoutError)


def test_fail_fast_stops_the_threads_before_their_next_item() -> None:
    calls = itertools.count()

    def work(i: int) -> int:
        next(calls)
        if i == 0:
            raise ValueError("first")
        return i

    with pytest.raises(ValueError, match="first"):
        parallel_map(work, range(10_000), backend="thread", max_workers=2, fail_fast=True)
    assert next(calls) <= 3  # the failing call, and at most one more per other thread


async def test_cancelling_the_thread_backend_stops_threads_before_their_next_item() -> None:
    calls = 0
    lock = threading.Lock()

    with trio.CancelScope() as cancel:

        def work(i: int) -> int:
            nonlocal calls
            with lock:
                calls += 1
                if calls == 10:
                    trio.from_thread.run_sync(cancel.cancel)
            return i

        await aparallel_map(work, range(100_000), backend="thread", max_workers=4)
    assert cancel.cancelled_caught and calls < 20


# -- parallel_map: processes -----------------------------------------------------------


def test_the_process_backend_returns_results_and_errors_in_order() -> None:
    results = parallel_map(workers.fail_on_three, range(6), backend="process", max_workers=2)
    assert [r.value for r in results if r.ok] == [0, 1, 2, 4, 5]
    error = results[3].error
    assert isinstance(error, pk.WorkerError) and error.kind == "ValueError"
    with pytest.raises(pk.WorkerError, match="three"):
        results[3].unwrap()


def test_the_process_backend_spreads_cpu_bound_work_over_both_cores() -> None:
    results = parallel_map(workers.busy, [0.3] * 6, backend="process", max_workers=2)
    spans = [r.unwrap() for r in results]
    by_pid: dict[float, list[list[float]]] = {}
    for span in spans:
        by_pid.setdefault(span[0], []).append(span)
    assert len(by_pid) == 2  # both workers computed
    (a, b) = by_pid.values()
    # Their busy intervals overlap: both processes were computing at the same time.
    assert max(min(s[1] for s in a), min(s[1] for s in b)) < min(
        max(s[2] for s in a), max(s[2] for s in b)
    )


def test_a_process_item_that_overruns_its_timeout_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    items: list[list[str | float]] = [[str(pid_file), 60.0]]
    results = parallel_map(
        workers.pid_then_sleep,
        items,
        backend="process",
        max_workers=1,
        timeout=1,
    )
    error = results[0].error
    assert isinstance(error, TimeoutError) and isinstance(error.__cause__, pk.WorkerError)
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_fail_fast_on_the_process_backend_raises_the_first_failure() -> None:
    with pytest.raises(pk.WorkerError, match="three"):
        parallel_map(workers.fail_on_three, range(6), backend="process", fail_fast=True)


class _Holder:
    def method(self, x: int) -> int:
        return x


def test_a_lambda_or_closure_on_the_process_backend_gets_a_clear_error() -> None:
    def nested(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="backend='process' runs fn in worker processes: a lambda"):
        parallel_map(lambda x: x, [1], backend="process")
    with pytest.raises(TypeError, match="inside another function"):
        parallel_map(nested, [1], backend="process")
    with pytest.raises(TypeError, match="bound to a _Holder"):
        parallel_map(_Holder().method, [1], backend="process")


# -- parallel_filter -------------------------------------------------------------------


def test_parallel_filter_keeps_matching_items_in_order_and_failures_in_place() -> None:
    def odd(x: int) -> bool:
        if x == 4:
            raise ValueError("four")
        return x % 2 == 1

    kept = parallel_filter(odd, range(8))
    assert [r.value if r.ok else type(r.error) for r in kept] == [1, 3, ValueError, 5, 7]
    assert [r.value for r in parallel_filter(odd, iter([1, 2, 3]))] == [1, 3]


async def test_aparallel_filter_runs_inside_trio(autojump_clock: trio.testing.MockClock) -> None:
    async def slow_even(x: int) -> bool:
        await trio.sleep(1)
        return x % 2 == 0

    kept = await aparallel_filter(slow_even, range(10))
    assert [r.value for r in kept] == [0, 2, 4, 6, 8] and trio.current_time() == 1


# -- stream_map ------------------------------------------------------------------------


async def test_stream_map_yields_results_in_input_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow_first(i: int) -> int:
        await trio.sleep(10 - i)
        return i

    async with stream_map(slow_first, range(10), workers=10) as results:
        assert [r.value async for r in results] == list(range(10))


async def test_stream_map_unordered_yields_results_as_they_complete(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow_first(i: int) -> int:
        await trio.sleep(10 - i)
        return i

    async with stream_map(slow_first, range(10), workers=10, ordered=False) as results:
        assert [r.value async for r in results] == list(range(9, -1, -1))


async def test_stream_map_over_an_endless_source_stops_and_pulls_at_most_buffer_ahead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pulled = running = 0
    got: list[int] = []

    def endless() -> Iterator[int]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    async def work(i: int) -> int:
        nonlocal running
        running += 1
        try:
            await trio.sleep(1 + i % 3)
            return i
        finally:
            running -= 1

    async with stream_map(work, endless(), workers=4, buffer=6) as results:
        async for r in results:
            assert results.pulled_ahead <= 6
            got.append(r.unwrap())
            if len(got) == 25:
                break
    assert got == list(range(25))
    assert pulled <= 25 + 6 and running == 0


async def test_a_slow_first_item_holds_back_the_ordered_stream_within_buffer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    delivered = 0
    ahead: list[int] = []

    def items() -> Iterator[int]:
        for i in range(40):
            ahead.append(i + 1 - delivered)  # pulled, counting this one, not handed out
            yield i

    async def work(i: int) -> int:
        await trio.sleep(30 if i == 0 else 1)
        return i

    async with stream_map(work, items(), workers=3, buffer=5) as results:
        async for r in results:
            assert r.value == delivered
            delivered += 1
    assert delivered == 40 and max(ahead) == 5


async def test_stream_map_takes_an_async_source(autojump_clock: trio.testing.MockClock) -> None:
    async def ticks() -> AsyncIterator[int]:
        for i in range(5):
            await trio.sleep(1)
            yield i

    async def square(i: int) -> int:
        return i * i

    async with stream_map(square, ticks(), workers=2) as results:
        assert [r.value async for r in results] == [0, 1, 4, 9, 16]


async def test_stream_map_reads_a_channel_until_it_is_closed() -> None:
    work: Channel[str] = channel(2)

    async def produce() -> None:
        for url in ["a", "b", "c"]:
            await work.send(url)
        work.close()

    async def fetch(url: str) -> str:
        return f"<{url}>"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async with stream_map(fetch, work, workers=2) as results:
            assert [r.value async for r in results] == ["<a>", "<b>", "<c>"]


async def test_stream_map_runs_plain_functions_in_threads() -> None:
    async with stream_map(lambda _: threading.get_ident(), range(4), workers=2) as results:
        idents = {r.unwrap() async for r in results}
    assert threading.get_ident() not in idents


async def test_stream_map_returns_errors_and_timeouts_as_values(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def work(i: int) -> int:
        if i == 1:
            raise ValueError("one")
        await trio.sleep(100 if i == 2 else 0)
        return i

    async with stream_map(work, range(4), workers=4, timeout="1s") as results:
        got = [r async for r in results]
    assert [type(r.error) if r.error else r.value for r in got] == [
        0,
        ValueError,
        TimeoutError,
        3,
    ]


async def test_a_source_error_ends_the_stream_after_the_results_before_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("source broke")

    async def same(i: int) -> int:
        return i

    seen: list[int] = []
    with pytest.raises(OSError, match="source broke"):
        async with stream_map(same, items(), workers=1) as results:
            async for r in results:
                seen.append(r.unwrap())
    assert seen == [1, 2]


def test_stream_map_from_a_script_stops_its_thread_when_the_loop_breaks() -> None:
    pulled = 0

    def endless() -> Iterator[int]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    got = []
    with stream_map(lambda i: i * 2, endless(), workers=3, buffer=5) as results:
        for r in results:
            got.append(r.unwrap())
            if len(got) == 50:
                break
    assert got == [2 * i for i in range(50)] and pulled <= 50 + 5
    assert not [t for t in threading.enumerate() if t.name == "pipekit-stream_map"]


def test_stream_map_from_a_script_raises_the_source_error() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise OSError("gone")

    with pytest.raises(OSError, match="gone"):
        list(stream_map(abs, items()))


async def test_stream_map_misuse_gets_readable_errors() -> None:
    with pytest.raises(ValueError, match="at least workers"):
        stream_map(abs, [1], workers=4, buffer=2)
    with pytest.raises(TypeError, match="iterable"):
        stream_map(abs, 3)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="async with"):
        async for _ in stream_map(abs, [1]):
            pass
    with pytest.raises(RuntimeError, match="async with"):
        list(stream_map(abs, [1]))  # blocking iteration inside trio


# -- spawn, spawn_link, timeout --------------------------------------------------------


async def test_spawn_link_delivers_one_result_then_ends() -> None:
    async def answer() -> int:
        return 42

    async with scope():
        reply = spawn_link(answer)
        assert await reply.receive() == Result(42)
        with pytest.raises(trio.EndOfChannel):
            await reply.receive()


async def test_a_spawn_link_failure_goes_into_its_result_not_the_scope() -> None:
    async def boom() -> None:
        raise ValueError("boom")

    async with scope() as s:
        result = await spawn_link(boom).receive()
    assert isinstance(result.error, ValueError) and s.errors == []


async def test_spawn_link_runs_a_plain_function_in_a_thread() -> None:
    async with scope():
        result = await spawn_link(threading.get_ident).receive()
    assert result.ok and result.value != threading.get_ident()


def test_spawn_link_of_a_plain_function_that_returns_late_gets_a_timeout_error() -> None:
    async def main() -> Result[Any]:
        async with scope():
            result = await spawn_link(time.sleep, 0.2, timeout=0.05).receive()
        return result

    assert isinstance(trio.run(main).error, TimeoutError)


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_no_items_give_no_results(backend: Any) -> None:
    assert parallel_map(workers.square, [], backend=backend) == []
    assert parallel_filter(workers.square, iter([]), backend="thread") == []


async def test_spawn_link_times_out_into_its_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scope():
        result = await spawn_link(trio.sleep, 60, timeout="2s").receive()
    assert isinstance(result.error, TimeoutError) and trio.current_time() == 2


async def test_select_takes_the_first_spawn_link_or_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def after_seconds(n: float) -> float:
        await trio.sleep(n)
        return n

    async with scope() as s:
        slow, fast = spawn_link(after_seconds, 5), spawn_link(after_seconds, 1)
        got = await pk.select([slow.case_receive(), fast.case_receive()])
        assert got.channel is fast and got.value == Result(1)
        timer = after("2s")
        got = await pk.select([slow.case_receive(), timer.case_receive()])
        assert got.channel is timer
        s.cancel()


async def test_a_spawn_failure_is_logged_at_once_and_raised_when_the_scope_ends(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    finished: list[str] = []

    async def fails() -> None:
        raise ValueError("lost?")

    async def slow() -> None:
        await trio.sleep(5)
        finished.append("slow")

    logged = caplog.at_level(logging.ERROR, logger="pipekit.concurrency")
    with logged, pytest.raises(ValueError, match="lost"):
        async with scope():
            spawn(fails)
            spawn(slow)
            await trio.sleep(1)
            assert "fails" in caplog.text and "lost?" in caplog.text  # logged at once
    assert finished == ["slow"]  # the failure did not cancel its sibling


async def test_several_spawn_failures_are_raised_together() -> None:
    async def fails(n: int) -> None:
        raise ValueError(n)

    with pytest.RaisesGroup(ValueError, ValueError):
        async with scope():
            spawn(fails, 1)
            spawn(fails, 2)


async def test_spawned_calls_may_spawn_into_the_same_scope() -> None:
    seen: list[int] = []

    async def parent() -> None:
        spawn(child, 2)
        seen.append(1)

    async def child(n: int) -> None:
        seen.append(n)

    async with scope():
        spawn(parent)
    assert sorted(seen) == [1, 2]


async def test_an_error_in_the_scope_body_cancels_the_spawned_calls() -> None:
    finished: list[bool] = []

    async def forever() -> None:
        await trio.sleep_forever()
        finished.append(True)

    with pytest.raises(KeyError):
        async with scope():
            spawn(forever)
            raise KeyError("body")
    assert finished == []


async def test_spawn_outside_a_scope_says_how_to_open_one() -> None:
    with pytest.raises(RuntimeError, match="scope"):
        spawn(trio.sleep, 0)
    with pytest.raises(RuntimeError, match="scope"):
        spawn_link(trio.sleep, 0)


async def test_timeout_returns_the_value_the_error_or_a_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def value(x: int) -> int:
        await trio.sleep(1)
        return x

    async def fails() -> None:
        raise ValueError("inner")

    assert await timeout(2, value, 5) == Result(5)
    slow = await timeout("500ms", value, 5)
    assert isinstance(slow.error, TimeoutError) and "0.5 s" in str(slow.error)
    failed = await timeout(1, fails)
    assert isinstance(failed.error, ValueError)


async def test_timeout_refuses_a_plain_function() -> None:
    with pytest.raises(TypeError, match="make it async"):
        await timeout(1, time.sleep, 0)  # type: ignore[arg-type]


def test_timeout_runs_from_a_script() -> None:
    assert trio.run(timeout, 1, trio.sleep, 0) == Result(None)


# -- defaults --------------------------------------------------------------------------


async def test_defaults_apply_inside_their_block_and_calls_override_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    running = peak = 0

    async def io(_: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await trio.sleep(10)
        finally:
            running -= 1

    with defaults(max_workers=3, timeout="1s") as d:
        assert d.max_workers == 3 and current_defaults().timeout == 1
        results = await aparallel_map(io, range(9))
        assert peak == 3 and all(isinstance(r.error, TimeoutError) for r in results)
        peak = 0
        results = await aparallel_map(io, range(4), max_workers=4, timeout=20)
        assert peak == 4 and all(r.ok for r in results)
    assert current_defaults().max_workers == 100 and current_defaults().timeout is None


def test_max_processes_sizes_the_process_backend() -> None:
    with defaults(max_processes=1):
        results = parallel_map(workers.busy, [0.01] * 4, backend="process")
    assert len({r.unwrap()[0] for r in results}) == 1


def test_set_defaults_changes_them_for_the_program() -> None:
    previous = set_defaults(max_workers=7)
    try:
        assert current_defaults().max_workers == 7
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(current_defaults().max_workers))
        t.start()
        t.join()
        assert seen == [7]
    finally:
        set_defaults(max_workers=previous.max_workers)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"workers": 3}, TypeError),
        ({"max_workers": 0}, ValueError),
        ({"max_processes": -1}, ValueError),
        ({"timeout": -1}, ValueError),
        ({"timeout": "later"}, ValueError),
    ],
)
def test_bad_defaults_are_refused(changes: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        set_defaults(**changes)
    with pytest.raises(error), defaults(**changes):
        pass


# -- Atom ------------------------------------------------------------------------------


def test_eight_threads_swapping_ten_thousand_times_each_count_exactly() -> None:
    counter = Atom(0)

    def bump() -> None:
        for _ in range(10_000):
            counter.swap(lambda n: n + 1)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.deref() == 80_000


async def test_trio_tasks_swapping_across_checkpoints_count_exactly() -> None:
    counter: Atom[dict[str, int]] = Atom({"n": 0})

    async def bump() -> None:
        for _ in range(100):
            counter.swap(lambda d: {"n": d["n"] + 1})
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(bump)
    assert counter.deref() == {"n": 2000}


def test_swap_runs_its_function_again_when_the_value_changed_meanwhile() -> None:
    atom = Atom(1)
    calls: list[int] = []

    def double_and_meddle(n: int) -> int:
        calls.append(n)
        if len(calls) == 1:
            atom.reset(10)  # another writer got in between
        return n * 2

    assert atom.swap(double_and_meddle) == 20 and calls == [1, 10]


def test_atom_reset_compare_and_set_and_swap_arguments() -> None:
    atom = Atom([1])
    first = atom.deref()
    assert atom.swap(lambda xs, x, y: [*xs, x, y], 2, 3) == [1, 2, 3]
    assert not atom.compare_and_set(first, [0])  # no longer the same object
    current = atom.deref()
    assert atom.compare_and_set(current, [9]) and atom.deref() == [9]
    assert atom.reset([]) == [] and repr(atom) == "Atom([])"


def test_the_helpers_are_exported_from_pipekit() -> None:
    assert pk.parallel_map is parallel_map and pk.Atom is Atom and pk.Result is Result
