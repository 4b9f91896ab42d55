"""Tests of the operators (``take``, ``skip``, ``batch``, ``unbatch``, ``tumbling``,
``window``, ``throttle``, ``tee``, ``flat_map``), ``name=``, and iterating a pipeline.

Every test asserts exact results. Time-based operators run under trio's
``autojump_clock`` (virtual time: no test sleeps for real); trio tests that could hang
run under ``trio.fail_after`` as a guard only. END, ERROR and cancellation through
every operator are checked by the parametrized tests at the top.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from proc_helpers import assert_no_children

import pipekit as pk

HANG_GUARD = 10.0  # seconds; only ever reached when something is broken
ROOT = Path(__file__).resolve().parent.parent

Schedule = Sequence[tuple[float, Any]]


def timed(schedule: Schedule, *, then_hang: bool = False) -> Callable[[], AsyncIterator[Any]]:
    """A source function yielding each ``(t, item)`` at time ``t`` after it starts
    (virtual time under ``autojump_clock``), then ending (or never ending)."""

    async def gen() -> AsyncIterator[Any]:
        start = trio.current_time()
        for t, item in schedule:
            await trio.sleep_until(start + t)
            yield item
        if then_hang:
            await trio.sleep_forever()

    return gen


def recorder(into: list[tuple[float, Any]]) -> Callable[[Any], Any]:
    """An async sink function recording ``(time, message)``."""

    async def record(msg: Any) -> None:
        into.append((trio.current_time(), msg))

    return record


def states(p: pk.Pipeline) -> dict[str, str]:
    return {name: str(st.state) for name, st in p.stats.items()}


# --- END, ERROR and cancellation through every operator ----------------------------------

OPERATORS: dict[str, Callable[[], pk.Stage | pk.Pipeline]] = {
    "flat_map": lambda: pk.flat_map(lambda x: [x, x]),
    "flat_map(async)": lambda: pk.flat_map(_async_pair),
    "batch": lambda: pk.batch(3),
    "batch(timeout)": lambda: pk.batch(3, timeout=0.5),
    "unbatch": lambda: pk.map(lambda x: [x]) | pk.unbatch(),
    "take": lambda: pk.take(1000),
    "skip": lambda: pk.skip(2),
    "tumbling": lambda: pk.tumbling(3),
    "tumbling(seconds)": lambda: pk.tumbling(seconds=0.5),
    "window": lambda: pk.window(2),
    "window(seconds)": lambda: pk.window(seconds=1.0, every=0.5),
    "throttle": lambda: pk.throttle(1000),
    "tee": lambda: pk.tee(lambda x: None),
    "map(on_error)": lambda: pk.map(lambda x: x, on_error="skip", retry=1),
}


async def _async_pair(x: int) -> list[int]:
    await trio.lowlevel.checkpoint()
    return [x, x]


def _compose(op: Callable[[], pk.Stage | pk.Pipeline], head: pk.Stage) -> pk.Pipeline:
    stage = op()
    return head | stage if isinstance(stage, pk.Stage) else pk.Pipeline([head, *stage.stages])


@pytest.mark.parametrize("name", sorted(OPERATORS))
async def test_end_propagates_through_each_operator(
    name: str, autojump_clock: trio.testing.MockClock
) -> None:
    p = _compose(OPERATORS[name], pk.source(timed([(0.1 * i, i) for i in range(10)])))
    with trio.fail_after(HANG_GUARD):
        result = await p.arun()
    assert result, name
    assert set(states(p).values()) == {"done"}, states(p)


@pytest.mark.parametrize("name", sorted(OPERATORS))
async def test_an_upstream_error_propagates_through_each_operator(
    name: str, autojump_clock: trio.testing.MockClock
) -> None:
    async def failing() -> AsyncIterator[int]:
        for i in range(5):
            await trio.sleep(0.1)
            yield i
        raise ValueError("source broke")

    p = _compose(OPERATORS[name], pk.source(failing))
    with trio.fail_after(HANG_GUARD), pytest.raises(pk.ModuleError) as info:
        await p.arun()
    assert info.value.module == "source(failing)"
    assert isinstance(info.value.__cause__, ValueError)
    st = states(p)
    assert st["source(failing)"] == "failed"
    assert not {"running", "pending", "restarting"} & set(st.values()), st


@pytest.mark.parametrize("name", sorted(OPERATORS))
async def test_a_downstream_error_cancels_each_operator(
    name: str, autojump_clock: trio.testing.MockClock
) -> None:
    def explode(x: Any) -> None:
        raise RuntimeError("sink broke")

    p = _compose(OPERATORS[name], pk.source(timed([(0.1 * i, i) for i in range(10)]))) | (
        pk.sink(explode)
    )
    with trio.fail_after(HANG_GUARD), pytest.raises(pk.ModuleError) as info:
        await p.arun()
    assert info.value.module == "sink(explode)"
    st = states(p)
    assert not {"running", "pending", "restarting"} & set(st.values()), st


@pytest.mark.parametrize("name", sorted(OPERATORS))
async def test_cancelling_the_run_cancels_each_operator(
    name: str, autojump_clock: trio.testing.MockClock
) -> None:
    source = pk.source(timed([(0.1, 1), (0.2, 2), (0.3, 3), (0.4, 4)], then_hang=True))
    p = _compose(OPERATORS[name], source)
    with trio.move_on_after(60) as scope:
        await p.arun()
    assert scope.cancelled_caught
    st = states(p)
    assert st["source(gen)"] == "cancelled"
    assert not {"running", "pending", "restarting"} & set(st.values()), st


# --- take and stopping upstream ----------------------------------------------------------


def test_take_delivers_exactly_n_from_an_endless_source_and_stops_every_stage() -> None:
    delivered: list[int] = []
    p = (
        pk.source(itertools.count())
        | pk.map(lambda x: x + 1)
        | pk.thread(lambda x: x * 2, workers=2)
        | pk.take(10_000)
        | pk.sink(delivered.append)
    )
    p.run()
    assert delivered == [2 * (x + 1) for x in range(10_000)]
    assert set(states(p).values()) == {"done"}, states(p)
    assert p.stats["take(10000)"].messages_out == 10_000


def test_pipeline_take_method_appends_a_take_stage() -> None:
    p = (pk.source(itertools.count()) | pk.map(str)).take(3)
    assert [s.label for s in p.stages] == ["source(count)", "map(str)", "take(3)"]
    assert p.run() == ["0", "1", "2"]


def test_take_zero_and_take_more_than_there_is() -> None:
    assert (pk.source(itertools.count()) | pk.take(0)).run() == []
    assert (pk.source(range(5)) | pk.take(100)).run() == [0, 1, 2, 3, 4]


async def test_take_stops_a_source_that_is_waiting_for_its_next_item() -> None:
    # Without the stop, the source would wait forever for an item that never comes.
    p = pk.source(timed([(0, "a"), (0, "b"), (0, "c")], then_hang=True)) | pk.take(2)
    with trio.fail_after(HANG_GUARD):
        assert await p.arun() == ["a", "b"]
    assert states(p) == {"source(gen)": "done", "take(2)": "done", "collect": "done"}


async def test_take_in_the_middle_lets_the_stages_after_it_finish_their_work() -> None:
    async def slow(x: int) -> int:
        await trio.sleep(0.01)
        return x * 10

    p = pk.source(itertools.count()) | pk.take(5) | pk.map(slow) | pk.collect()
    with trio.fail_after(HANG_GUARD):
        assert await p.arun() == [0, 10, 20, 30, 40]


@pytest.mark.needs("sleep", "coreutils")
async def test_take_terminates_a_command_upstream() -> None:
    p = pk.cmd("sh", "-c", "echo a; echo b; echo c; exec sleep 1000", mode="lines") | pk.take(2)
    with trio.fail_after(HANG_GUARD):
        assert await p.arun() == ["a", "b"]
    assert states(p)["cmd(sh)"] == "done"
    assert_no_children()


def test_take_counts_across_restarts_of_its_own_stage() -> None:
    # The count belongs to the run, not to one incarnation: never more than n in all.
    p = pk.source(range(100)) | pk.take(7, restart="on-failure") | pk.collect()
    assert p.run() == list(range(7))


def test_take_rejects_a_negative_count() -> None:
    with pytest.raises(ValueError):
        pk.take(-1)
    with pytest.raises(TypeError):
        pk.take(2.5)  # type: ignore[arg-type]


# --- iterating a pipeline ------------------------------------------------------------------


def test_for_loop_over_a_pipeline_yields_its_output_in_order() -> None:
    p = pk.source(range(5000)) | pk.map(lambda x: x * 3)
    assert list(p) == [3 * x for x in range(5000)]
    assert list(p) == [3 * x for x in range(5000)]  # again: a fresh run
    assert set(states(p).values()) == {"done"}


def test_breaking_out_of_a_for_loop_stops_every_stage() -> None:
    p = pk.source(itertools.count()) | pk.map(lambda x: x * 2) | pk.thread(lambda x: x + 1)
    got = []
    for x in p:
        got.append(x)
        if len(got) == 10:
            break
    assert got == [2 * x + 1 for x in range(10)]
    # Leaving the loop dropped the iterator: the run ended before the loop went on.
    assert set(states(p).values()) == {"done"}, states(p)


@pytest.mark.needs("sleep", "coreutils")
def test_closing_the_iterator_terminates_the_processes_of_the_run() -> None:
    p = pk.cmd("sh", "-c", "echo a; exec sleep 1000", mode="lines") | pk.map(str.upper)
    with iter(p) as items:
        assert next(items) == "A"
    assert_no_children()


def test_a_failing_pipeline_raises_from_the_for_loop() -> None:
    def invert(x: int) -> float:
        return 1 / x

    got = []
    with pytest.raises(pk.ModuleError) as info:
        for x in pk.source([4, 2, 1, 0]) | pk.map(invert):
            got.append(x)
    # A failure cancels every stage at once: what was still on its way may be lost.
    assert got == [0.25, 0.5, 1.0][: len(got)]
    assert info.value.module == "map(invert)"
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_an_interrupted_for_loop_stops_the_run_before_it_raises() -> None:
    p = pk.source(itertools.count()) | pk.map(str)
    items = iter(p)
    assert next(items) == "0"
    lane = items._lane

    def interrupted(*args: Any) -> list[Any]:
        raise KeyboardInterrupt  # as Ctrl-C would, while the loop waits

    lane.get_many_blocking = interrupted  # type: ignore[method-assign, assignment]
    items._batch = []  # nothing buffered: the next item must come from the lane
    with pytest.raises(KeyboardInterrupt):
        next(items)
    assert set(states(p).values()) == {"done"}, states(p)


def test_the_iterator_can_be_closed_from_another_thread() -> None:
    items = iter(pk.source(itertools.count()) | pk.map(str))
    assert next(items) == "0"
    closer = threading.Thread(target=items.close)
    closer.start()
    closer.join(HANG_GUARD)
    assert not closer.is_alive()
    assert list(items) == []


def test_iterating_a_pipeline_that_ends_in_a_sink_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="ends in a sink"):
        iter(pk.source(range(3)) | pk.collect())


async def test_a_for_loop_inside_trio_is_refused_in_favour_of_async_for() -> None:
    with pytest.raises(RuntimeError, match="async for"):
        iter(pk.source(range(3)) | pk.map(str))


async def test_async_for_over_a_pipeline_yields_its_output() -> None:
    got = []
    with trio.fail_after(HANG_GUARD):
        async for x in pk.source(range(3000)) | pk.map(lambda x: -x):
            got.append(x)
    assert got == [-x for x in range(3000)]


async def test_leaving_an_async_for_loop_stops_every_stage() -> None:
    p = pk.source(itertools.count()) | pk.map(lambda x: x + 1)
    got = []
    with trio.fail_after(HANG_GUARD):
        async with contextlib.aclosing(aiter(p)) as items:  # type: ignore[type-var]
            async for x in items:
                got.append(x)
                if x == 5:
                    break
    assert got == [1, 2, 3, 4, 5]
    assert set(states(p).values()) == {"done"}, states(p)


async def test_an_abandoned_async_for_loop_stops_the_run_too() -> None:
    p = pk.source(itertools.count()) | pk.map(lambda x: x + 1)
    with trio.fail_after(HANG_GUARD):
        async for x in p:
            if x == 3:
                break
        # trio finalizes the abandoned generator in a system task
        for _ in range(1000):
            if set(states(p).values()) == {"done"}:
                break
            await trio.sleep(0.001)
    assert set(states(p).values()) == {"done"}, states(p)


async def test_a_failing_pipeline_raises_from_async_for() -> None:
    def invert(x: int) -> float:
        return 1 / x

    got = []
    with trio.fail_after(HANG_GUARD), pytest.raises(pk.ModuleError) as info:
        async for x in pk.source([2, 1, 0]) | pk.map(invert):
            got.append(x)
    assert got == [0.5, 1.0][: len(got)]
    assert info.value.module == "map(invert)"


async def test_cancelling_the_task_of_an_async_for_loop_stops_the_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = pk.source(timed([(0, 1)], then_hang=True)) | pk.map(str)
    got = []
    with trio.move_on_after(5):
        async for x in p:
            got.append(x)
    assert got == ["1"]
    assert set(states(p).values()) == {"done"}, states(p)


# --- skip, batch, unbatch, tumbling ----------------------------------------------------------


@pytest.mark.parametrize("source_batch", [1, 3, 256])
def test_skip_drops_exactly_the_first_n(source_batch: int) -> None:
    src = pk.source(range(10), batch=source_batch)
    assert (src | pk.skip(0)).run() == list(range(10))
    assert (src | pk.skip(4)).run() == list(range(4, 10))
    assert (src | pk.skip(10)).run() == []
    assert (src | pk.skip(50)).run() == []


@pytest.mark.parametrize("source_batch", [1, 2, 7, 256])
@pytest.mark.parametrize("n", [1, 3, 5, 100])
def test_batch_groups_in_order_whatever_the_input_batches(source_batch: int, n: int) -> None:
    items = list(range(23))
    got = (pk.source(items, batch=source_batch) | pk.batch(n)).run()
    assert got == [items[i : i + n] for i in range(0, 23, n)]
    assert (pk.source(items, batch=source_batch) | pk.batch(n) | pk.unbatch()).run() == items


async def test_batch_timeout_sends_a_short_list_when_its_oldest_message_waited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    got: list[tuple[float, Any]] = []
    schedule = [(0.0, "a"), (0.1, "b"), (5.0, "c"), (5.2, "d"), (5.3, "e"), (9.0, "f")]
    p = pk.source(timed(schedule)) | pk.batch(3, timeout=1.0) | pk.sink(recorder(got))
    await p.arun()
    assert [m for _, m in got] == [["a", "b"], ["c", "d", "e"], ["f"]]
    # a waited 1 s; c, d, e filled a list before c had waited 1 s; f: the end
    assert [t for t, _ in got] == pytest.approx([1.0, 5.3, 9.0])


async def test_batch_timeout_keeps_order_and_sizes_while_a_slow_consumer_blocks_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The sink takes 3 s per list and holds one in its buffer: full lists are taken while
    # a timed-out list is still being sent and the other way round (the timer's and the
    # receiving task's sends), and every list must still go in order.
    got: list[tuple[float, Any]] = []

    async def slow(lst: list[int]) -> None:
        got.append((trio.current_time(), lst))
        await trio.sleep(3.0)

    schedule = [(0.25 * i + (3.0 if i >= 20 else 0.0), i) for i in range(40)]
    p = pk.source(timed(schedule)) | pk.batch(4, timeout=0.6) | pk.sink(slow, buffer=1)
    with trio.fail_after(1000):
        await p.arun()
    lists = [lst for _, lst in got]
    assert [x for lst in lists for x in lst] == list(range(40))
    assert all(1 <= len(lst) <= 4 for lst in lists)
    assert any(len(lst) < 4 for lst in lists[:-1])  # the timer sent some, mid-stream


def test_unbatch_sends_the_items_of_each_message() -> None:
    assert (pk.source([[1, 2], [], (3,), range(4, 6)]) | pk.unbatch()).run() == [1, 2, 3, 4, 5]


def test_tumbling_by_count_is_batch() -> None:
    assert (pk.source(range(7)) | pk.tumbling(3)).run() == [[0, 1, 2], [3, 4, 5], [6]]


async def test_tumbling_by_time_groups_what_each_interval_took(
    autojump_clock: trio.testing.MockClock,
) -> None:
    got: list[tuple[float, Any]] = []
    schedule = [(0.1, "a"), (0.5, "b"), (1.5, "c"), (3.2, "d"), (3.4, "e")]
    p = pk.source(timed(schedule)) | pk.tumbling(seconds=1.0) | pk.sink(recorder(got))
    await p.arun()
    assert [m for _, m in got] == [["a", "b"], ["c"], ["d", "e"]]
    # [2, 3) was empty: nothing; the window open at the end goes out then
    assert [t for t, _ in got] == pytest.approx([1.0, 2.0, 3.4])


def test_tumbling_and_window_take_exactly_one_of_size_and_seconds() -> None:
    for make in (pk.tumbling, pk.window):
        with pytest.raises(TypeError):
            make()
        with pytest.raises(TypeError):
            make(3, seconds=1.0)
    with pytest.raises(TypeError):
        pk.window(3, every=1.0)
    with pytest.raises(TypeError):
        pk.window(seconds=1.0, step=2)
    with pytest.raises(ValueError):
        pk.tumbling(seconds=0)
    with pytest.raises(ValueError):
        pk.window(0)


# --- sliding windows ---------------------------------------------------------------------------


def _reference_windows(items: list[int], size: int, step: int) -> list[list[int]]:
    return [items[s : s + size] for s in range(0, len(items) - size + 1, step)]


@pytest.mark.parametrize("source_batch", [1, 2, 5, 256])
@pytest.mark.parametrize(
    ("size", "step"), [(1, 1), (2, 1), (3, 1), (3, 2), (2, 3), (4, 4), (30, 1)]
)
def test_window_by_count_matches_the_definition(source_batch: int, size: int, step: int) -> None:
    items = list(range(25))
    got = (pk.source(items, batch=source_batch) | pk.window(size, step=step)).run()
    assert got == _reference_windows(items, size, step)


async def test_window_by_time_emits_the_last_seconds_every_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    got: list[tuple[float, Any]] = []
    schedule = [(0.5, "a"), (1.5, "b"), (2.5, "c"), (2.6, "d")]
    p = pk.source(timed(schedule)) | pk.window(seconds=2.0, every=1.0) | pk.sink(recorder(got))
    await p.arun()
    assert [m for _, m in got] == [["a"], ["a", "b"], ["b", "c", "d"]]
    assert [t for t, _ in got] == pytest.approx([1.0, 2.0, 2.6])  # at the end: [0.6, 2.6]


async def test_window_by_time_keeps_emitting_while_messages_are_in_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    got: list[tuple[float, Any]] = []
    p = (
        pk.source(timed([(0.2, "a"), (4.0, "b")]))
        | pk.window(seconds=2.0, every=1.0)
        | pk.sink(recorder(got))
    )
    await p.arun()
    assert [m for _, m in got] == [["a"], ["a"], ["b"]]
    # [0, 2) still holds a; [1, 3) is empty: nothing; b: the end
    assert [t for t, _ in got] == pytest.approx([1.0, 2.0, 4.0])


# --- throttle ----------------------------------------------------------------------------------


async def test_throttle_spaces_messages_at_the_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    got: list[tuple[float, Any]] = []
    p = pk.source(range(5)) | pk.throttle(10, burst=1) | pk.sink(recorder(got))
    await p.arun()
    assert [m for _, m in got] == [0, 1, 2, 3, 4]
    assert [t for t, _ in got] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


async def test_throttle_lets_a_burst_through_after_a_pause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    got: list[tuple[float, Any]] = []
    schedule = [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (10, 5), (10, 6), (10, 7), (10, 8)]
    p = pk.source(timed(schedule)) | pk.throttle(10, burst=3) | pk.sink(recorder(got))
    await p.arun()
    assert [m for _, m in got] == list(range(9))
    times = [t for t, _ in got]
    assert times == pytest.approx([0, 0, 0, 0.1, 0.2, 10, 10, 10, 10.1])
    # over any span of t seconds at most burst + rate * t messages
    for i, j in itertools.combinations(range(len(times)), 2):
        assert j - i + 1 <= 3 + 10 * (times[j] - times[i]) + 1e-6


def test_throttle_rejects_a_rate_that_is_not_positive() -> None:
    with pytest.raises(ValueError):
        pk.throttle(0)
    with pytest.raises(ValueError):
        pk.throttle(5, burst=0)


# --- tee -----------------------------------------------------------------------------------------


def test_tee_sends_every_message_to_each_branch_and_on() -> None:
    seen: list[int] = []
    doubled: list[int] = []
    p = (
        pk.source(range(2000))
        | pk.tee(seen.append, pk.map(lambda x: 2 * x) | pk.sink(doubled.append))
        | pk.map(str)
    )
    assert p.run() == [str(x) for x in range(2000)]
    assert seen == list(range(2000))
    assert doubled == [2 * x for x in range(2000)]
    assert set(states(p).values()) == {"done"}
    assert list(p.stats) == ["source(range)", "tee(2)", "sink(append)", "map(<lambda>)",
                             "sink(append)#2", "map(str)", "collect"]  # fmt: skip


def test_a_failing_tee_branch_fails_the_pipeline_naming_it() -> None:
    def boom(x: int) -> None:
        if x == 3:
            raise ValueError("branch broke")

    with pytest.raises(pk.ModuleError) as info:
        (pk.source(range(10)) | pk.tee(pk.sink(boom, name="audit")) | pk.collect()).run()
    assert info.value.module == "audit"


def test_a_tee_branch_that_takes_a_few_leaves_the_main_line_going() -> None:
    few: list[int] = []
    p = pk.source(range(5000)) | pk.tee(pk.take(3) | pk.sink(few.append)) | pk.map(lambda x: x)
    assert p.run() == list(range(5000))
    assert few == [0, 1, 2]


def test_a_take_after_a_tee_ends_the_branches_too() -> None:
    seen: list[int] = []
    p = pk.source(itertools.count()) | pk.tee(seen.append) | pk.take(5)
    assert p.run() == [0, 1, 2, 3, 4]
    assert seen[:5] == [0, 1, 2, 3, 4]  # what the tee sent before it stopped
    assert seen == list(range(len(seen)))


def test_a_tee_branch_must_end_in_a_sink_and_not_start_with_a_source() -> None:
    with pytest.raises(ValueError, match="end in a sink"):
        (pk.source(range(3)) | pk.tee(pk.map(str))).run()
    with pytest.raises(ValueError, match="source"):
        (pk.source(range(3)) | pk.tee(pk.source([1]) | pk.collect())).run()
    with pytest.raises(TypeError):
        pk.tee()


# --- flat_map ---------------------------------------------------------------------------------


def test_flat_map_emits_every_item_of_each_result_in_order() -> None:
    assert (pk.source(["a b", "", "c"]) | pk.flat_map(str.split)).run() == ["a", "b", "c"]


def test_flat_map_with_threads_async_functions_and_async_generators() -> None:
    def rep(x: int) -> list[int]:
        return [x] * (x % 3)

    async def arep(x: int) -> list[int]:
        await trio.lowlevel.checkpoint()
        return [x] * (x % 3)

    async def grep(x: int) -> AsyncIterator[int]:
        for _ in range(x % 3):
            await trio.lowlevel.checkpoint()
            yield x

    expected = [x for x in range(300) for _ in range(x % 3)]
    assert (pk.source(range(300)) | pk.flat_map(rep, workers=3)).run() == expected
    assert (pk.source(range(300)) | pk.flat_map(arep, workers=3)).run() == expected
    assert (pk.source(range(300)) | pk.flat_map(grep)).run() == expected
    assert (pk.source(range(300)) | pk.flat_map(grep)).stages[1].label == "flat_map(grep)"


# --- name= --------------------------------------------------------------------------------------


def test_every_stage_takes_a_name() -> None:
    p = (
        pk.source(range(10), name="numbers")
        | pk.map(str, name="to-text")
        | pk.filter(bool, name="non-empty")
        | pk.flat_map(list, name="digits")
        | pk.thread(int, name="back")
        | pk.batch(2, name="pairs")
        | pk.unbatch(name="flat")
        | pk.skip(0, name="all")
        | pk.take(100, name="enough")
        | pk.window(1, name="w")
        | pk.tumbling(1, name="t")
        | pk.throttle(1e9, name="fast")
        | pk.tee(lambda x: None, name="copy")
        | pk.collect(name="gather")
    )
    assert p.run() == [[[x]] for x in range(10)]
    assert list(p.stats) == [
        "numbers", "to-text", "non-empty", "digits", "back", "pairs", "flat", "all",
        "enough", "w", "t", "fast", "copy", "sink(<lambda>)", "gather",
    ]  # fmt: skip
    assert pk.sink(print, name="out").label == "out"
    assert pk.cmd("cat", name="kitty").label == "kitty"
    assert pk.run("worker.py:main", name="model").label == "model"
    assert pk.read_lines("x.txt", name="in").label == "in"
    assert pk.write_lines("x.txt", name="save").label == "save"


def test_a_repeated_name_gets_a_suffix_and_an_empty_name_is_refused() -> None:
    p = pk.source(range(2)) | pk.map(str, name="step") | pk.map(str, name="step")
    p.run()
    assert list(p.stats) == ["source(range)", "step", "step#2", "collect"]
    with pytest.raises(ValueError, match="name"):
        pk.map(str, name="")


# --- the benchmark still runs --------------------------------------------------------------------


def test_bench_operators_runs_and_prints_every_row() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "operators.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for row in ("map (baseline)", "flat_map", "batch(100)", "take", "throttle", "tee", "name="):
        assert row in proc.stdout, proc.stdout
