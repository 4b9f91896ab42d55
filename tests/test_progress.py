"""Seeing what runs: each stage's busy, starved and blocked time, the bottleneck, the
progress display (live on a terminal, log lines off one) and the statistics table."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import trio
import trio.testing

import pipekit as pk
from pipekit.kernel import ModuleStats


def spin(x: int) -> int:
    """About 50 us of pure CPU on the event loop."""
    total = 0
    for i in range(1500):
        total += i
    return x


def bottleneck(stats: dict[str, ModuleStats]) -> list[str]:
    return [name for name, st in stats.items() if st.bottleneck]


def test_stats_mark_the_stage_whose_function_keeps_the_event_loop_busy() -> None:
    p = pk.source(range(10_000)) | pk.map(str) | pk.map(spin) | pk.batch(10) | pk.collect()
    p.run()
    st = p.stats
    assert bottleneck(st) == ["map(spin)"]
    elapsed = st["map(spin)"].elapsed
    assert elapsed is not None and st["map(spin)"].busy_seconds > 0.5 * elapsed
    # The others wait for their turn on the loop, which is not their work.
    for name in ("source(range)", "map(str)", "batch(10)", "collect"):
        assert st[name].busy_seconds < st["map(spin)"].busy_seconds / 4, name


def test_a_stage_waiting_for_input_is_starved_and_a_slow_source_is_the_bottleneck() -> None:
    async def trickle() -> AsyncIterator[int]:
        for n in range(5):
            await trio.sleep(1)
            yield n

    p = pk.source(trickle) | pk.map(str) | pk.collect()

    async def main() -> None:
        assert await p.arun() == ["0", "1", "2", "3", "4"]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    st = p.stats
    assert bottleneck(st) == ["source(trickle)"]
    assert st["source(trickle)"].busy_seconds >= 4.9
    assert st["map(str)"].starved_seconds >= 4.9 and st["map(str)"].busy_seconds < 0.1
    assert st["collect"].starved_seconds >= 4.9


def test_stages_before_a_slow_sink_are_blocked_and_the_sink_is_the_bottleneck() -> None:
    async def store(x: Any) -> None:
        await trio.sleep(0.01)

    p = pk.source(range(500)) | pk.map(str, buffer=50) | pk.sink(store, buffer=50)

    async def main() -> None:
        await p.arun()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    st = p.stats
    assert bottleneck(st) == ["sink(store)"]
    assert st["sink(store)"].busy_seconds >= 4.9  # 500 x 10 ms of its function
    assert st["map(str)"].blocked_seconds > 3.5 and st["source(range)"].blocked_seconds > 2.5
    assert st["map(str)"].blocked_seconds == st["map(str)"].paused_seconds


def test_a_thread_stage_doing_the_work_is_busy_and_the_bottleneck() -> None:
    def slow(x: int) -> int:
        time.sleep(0.002)
        return x

    p = pk.source(range(200)) | pk.thread(slow) | pk.collect()
    p.run()
    st = p.stats
    assert bottleneck(st) == ["thread(slow)"]
    assert st["collect"].starved_seconds > st["collect"].busy_seconds


def test_no_stage_is_the_bottleneck_when_none_was_busy() -> None:
    p = pk.source([]) | pk.map(str) | pk.collect()
    p.run()
    assert bottleneck(p.stats) == []
    assert all(st.busy_seconds >= 0 and st.starved_seconds >= 0 for st in p.stats.values())


def test_kernel_stats_leave_the_pipeline_measurements_at_zero() -> None:
    async def main() -> dict[str, ModuleStats]:
        async with pk.open_kernel() as k:
            k.connect(k.add(produce), k.add(consume))
        return k.stats()

    async def produce(out: Any) -> None:
        await out.send_batch([1, 2])

    async def consume(inp: Any) -> None:
        async for _ in inp:
            pass

    for st in trio.run(main).values():
        assert (st.busy_seconds, st.starved_seconds, st.bottleneck) == (0.0, 0.0, False)
