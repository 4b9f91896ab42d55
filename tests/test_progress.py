"""Seeing what runs: each stage's busy, starved and blocked time, the bottleneck, the
progress display (live on a terminal, log lines off one) and the statistics table."""

from __future__ import annotations

import io
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import pipekit as pk
from pipekit.cli.report import format_stats
from pipekit.kernel import ModuleStats
from pipekit.pipeline import ProgressDisplay


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


# -- the display ------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def screen_lines(output: str) -> list[str]:
    """What a terminal shows, line by line: escape sequences removed, carriage returns
    and newlines both ending a line."""
    return re.split(r"[\r\n]", ANSI.sub("", output))


def sleepy(x: int) -> int:
    time.sleep(0.001)
    return x


LONG = "a stage with a name far too long for a row of an eighty-column terminal"


def test_progress_on_a_terminal_fits_80_columns_and_shows_every_stage() -> None:
    out = io.StringIO()
    p = (
        pk.source(range(600))
        | pk.map(str, name=LONG)
        | pk.thread(sleepy)
        | pk.batch(10)
        | pk.unbatch()
        | pk.collect()
    )
    p.run(progress=ProgressDisplay(out, live=True, width=80), interval=0.05)
    lines = screen_lines(out.getvalue())
    assert max(len(line) for line in lines) <= 80
    for name in ("source(range)", "thread(sleepy)", "batch(10)", "unbatch", "collect"):
        assert any(name in line for line in lines), name
    assert any(line.startswith("  a stage with a name") and "…" in line for line in lines)
    # The headline: time, progress against the source's length, and the bottleneck.
    assert any("(600/600)" in line and "bottleneck thread(sleepy)" in line for line in lines)
    assert any(line.startswith("> thread(sleepy)") for line in lines)
    header = next(line for line in lines if line.startswith("stage"))
    assert header.split() == ["stage", "in", "out", "msg/s", "busy", "starv", "block", "state"]


def test_progress_on_a_narrow_terminal_drops_columns_rather_than_wrapping() -> None:
    out = io.StringIO()
    p = pk.source(range(50)) | pk.map(str, name=LONG) | pk.collect()
    p.run(progress=ProgressDisplay(out, live=True, width=40))
    lines = screen_lines(out.getvalue())
    assert max(len(line) for line in lines) <= 40
    assert any(line.lstrip().startswith("collect") for line in lines)


def test_progress_shows_an_eta_while_a_source_of_known_length_runs() -> None:
    display = ProgressDisplay(io.StringIO(), live=False)
    display.start(total=1000)
    stats = {"source(range)": ModuleStats("source(range)", messages_out=250)}
    line = display.summary(stats)
    assert "25% (250/1,000)" in line and "ETA" in line
    assert "ETA" not in display.summary(stats, final=True)
    unknown = ProgressDisplay(io.StringIO(), live=False)
    unknown.start(total=None)
    assert "250 in" in unknown.summary(stats) and "ETA" not in unknown.summary(stats)


def test_progress_off_a_terminal_writes_plain_log_lines() -> None:
    out = io.StringIO()
    p = pk.source(range(300)) | pk.thread(sleepy) | pk.collect()
    p.run(progress=ProgressDisplay(out, every=0.0), interval=0.05)
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    assert len(lines) >= 2
    assert all(line.startswith("pipekit") for line in lines)
    assert lines[-1].startswith("pipekit done: ") and "(300/300)" in lines[-1]
    assert "source(range) 300 > thread(sleepy) 300 > collect 300" in lines[-1]


def test_progress_true_writes_to_stderr_and_says_when_a_run_failed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = pk.source([1, 0]) | pk.map(lambda n: 1 / n)
    with pytest.raises(pk.ModuleError):
        p.run(progress=True)
    err = capsys.readouterr().err
    assert err.startswith("pipekit failed: ") and "map(<lambda>) 1" in err


async def test_arun_progress_true_and_a_function_still_work() -> None:
    seen: list[dict[str, ModuleStats]] = []
    assert await (pk.source(range(3)) | pk.map(str)).arun(progress=seen.append) == ["0", "1", "2"]
    assert seen and list(seen[-1]) == ["source(range)", "map(str)", "collect"]


def test_stats_table_shows_busy_starved_blocked_and_marks_the_bottleneck() -> None:
    p = pk.source(range(5_000)) | pk.map(spin) | pk.collect()
    p.run()
    table = format_stats(p.stats)
    lines = table.splitlines()
    headers = ["stage", "in", "out", "msg/s", "busy", "starved", "blocked", "state"]
    assert lines[0].split() == headers
    row = next(line for line in lines if line.startswith("map(spin)"))
    assert row.endswith("<- bottleneck")
    assert sum("<- bottleneck" in line for line in lines) == 1
