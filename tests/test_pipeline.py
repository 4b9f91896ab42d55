"""Tests of declarative pipelines (``pipekit.pipeline``): ``pk.source(...) | ... | pk.sink``.

Every test asserts exact results. Pipelines run with ``Pipeline.run()`` from plain
(synchronous) tests and with ``await Pipeline.arun()`` from trio tests; a trio test that
could hang runs under ``trio.fail_after`` as a guard only.
"""

from __future__ import annotations

import collections
import itertools
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from proc_helpers import exited, program_running_a_command

import pipekit as pk
from pipekit.kernel import ModuleStats

HANG_GUARD = 10.0  # seconds; only ever reached when something is broken


def double(x: int) -> int:
    return 2 * x


def is_even(x: int) -> bool:
    return x % 2 == 0


def plus_one(x: int) -> int:
    return x + 1


# --- composition and results ------------------------------------------------------------


def test_full_pipeline_to_sink_gives_exact_results_in_order() -> None:
    seen: list[int] = []
    p = (
        pk.source(range(10_000))
        | pk.map(double)
        | pk.filter(lambda x: x % 3 == 0)
        | pk.thread(plus_one)
        | pk.sink(seen.append)
    )
    assert p.run() is None
    assert seen == [2 * x + 1 for x in range(10_000) if (2 * x) % 3 == 0]


def test_run_returns_the_collected_list() -> None:
    p = pk.source(range(10_000)) | pk.map(double) | pk.filter(is_even) | pk.thread(plus_one)
    result = (p | pk.collect()).run()
    assert result == [2 * x + 1 for x in range(10_000)]


def test_pipeline_without_sink_returns_its_output_as_a_list() -> None:
    assert (pk.source(range(100)) | pk.filter(is_even)).run() == list(range(0, 100, 2))


def test_source_alone_returns_its_items() -> None:
    assert (pk.source(["a", "b"]) | pk.collect()).run() == ["a", "b"]


def test_iterable_piped_into_a_stage_becomes_the_source() -> None:
    p = [1, 2, 3] | pk.map(double)
    assert isinstance(p, pk.Pipeline)
    assert p.run() == [2, 4, 6]


def test_pipelines_compose_with_pipelines() -> None:
    head = pk.source(range(10)) | pk.map(double)
    tail = pk.filter(lambda x: x > 10) | pk.map(plus_one)
    assert (head | tail).run() == [13, 15, 17, 19]


def test_same_stage_twice_gets_distinct_names() -> None:
    p = pk.source(range(5)) | pk.map(double) | pk.map(double)
    assert p.run() == [4 * x for x in range(5)]
    assert list(p.stats) == ["source(range)", "map(double)", "map(double)#2", "collect"]


async def test_arun_inside_trio_returns_the_result() -> None:
    p = pk.source(range(1000)) | pk.thread(double) | pk.collect()
    with trio.fail_after(HANG_GUARD):
        assert await p.arun() == [2 * x for x in range(1000)]


async def test_run_inside_trio_raises_runtime_error_pointing_to_arun() -> None:
    p = pk.source(range(3)) | pk.collect()
    with pytest.raises(RuntimeError, match=r"await pipeline\.arun\(\)"):
        p.run()


# --- sources -------------------------------------------------------------------------------


def test_list_source() -> None:
    assert (pk.source([3, 1, 2]) | pk.map(double)).run() == [6, 2, 4]


def test_generator_function_source_is_called_afresh_on_each_run() -> None:
    calls = [0]

    def numbers() -> Iterator[int]:
        calls[0] += 1
        yield from range(1000)

    p = pk.source(numbers) | pk.map(double)
    first = p.run()
    second = p.run()
    assert first == second == [2 * x for x in range(1000)]
    assert calls[0] == 2


def test_async_generator_source() -> None:
    async def numbers() -> AsyncIterator[int]:
        for i in range(500):
            if i % 50 == 0:
                await trio.lowlevel.checkpoint()
            yield i

    p = pk.source(numbers) | pk.map(double)
    assert p.run() == [2 * x for x in range(500)]
    assert p.run() == [2 * x for x in range(500)]  # called afresh


def test_source_rejects_a_non_iterable() -> None:
    with pytest.raises(TypeError):
        pk.source(42)  # type: ignore[arg-type]


# --- async and threaded maps ------------------------------------------------------------


def test_async_map_with_workers_keeps_order_and_runs_concurrently() -> None:
    in_flight = [0]
    most = [0]

    async def slow_double(x: int) -> int:
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        for _ in range((x * 7) % 5):  # finish out of order
            await trio.lowlevel.checkpoint()
        in_flight[0] -= 1
        return 2 * x

    result = (pk.source(range(2000)) | pk.map(slow_double, workers=4)).run()
    assert result == [2 * x for x in range(2000)]
    assert most[0] == 4


def test_async_map_unordered_yields_the_same_multiset() -> None:
    async def slow_double(x: int) -> int:
        for _ in range((x * 7) % 5):
            await trio.lowlevel.checkpoint()
        return 2 * x

    result = (pk.source(range(2000)) | pk.map(slow_double, workers=4, ordered=False)).run()
    assert sorted(result) == [2 * x for x in range(2000)]


def test_async_filter() -> None:
    async def keep(x: int) -> bool:
        await trio.lowlevel.checkpoint()
        return x % 3 == 0

    assert (pk.source(range(30)) | pk.filter(keep, workers=3)).run() == list(range(0, 30, 3))


def test_sync_map_with_workers_runs_in_worker_threads_and_keeps_order() -> None:
    workers = 4
    main = threading.get_ident()
    barrier = threading.Barrier(workers)
    local = threading.local()

    def tag(x: int) -> tuple[int, int]:
        if not getattr(local, "met", False):
            local.met = True
            barrier.wait(timeout=HANG_GUARD)  # only passes once 4 threads got work
        return x, threading.get_ident()

    result = (pk.source(range(20_000)) | pk.map(tag, workers=workers)).run()
    assert [x for x, _ in result] == list(range(20_000))
    idents = {ident for _, ident in result}
    assert len(idents) == workers
    assert main not in idents


def test_sync_map_with_workers_unordered_yields_the_same_multiset() -> None:
    result = (pk.source(range(20_000)) | pk.map(double, workers=4, ordered=False)).run()
    assert collections.Counter(result) == collections.Counter(2 * x for x in range(20_000))


def test_sync_map_without_workers_runs_on_the_event_loop_thread() -> None:
    main = threading.get_ident()
    result = (pk.source(range(10)) | pk.map(lambda _: threading.get_ident())).run()
    assert result == [main] * 10


def test_thread_stage_runs_off_the_event_loop_thread() -> None:
    main = threading.get_ident()
    result = (pk.source(range(10)) | pk.thread(lambda _: threading.get_ident())).run()
    assert len(result) == 10
    assert main not in result


@pytest.mark.parametrize("workers", [4, 16])
def test_thread_stage_over_slow_items_keeps_every_worker_busy(workers: int) -> None:
    """The first ``workers`` items each wait, inside the call, until all of them are
    inside a call at once: that happens only if each went to its own thread (a thread
    handed several of them would wait for itself until the guard runs out)."""
    lock = threading.Lock()
    inside = [0]
    peak = [0]
    all_in = threading.Event()

    def slow(x: int) -> int:
        if x < workers:
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
                if inside[0] == workers:
                    all_in.set()
            all_in.wait(timeout=HANG_GUARD)
            with lock:
                inside[0] -= 1
        return x

    result = (pk.source(range(10 * workers)) | pk.thread(slow, workers=workers)).run()
    assert peak[0] == workers
    assert result == list(range(10 * workers))


def test_thread_stage_failure_stops_the_stage_before_the_rest_is_taken() -> None:
    called: list[int] = []

    def fail_at_1000(x: int) -> int:
        called.append(x)
        if x == 1000:
            raise ValueError("item 1000")
        return x

    with pytest.raises(pk.ModuleError) as info:
        (pk.source(range(100_000)) | pk.thread(fail_at_1000, workers=2)).run()
    assert str(info.value.__cause__) == "item 1000"
    assert max(called) < 1000 + 2 * 512  # no more than the chunks already started


def test_threaded_filter_with_workers_keeps_order() -> None:
    result = (pk.source(range(10_000)) | pk.filter(is_even, workers=3)).run()
    assert result == list(range(0, 10_000, 2))


# --- errors --------------------------------------------------------------------------------


def _failing(raised: list[Exception], at: int) -> Callable[[int], int]:
    def parse(x: int) -> int:
        if x == at:
            exc = ValueError(f"cannot parse {x}")
            raised.append(exc)
            raise exc
        return x

    return parse


@pytest.mark.parametrize("kind", ["map", "filter", "thread", "thread-workers", "sink"])
def test_stage_failure_surfaces_as_module_error_naming_the_stage(kind: str) -> None:
    raised: list[Exception] = []
    parse = _failing(raised, 500)
    stage = {
        "map": lambda: pk.map(parse),
        "filter": lambda: pk.filter(parse),
        "thread": lambda: pk.thread(parse),
        "thread-workers": lambda: pk.map(parse, workers=3),
        "sink": lambda: pk.sink(parse),
    }[kind]()
    with pytest.raises(pk.ModuleError) as info:
        (pk.source(range(1000)) | stage).run()
    expected = {"map": "map(parse)", "filter": "filter(parse)", "thread": "thread(parse)"}
    expected.update({"thread-workers": "map(parse)", "sink": "sink(parse)"})
    assert info.value.module == expected[kind]
    assert len(raised) == 1
    assert info.value.__cause__ is raised[0]


def test_async_map_failure_surfaces_as_module_error_naming_the_stage() -> None:
    raised: list[Exception] = []

    async def parse(x: int) -> int:
        await trio.lowlevel.checkpoint()
        if x == 7:
            raised.append(KeyError(x))
            raise raised[-1]
        return x

    with pytest.raises(pk.ModuleError) as info:
        (pk.source(range(100)) | pk.map(parse, workers=4)).run()
    assert info.value.module == "map(parse)"
    assert info.value.__cause__ is raised[0]


def test_source_failure_surfaces_as_module_error_naming_the_source() -> None:
    raised: list[Exception] = []

    def lines() -> Iterator[int]:
        yield from range(10)
        raised.append(OSError("disk on fire"))
        raise raised[-1]

    with pytest.raises(pk.ModuleError) as info:
        (pk.source(lines) | pk.map(double)).run()
    assert info.value.module == "source(lines)"
    assert info.value.__cause__ is raised[0]


async def test_failure_cancels_the_other_stages_and_nothing_hangs() -> None:
    raised: list[Exception] = []
    p = pk.source(itertools.count()) | pk.map(_failing(raised, 5000)) | pk.thread(double)
    with trio.fail_after(HANG_GUARD), pytest.raises(pk.ModuleError) as info:
        await p.arun()
    assert info.value.module == "map(parse)"
    assert info.value.__cause__ is raised[0]
    states = {name: st.state for name, st in p.stats.items()}
    assert states["map(parse)"] == "failed"
    # the endless source and the stages after the failure were all stopped
    assert all(st.finished_at is not None for st in p.stats.values())
    assert not [name for name, state in states.items() if state in ("pending", "running")]


def _int_or_fail(x: str) -> int:
    return int(x)


@pytest.mark.parametrize(
    "stage",
    [
        lambda: pk.thread(_int_or_fail),
        lambda: pk.thread(_int_or_fail, workers=4),
        lambda: pk.thread(_int_or_fail, workers=4, ordered=False),
        lambda: pk.map(_int_or_fail, workers=3),
        lambda: pk.filter(_int_or_fail, workers=3),
        lambda: pk.thread(_int_or_fail, workers=2, timeout=HANG_GUARD),
    ],
    ids=["thread", "thread(workers=4)", "unordered", "map(workers=3)", "filter", "timeout"],
)
def test_a_thread_stage_failure_names_the_items_index_and_repr(
    stage: Callable[[], pk.Stage],
) -> None:
    items = [str(i) for i in range(5000)]
    items[1234] = "x"
    with pytest.raises(pk.ModuleError) as info:
        (pk.source(items) | stage()).run()
    exc = info.value
    assert (exc.item_index, exc.item) == (1234, "'x'")
    assert f"stage {exc.module!r} failed on item 1234 of its input: 'x'" in exc.__notes__


def test_a_thread_stage_with_several_failing_items_names_the_first() -> None:
    items = [str(i) for i in range(5000)]
    for i in (4321, 1234, 2345):
        items[i] = f"x{i}"
    with pytest.raises(pk.ModuleError) as info:
        (pk.source(items) | pk.thread(_int_or_fail, workers=4, ordered=False)).run()
    assert (info.value.item_index, info.value.item) == (1234, "'x1234'")
    assert "'x1234'" in str(info.value.__cause__)


def test_a_thread_stage_that_gives_up_after_its_retries_names_the_item() -> None:
    calls: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def parse(x: str) -> int:
        with lock:
            calls[x] += 1
        return int(x)

    items = [str(i) for i in range(100)] + ["x"]
    stage = pk.thread(parse, workers=2, retry=pk.Retry(2, backoff=0))
    with pytest.raises(pk.ModuleError) as info:
        (pk.source(items) | stage).run()
    assert (info.value.item_index, info.value.item) == (100, "'x'")
    assert calls["x"] == 3


def test_a_restarted_thread_stage_counts_item_indexes_over_the_whole_run() -> None:
    def parse(x: int) -> int:
        if x % 1000 == 999:
            raise ValueError(x)
        return x

    stage = pk.thread(parse, restart="on-failure", max_restarts=3, backoff=0)
    p = pk.source(range(10_000)) | stage
    with pytest.raises(pk.ModuleError) as info:
        p.run()
    assert p.stats["thread(parse)"].restarts == 3
    assert (info.value.item_index, info.value.item) == (3999, "3999")


# --- restarts ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [pk.map, pk.thread], ids=["map", "thread"])
def test_restart_on_failure_loses_only_the_failing_messages(
    make: Callable[..., pk.Stage],
) -> None:
    def parse(x: int) -> int:
        if x % 1000 == 999:
            raise ValueError(x)
        return x

    p = pk.source(range(10_000)) | make(parse, restart="on-failure", max_restarts=20, backoff=0)
    assert p.run() == [x for x in range(10_000) if x % 1000 != 999]
    stats = p.stats["map(parse)" if make is pk.map else "thread(parse)"]
    # several failures may land in the same incarnation (batches in flight)
    assert 1 <= stats.restarts <= 10
    assert (stats.messages_in, stats.messages_out) == (10_000, 9_990)


def test_restart_limit_reached_fails_the_pipeline() -> None:
    def parse(x: int) -> int:
        if x % 1000 == 999:
            raise ValueError(x)
        return x

    p = pk.source(range(10_000)) | pk.map(parse, restart="on-failure", max_restarts=3, backoff=0)
    with pytest.raises(pk.ModuleError) as info:
        p.run()
    assert info.value.module == "map(parse)"
    assert isinstance(info.value.__cause__, ValueError)
    assert p.stats["map(parse)"].restarts == 3


# --- validation ----------------------------------------------------------------------------


def test_pipeline_not_starting_with_a_source_is_rejected() -> None:
    with pytest.raises(ValueError, match="source"):
        (pk.map(double) | pk.collect()).run()


def test_sink_in_the_middle_is_rejected() -> None:
    with pytest.raises(ValueError, match="sink"):
        (pk.source(range(3)) | pk.sink(print) | pk.map(double)).run()


def test_second_source_is_rejected() -> None:
    with pytest.raises(ValueError, match="source"):
        (pk.source(range(3)) | pk.source(range(3))).run()


def test_thread_stage_rejects_async_functions() -> None:
    async def fetch(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"pk\.map"):
        pk.thread(fetch)


@pytest.mark.parametrize(
    "build",
    [
        lambda: pk.map(double, workers=0),
        lambda: pk.map(double, buffer=0),
        lambda: pk.thread(double, workers=0),
    ],
)
def test_bad_stage_options_are_rejected(build: Callable[[], pk.Stage]) -> None:
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize(
    ("stage", "args", "keyword"),
    [
        ("map", (double,), "bufer"),
        ("source", (range(3),), "buffer"),
        ("collect", (), "restart"),
        ("sink", (print,), "workers"),
        ("remote", (lambda: None,), "ordered"),
    ],
)
def test_a_stage_rejects_keywords_it_does_not_take(
    stage: str, args: tuple[Any, ...], keyword: str
) -> None:
    build: Any = getattr(pk, stage)
    unexpected = rf"{stage}\(\) got an unexpected keyword argument '{keyword}'"
    with pytest.raises(TypeError, match=unexpected):
        build(*args, **{keyword: 1})


def test_stage_options_default_in_one_place() -> None:
    from pipekit.pipeline import StageSettings

    assert pk.map(double).options == StageSettings()
    assert pk.thread(double, workers=3, ordered=False, buffer=8).options == StageSettings(
        buffer=8, workers=3, ordered=False
    )
    assert pk.collect(buffer_bytes=64).options == StageSettings(buffer_bytes=64, max_restarts=0)


# --- bounded memory ------------------------------------------------------------------------


async def test_blocked_sink_bounds_what_the_source_pulls() -> None:
    n = 1_000_000
    buffer, source_batch = 64, 16
    pulled = [0]

    def numbers() -> Iterator[int]:
        for i in range(n):
            pulled[0] += 1
            yield i

    release = trio.Event()
    sink_reached = trio.Event()

    async def store(x: int) -> None:
        sink_reached.set()
        await release.wait()

    p = (
        pk.source(numbers, batch=source_batch)
        | pk.map(double, buffer=buffer)
        | pk.thread(plus_one, buffer=buffer)
        | pk.sink(store, buffer=buffer)
    )
    # What may be in flight: the source's chunk; for each of the three stages a full
    # input buffer plus one batch (at most a buffer's worth) in hand; inside the thread
    # stage, two batches at its worker and two at its collector.
    bound = source_batch + 3 * (buffer + buffer) + 4 * buffer
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(p.arun)
            await sink_reached.wait()
            last = -1
            while pulled[0] != last:  # until the pipeline has filled up
                last = pulled[0]
                await trio.testing.wait_all_tasks_blocked()
            assert buffer < pulled[0] <= bound
            nursery.cancel_scope.cancel()
    assert bound * 1000 < n


# --- progress and statistics ------------------------------------------------------------


async def test_progress_callback_gets_live_and_final_per_stage_stats() -> None:
    calls: list[dict[str, ModuleStats]] = []
    first_report = trio.Event()

    def progress(stats: dict[str, ModuleStats]) -> None:
        calls.append(stats)
        first_report.set()

    async def store(x: int) -> None:
        await first_report.wait()  # hold the pipeline until a live report came in

    p = pk.source(range(1000)) | pk.map(double) | pk.filter(lambda x: x % 4 == 0) | pk.sink(store)
    with trio.fail_after(HANG_GUARD):
        await p.arun(progress=progress, interval=0.01)
    names = ["source(range)", "map(double)", "filter(<lambda>)", "sink(store)"]
    assert len(calls) >= 2
    assert all(list(c) == names for c in calls)
    assert calls[0]["sink(store)"].state == "running"
    final = calls[-1]
    counts = {name: (st.messages_in, st.messages_out, st.state) for name, st in final.items()}
    assert counts == {
        "source(range)": (0, 1000, "done"),
        "map(double)": (1000, 1000, "done"),
        "filter(<lambda>)": (1000, 500, "done"),
        "sink(store)": (500, 0, "done"),
    }


def test_stats_after_run_count_messages_per_stage() -> None:
    p = pk.source(range(10_000)) | pk.thread(double, workers=2) | pk.filter(lambda x: x % 3 == 0)
    result = p.run()
    assert len(result) == 3334
    counts = {name: (st.messages_in, st.messages_out) for name, st in p.stats.items()}
    assert counts == {
        "source(range)": (0, 10_000),
        "thread(double)": (10_000, 10_000),
        "filter(<lambda>)": (10_000, 3334),
        "collect": (3334, 0),
    }
    assert all(st.state == "done" for st in p.stats.values())


def test_topology_names_the_stages_in_order() -> None:
    p = pk.source(range(3)) | pk.map(double) | pk.collect()
    with pytest.raises(RuntimeError):
        p.topology()
    p.run()
    topo = p.topology()
    assert [m["name"] for m in topo.modules] == ["source(range)", "map(double)", "collect"]
    assert [(e["from"], e["to"]) for e in topo.edges] == [
        ("source(range)", "map(double)"),
        ("map(double)", "collect"),
    ]


async def test_stats_are_live_during_a_run() -> None:
    release = trio.Event()
    seen: list[int] = []

    async def hold(x: int) -> None:
        seen.append(x)
        if len(seen) == 10:
            await release.wait()

    pipeline = pk.source(range(20)) | pk.sink(hold)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.arun)
        await trio.testing.wait_all_tasks_blocked()
        live = pipeline.stats
        assert live["sink(hold)"].state == "running"
        assert live["source(range)"].messages_out == 20
        release.set()
    assert pipeline.stats["sink(hold)"].state == "done"


def test_errors_from_run_carry_no_unrelated_context() -> None:
    def boom(x: int) -> int:
        raise ValueError("boom")

    with pytest.raises(pk.ModuleError) as info:
        (pk.source([1]) | pk.map(boom)).run()
    seen: list[BaseException] = []
    exc: BaseException | None = info.value
    while exc is not None and len(seen) < 10:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert not any(isinstance(e, RuntimeError) for e in seen), seen


# --- signals ----------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfds are Linux")
async def test_sigterm_to_a_program_in_run_stops_its_commands_and_exits_143(
    tmp_path: Path,
) -> None:
    # run() handles SIGTERM like Ctrl-C: cancel, terminate every process, exit 143.
    async with program_running_a_command(tmp_path) as (program, command):
        program.send_signal(signal.SIGTERM)
        with trio.fail_after(HANG_GUARD):
            assert await program.wait() == 143
        await exited(command)  # no command outlives the program


# --- per-item errors: on_error, retry, timeout ------------------------------------------------


def parse_int(x: str) -> int:
    return int(x)


@pytest.mark.parametrize(
    "stage",
    [
        lambda **kw: pk.map(parse_int, **kw),
        lambda **kw: pk.map(parse_int, workers=3, **kw),
        lambda **kw: pk.thread(parse_int, **kw),
        lambda **kw: pk.map(_aparse_int, **kw),
        lambda **kw: pk.map(_aparse_int, workers=3, **kw),
    ],
    ids=["map", "map(workers=3)", "thread", "map(async)", "map(async, workers=3)"],
)
def test_on_error_skip_raise_function_and_dead_letter(stage: Callable[..., pk.Stage]) -> None:
    items = ["1", "x", "3", "y", "5"]
    assert (pk.source(items) | stage(on_error="skip")).run() == [1, 3, 5]

    with pytest.raises(pk.ModuleError) as info:
        (pk.source(items) | stage()).run()
    assert isinstance(info.value.__cause__, ValueError)

    failed: list[tuple[str, str]] = []
    note = lambda i, e: failed.append((i, type(e).__name__))  # noqa: E731
    result = (pk.source(items) | stage(on_error=note)).run()
    assert result == [1, 3, 5]
    assert failed == [("x", "ValueError"), ("y", "ValueError")]

    dead: list[tuple[Any, BaseException]] = []
    p = pk.source(items) | stage(on_error=pk.sink(dead.append, name="dead-letters"))
    assert p.run() == [1, 3, 5]
    assert [(item, type(exc)) for item, exc in dead] == [("x", ValueError), ("y", ValueError)]
    assert "dead-letters" in p.stats


async def _aparse_int(x: str) -> int:
    await trio.lowlevel.checkpoint()
    return int(x)


def test_a_dead_letter_pipeline_and_an_async_callback() -> None:
    lines: list[str] = []
    dead = pk.map(lambda pair: f"{pair[0]!r}: {pair[1]}") | pk.sink(lines.append)
    assert (pk.source(["1", "x"]) | pk.map(parse_int, on_error=dead)).run() == [1]
    assert lines == ["'x': invalid literal for int() with base 10: 'x'"]

    seen: list[str] = []

    async def note(item: str, exc: Exception) -> None:
        await trio.lowlevel.checkpoint()
        seen.append(item)

    assert (pk.source(["1", "x"]) | pk.map(parse_int, on_error=note)).run() == [1]
    assert seen == ["x"]


def test_on_error_applies_to_filter_and_flat_map_too() -> None:
    def positive(x: str) -> bool:
        return int(x) > 0

    assert (pk.source(["1", "x", "-2", "3"]) | pk.filter(positive, on_error="skip")).run() == [
        "1",
        "3",
    ]
    assert (pk.source(["1 2", 3, "4"]) | pk.flat_map(str.split, on_error="skip")).run() == [
        "1",
        "2",
        "4",
    ]
    assert (
        pk.source(["1", "x", "-2"]) | pk.filter(positive, workers=2, on_error="skip")
    ).run() == ["1"]


class Flaky:
    """Fails the first ``fails`` calls for each item, then returns it doubled."""

    def __init__(self, fails: int, exc: type[Exception] = ConnectionError) -> None:
        self.fails = fails
        self.exc = exc
        self.calls: collections.Counter[int] = collections.Counter()
        self.lock = threading.Lock()

    def __call__(self, x: int) -> int:
        with self.lock:
            self.calls[x] += 1
            n = self.calls[x]
        if x % 2 and n <= self.fails:
            raise self.exc(f"flaky {x}")
        return 2 * x

    async def call(self, x: int) -> int:
        await trio.lowlevel.checkpoint()
        return self(x)


@pytest.mark.parametrize("kind", ["map", "thread", "async"])
def test_retry_calls_a_failing_item_again_until_it_succeeds(kind: str) -> None:
    flaky = Flaky(fails=2)
    retry = pk.Retry(2, backoff=0.001)
    stage = {
        "map": lambda: pk.map(flaky, retry=retry),
        "thread": lambda: pk.thread(flaky, workers=2, retry=retry),
        "async": lambda: pk.map(flaky.call, workers=4, retry=retry),
    }[kind]()
    assert (pk.source(range(20)) | stage).run() == [2 * x for x in range(20)]
    assert flaky.calls == {x: 3 if x % 2 else 1 for x in range(20)}


@pytest.mark.parametrize("kind", ["map", "thread", "async"])
def test_retry_gives_up_after_its_count_and_hands_the_item_to_on_error(kind: str) -> None:
    flaky = Flaky(fails=5)
    dead: list[int] = []
    options: dict[str, Any] = {"retry": 2, "on_error": lambda i, e: dead.append(i)}
    stage = {
        "map": lambda: pk.map(flaky, **options),
        "thread": lambda: pk.thread(flaky, **options),
        "async": lambda: pk.map(flaky.call, **options),
    }[kind]()
    p = pk.source(range(6)) | stage
    assert p.run() == [0, 4, 8]
    assert dead == [1, 3, 5]
    assert flaky.calls == {0: 1, 1: 3, 2: 1, 3: 3, 4: 1, 5: 3}


def test_retry_only_retries_the_exceptions_it_is_given() -> None:
    flaky = Flaky(fails=1, exc=KeyError)
    retry = pk.Retry(3, backoff=0, on=(ConnectionError,))
    assert (pk.source(range(4)) | pk.map(flaky, retry=retry, on_error="skip")).run() == [0, 4]
    assert flaky.calls == {0: 1, 1: 1, 2: 1, 3: 1}


async def test_retry_waits_with_exponential_backoff(autojump_clock: trio.testing.MockClock) -> None:
    attempts: list[float] = []

    async def always_fails(x: int) -> int:
        attempts.append(trio.current_time())
        raise ConnectionError("down")

    retry = pk.Retry(4, backoff=0.5, factor=2.0, max_backoff=2.0)
    p = pk.source([1]) | pk.map(always_fails, retry=retry, on_error="skip")
    assert await p.arun() == []
    assert attempts == pytest.approx([0.0, 0.5, 1.5, 3.5, 5.5])  # 0.5, 1, 2, 2 (capped)
    assert retry.delay(1) == 0.5 and retry.delay(10) == 2.0


async def test_timeout_fails_a_slow_async_call(autojump_clock: trio.testing.MockClock) -> None:
    async def slow(x: int) -> int:
        await trio.sleep(x)
        return x

    failed: list[tuple[int, type[BaseException]]] = []
    p = pk.source([1, 5, 2]) | pk.map(
        slow, timeout=3, workers=3, on_error=lambda i, e: failed.append((i, type(e)))
    )
    assert await p.arun() == [1, 2]
    assert failed == [(5, trio.TooSlowError)]
    assert trio.current_time() == pytest.approx(3.0)


def test_timeout_abandons_a_slow_call_in_a_thread() -> None:
    release = threading.Event()

    def stuck(x: int) -> int:
        if x == 2:
            release.wait(HANG_GUARD)  # far longer than the timeout
        return x

    failed: list[int] = []
    try:
        p = pk.source(range(5)) | pk.thread(
            stuck, workers=2, timeout=1.0, on_error=lambda i, e: failed.append(i)
        )
        assert p.run() == [0, 1, 3, 4]
        assert failed == [2]
    finally:
        release.set()


def test_timeout_is_refused_for_a_plain_function_on_the_event_loop() -> None:
    with pytest.raises(ValueError, match="cannot stop a plain function"):
        pk.map(parse_int, timeout=1)
    pk.map(parse_int, workers=2, timeout=1)  # threads: accepted
    with pytest.raises(ValueError, match="positive"):
        pk.thread(parse_int, timeout=0)


def test_per_item_options_are_checked() -> None:
    with pytest.raises(ValueError, match="on_error"):
        pk.map(parse_int, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_error"):
        pk.map(parse_int, on_error=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry"):
        pk.map(parse_int, retry="twice")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        pk.Retry(-1)
    assert pk.map(parse_int, retry=2).options.retry == pk.Retry(2)
    assert pk.map(parse_int, retry=0).options.retry is None


# --- per-item errors on processes -------------------------------------------------------------

WORKER_FILE = """
import os

def flaky(x):
    marker = os.path.join({tmp!r}, f"seen-{{x}}")
    if x % 2 and not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError(f"first try of {{x}}")
    return x * 10

def hang(x):
    if x == 3:
        import time
        time.sleep(60)
    return x
"""


def _worker(tmp_path: Path) -> Path:
    path = tmp_path / "item_worker.py"
    path.write_text(WORKER_FILE.format(tmp=str(tmp_path)))
    return path


def test_an_item_mode_worker_retries_and_skips_failed_items(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    stage = pk.run(f"{worker}:flaky", mode="item", workers=2, retry=pk.Retry(1, backoff=0))
    assert (pk.source(range(6)) | stage).run() == [0, 10, 20, 30, 40, 50]

    for marker in tmp_path.glob("seen-*"):
        marker.unlink()
    dead: list[tuple[int, str]] = []
    stage = pk.run(
        f"{worker}:flaky",
        mode="item",
        on_error=lambda i, e: dead.append((i, getattr(e, "kind", ""))),
    )
    assert (pk.source(range(4)) | stage).run() == [0, 20]
    assert dead == [(1, "ConnectionError"), (3, "ConnectionError")]


def test_an_item_mode_worker_times_out_one_item(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    dead: list[tuple[int, str]] = []
    stage = pk.run(
        f"{worker}:hang",
        mode="item",
        timeout=2.0,
        on_error=lambda i, e: dead.append((i, getattr(e, "kind", ""))),
    )
    assert (pk.source(range(5)) | stage).run() == [0, 1, 2, 4]
    assert dead == [(3, "timeout")]


def test_an_item_mode_worker_without_on_error_fails_on_a_timeout(tmp_path: Path) -> None:
    stage = pk.run(f"{_worker(tmp_path)}:hang", mode="item", timeout=2.0)
    with pytest.raises(pk.ModuleError) as info:
        (pk.source(range(5)) | stage).run()
    assert isinstance(info.value.__cause__, pk.WorkerError)
    assert info.value.__cause__.kind == "timeout"


def test_per_item_options_on_streams_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode='item'"):
        pk.run(f"{_worker(tmp_path)}:flaky", on_error="skip")
    with pytest.raises(ValueError, match="one stream"):
        pk.cmd("cat", retry=3)
    with pytest.raises(ValueError, match="mode='jsonl'"):
        pk.cmd("cat", mode="lines", on_error="skip")


@pytest.mark.needs("sh", "dash")
def test_a_jsonl_command_skips_what_cannot_be_encoded_or_decoded() -> None:
    failed: list[tuple[Any, str]] = []
    p = pk.source([{"a": 1}, {1, 2}, {"b": 2}]) | pk.cmd(
        "sh",
        "-c",
        "cat; echo; echo 'not json'; echo '[3]'",
        on_error=lambda item, exc: failed.append((item, type(exc).__name__)),
    )
    assert p.run() == [{"a": 1}, {"b": 2}, [3]]
    assert failed == [({1, 2}, "CodecError"), ("not json", "JSONDecodeError")]


@pytest.mark.needs("sh", "dash")
def test_a_jsonl_command_with_a_dead_letter_stage_leads_a_pipeline() -> None:
    bad: list[Any] = []
    p = pk.cmd("sh", "-c", "echo 1; echo oops; echo 2", on_error=pk.sink(bad.append), name="gen")
    assert (p | pk.collect()).run() == [1, 2]
    assert [line for line, _ in bad] == ["oops"]


# --- commands: JSON hint, the newline rule -----------------------------------------------------


@pytest.mark.needs("ls", "coreutils")
def test_a_jsonl_command_that_writes_text_says_to_use_lines_mode() -> None:
    with pytest.raises(pk.ModuleError) as info:
        (pk.cmd("ls", "/") | pk.collect()).run()
    assert "not JSON lines" in str(info.value)
    assert "mode='lines'" in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, pk.ProtocolError) and cause.kind == "undecodable"
    assert isinstance(cause.__cause__, pk.ProtocolError)  # the decoder's own error


@pytest.mark.needs("cat", "coreutils")
def test_a_chain_of_commands_ending_in_jsonl_gives_the_hint_too() -> None:
    p = pk.cmd("echo", "text", mode="lines") | pk.cmd("cat") | pk.collect()
    with pytest.raises(pk.ModuleError, match="mode='lines'"):
        p.run()


@pytest.mark.needs("cat", "coreutils")
def test_lines_that_end_with_a_newline_are_not_doubled_in_lines_mode(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a\nb\n")
    with path.open() as f:
        assert (pk.source(f) | pk.cmd("cat", mode="lines")).run() == ["a", "b"]
    messages = ["plain", "ends\n", "two\n\n", b"raw\n", b"rawer", ""]
    assert (pk.source(messages) | pk.cmd("cat", mode="lines")).run() == [
        "plain",
        "ends",
        "two",
        "",
        "raw",
        "rawer",
        "",
    ]


# --- the star import ----------------------------------------------------------------------------


def test_the_star_import_leaves_map_and_filter_to_the_builtins() -> None:
    namespace: dict[str, Any] = {}
    exec("from pipekit import *", namespace)
    assert "map" not in namespace and "filter" not in namespace
    assert pk.map.__module__ == pk.filter.__module__ == "pipekit.pipeline._transforms"
    assert list(map(str, [1])) == ["1"]


def test_reduce_folds_every_message_and_run_returns_the_value() -> None:
    assert (pk.source(range(1000)) | pk.reduce(lambda total, n: total + n, 0)).run() == 499500


def test_reduce_of_nothing_is_its_initial_value() -> None:
    assert (pk.source([]) | pk.reduce(lambda acc, m: [*acc, m], ["start"])).run() == ["start"]


def test_reduce_fails_the_run_when_its_function_raises() -> None:
    def fold(acc: int, n: int) -> int:
        if n == 3:
            raise ValueError("three")
        return acc + n

    with pytest.raises(pk.ModuleError) as info:
        (pk.source(range(10)) | pk.reduce(fold, 0)).run()
    assert isinstance(info.value.__cause__, ValueError)
