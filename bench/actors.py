"""The local actor node: messages one at a time, and spawning (issue 15).

Run from the checkout::

    python bench/actors.py                 # 200,000 messages / 50,000 spawns, median of 5
    python bench/actors.py --quick         # smoke run: 10,000 / 2,000, 1 round

Rows, measured in interleaved rounds (a slow moment of the machine hits every row of
that round), each against its baseline of the same round (the ratio is the median of
the per-round ratios), each from a collected heap (``gc.collect()`` before it):

- messages: a producer process sends ``--messages`` small dicts one per call to a
  consumer process that takes them one per ``receive()``; against a trio memory channel
  (buffer 1024, the default mailbox size) used item by item between two tasks. Two
  producer shapes: ``await send_wait()`` per message, and ``send()`` per message that
  falls back to ``send_wait()`` on :class:`MailboxFull`. The consumer sums a field (the
  total is checked).
- spawn: ``--spawns`` processes of an entry that counts itself and returns, from start
  to the last one's exit; against ``nursery.start_soon`` of the same function.
- stage: ``--messages`` ints through ``pk.source(...) | STAGE | pk.reduce(sum)``, where
  STAGE adds one to each: ``pk.actor`` (a process taking one message per receive and
  ``await process.emit()``-ing one at a time, on a node of its own), against ``pk.map``
  of the same plain function (batch by batch, the pipeline's fast path); an ``async
  def`` ``pk.map`` (one await per message) is shown beside it. No target: the ratio
  says what an actor stage costs.

Targets (issue 15): messages >= 500,000 msg/s and >= 2x the channel; spawn >= 50,000/s
and >= 0.5x ``start_soon``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import Verdicts, paired_ratio, ratio_cell, render_table, run_main, spread_cell

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

import pipekit as pk  # noqa: E402
from pipekit.actors import MailboxFull, Pid, open_node, process  # noqa: E402

TIMEOUT = 120.0

SEND_WAIT = "messages: await send_wait() -> receive()"
SEND = "messages: send() (MailboxFull: send_wait) -> receive()"
CHANNEL = "baseline trio memory channel: send() -> receive()"
SPAWN = "spawn: node.spawn() to exit"
START_SOON = "baseline nursery.start_soon() to exit"
ACTOR_STAGE = "stage: pk.actor (listen -> emit, one at a time)"
ASYNC_MAP_STAGE = "stage: pk.map(async def), one await per message"
MAP_STAGE = "baseline stage: pk.map(def), batch by batch"


@dataclass(frozen=True)
class Row:
    name: str
    kind: str
    """``messages``, ``spawn`` or ``stage``: what ``n`` counts."""
    run: Callable[[int], float]
    baseline: str | None = None
    rate: float = 0.0
    ratio: float = 0.0


# -- messages ---------------------------------------------------------------------------


def actor_messages(n: int, *, wait: bool) -> float:
    async def consumer(count: int) -> int:
        ch = process.listen("m")
        total = 0
        for _ in range(count):
            total += (await ch.receive())["i"]
        return total

    async def producer(count: int) -> float:
        start = time.perf_counter()
        dest: Pid = process.spawn_monitored(consumer, None, count)
        send, send_wait = process.send, process.send_wait
        if wait:
            for i in range(count):
                await send_wait(dest, "m", {"i": i, "v": "x" * 16})
        else:
            for i in range(count):
                msg = {"i": i, "v": "x" * 16}
                try:
                    send(dest, "m", msg)
                except MailboxFull:
                    await send_wait(dest, "m", msg)
        event = await process.events().receive()
        took = time.perf_counter() - start
        if event.result != count * (count - 1) // 2:
            raise RuntimeError(f"checksum {event.result}: messages lost or duplicated")
        return took

    async def main() -> float:
        with trio.fail_after(TIMEOUT):
            async with open_node("bench") as node:
                took: float = await node.run(producer, n)
                return took

    return trio.run(main)


def channel_messages(n: int) -> float:
    async def main() -> float:
        send_chan, recv_chan = trio.open_memory_channel[dict[str, Any]](1024)
        total = 0

        async def consumer() -> None:
            nonlocal total
            for _ in range(n):
                total += (await recv_chan.receive())["i"]

        start = time.perf_counter()
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consumer)
                for i in range(n):
                    await send_chan.send({"i": i, "v": "x" * 16})
        took = time.perf_counter() - start
        if total != n * (n - 1) // 2:
            raise RuntimeError("channel checksum")
        return took

    return trio.run(main)


# -- spawn ------------------------------------------------------------------------------


def actor_spawn(n: int) -> float:
    async def main() -> float:
        done = trio.Event()
        count = 0

        async def entry() -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set()

        with trio.fail_after(TIMEOUT):
            async with open_node("bench") as node:
                start = time.perf_counter()
                spawn = node.spawn
                for _ in range(n):
                    spawn(entry)
                await done.wait()
                took = time.perf_counter() - start
                await trio.testing.wait_all_tasks_blocked()
                if node.stats().processes:
                    raise RuntimeError("processes left behind")
                return took

    import trio.testing

    return trio.run(main)


def bare_spawn(n: int) -> float:
    async def main() -> float:
        done = trio.Event()
        count = 0

        async def entry() -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set()

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                start = time.perf_counter()
                start_soon = nursery.start_soon
                for _ in range(n):
                    start_soon(entry)
                await done.wait()
                return time.perf_counter() - start

    return trio.run(main)


# -- actor stage ------------------------------------------------------------------------


def _plus_one(x: int) -> int:
    return x + 1


async def _async_plus_one(x: int) -> int:
    return x + 1


async def _actor_plus_one() -> None:
    emit = process.emit
    async for x in process.listen("in"):
        await emit(x + 1)


def stage_messages(n: int, stage: pk.Stage) -> float:
    pipeline = pk.source(range(n)) | stage | pk.reduce(lambda total, x: total + x, 0)
    start = time.perf_counter()
    total = pipeline.run()
    took = time.perf_counter() - start
    if total != n * (n + 1) // 2:
        raise RuntimeError(f"stage checksum {total}: messages lost or duplicated")
    return took


ROWS = [
    Row(SEND_WAIT, "messages", lambda n: actor_messages(n, wait=True), CHANNEL, 500_000, 2.0),
    Row(SEND, "messages", lambda n: actor_messages(n, wait=False), CHANNEL, 500_000, 2.0),
    Row(CHANNEL, "messages", channel_messages),
    Row(SPAWN, "spawn", actor_spawn, START_SOON, 50_000, 0.5),
    Row(START_SOON, "spawn", bare_spawn),
    Row(ACTOR_STAGE, "stage", lambda n: stage_messages(n, pk.actor(_actor_plus_one)), MAP_STAGE),
    Row(ASYNC_MAP_STAGE, "stage", lambda n: stage_messages(n, pk.map(_async_plus_one)), MAP_STAGE),
    Row(MAP_STAGE, "stage", lambda n: stage_messages(n, pk.map(_plus_one))),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--spawns", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke run: small and once")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.spawns, args.repeat = 10_000, 2_000, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    print(
        f"machine: nproc={usable} (cpu_count={os.cpu_count()}), {platform.machine()}, "
        f"{platform.system()} {platform.release()}"
    )
    print(
        f"python {platform.python_version()}, trio {trio.__version__}, pipekit "
        f"{pk.__version__} from {ROOT}"
    )
    print(
        f"{args.messages:,} messages / {args.spawns:,} spawns per row, "
        f"median of {args.repeat} interleaved round(s)\n",
        flush=True,
    )
    counts = {"messages": args.messages, "spawn": args.spawns, "stage": args.messages}
    rates: dict[str, list[float]] = {row.name: [] for row in ROWS}
    started = time.perf_counter()
    for round_no in range(1, args.repeat + 1):
        for row in ROWS:
            n = counts[row.kind]
            print(f"  [{round_no}/{args.repeat}] {row.name} ...", end="", file=sys.stderr)
            gc.collect()  # every row starts from a collected heap: no row pays for
            # the garbage of the one before (the spawn rows are GC-bound)
            rate = n / row.run(n)
            rates[row.name].append(rate)
            print(f" {rate:,.0f}/s", file=sys.stderr, flush=True)
    verdicts = Verdicts()
    table = []
    for row in ROWS:
        median = statistics.median(rates[row.name])
        if row.baseline is None:
            spread = spread_cell(rates[row.name])
            table.append([row.name, f"{median:,.0f}", spread, "1.00x", "", ""])
            continue
        ratio = paired_ratio(rates[row.name], rates[row.baseline])
        target = f">= {row.rate / 1000:,.0f}k/s & >= {row.ratio:g}x" if row.rate else ""
        ok = median >= row.rate and ratio[0] >= row.ratio if row.rate else None
        table.append(
            [
                row.name,
                f"{median:,.0f}",
                spread_cell(rates[row.name]),
                ratio_cell(ratio, args.repeat, percent=False),
                target,
                verdicts.judge(ok),
            ]
        )
    header = ["row", "per second", "spread", "vs baseline", "target", "result"]
    for line in render_table(header, table, right={1, 2, 3}):
        print(line)
    print(f"\n{verdicts.passed} PASS, {verdicts.missed} MISS")
    print(f"total time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
