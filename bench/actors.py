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

Nodes (a second table; ``--no-nodes`` skips it): this process's node ``src`` joined to
a node ``sink`` in a child process (``python bench/actors.py --node-peer KIND WHERE``)
over unix or tcp 127.0.0.1. One way: a process sends ``--node-messages`` small dicts,
one per ``await send_wait()``, to a process on the other node that sums a field and
replies with the total at the end; against ``multiprocessing.Pipe`` ``send()`` per
message to a forked child doing the same (target >= 500,000 msg/s and >= 3x it). Then
the same over unix with plain ``send()`` (``send_wait()`` only on ``LinkFull``): what
the far process received a second, and the share its full mailbox refused (reported to
the sender as UNDELIVERED: ``send`` never waits for the far mailbox). Round trip: a
process sends one message to an echo process on the other node and waits for the
reply, ``--round-trips`` times; p50 against a bare trio <-> trio socket echo between
two processes (target <= 1.5x) and, beside it, ``multiprocessing.Pipe``; the same with
an echo process on the ``"process"`` host (a child node over its stdin and stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
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
from pipekit.actors import (  # noqa: E402
    LinkFull,
    MailboxFull,
    Pid,
    UndeliveredEvent,
    open_node,
    process,
    registry,
)

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


# -- nodes ------------------------------------------------------------------------------

NODE_UNIX = "nodes: unix, send_wait() one way"
NODE_TCP = "nodes: tcp, send_wait() one way"
NODE_SEND_UNIX = "nodes: unix, send() one way (send_wait on LinkFull)"
MP_ONE_WAY = "baseline mp.Pipe: send() one way"
NODE_RT_UNIX = "nodes: unix, round trip p50 (us)"
NODE_RT_TCP = "nodes: tcp, round trip p50 (us)"
NODE_RT_PROCESS = 'nodes: "process" host (stdio), round trip p50 (us)'
TRIO_RT = "baseline trio <-> trio socket echo p50 (us)"
MP_RT = "baseline mp.Pipe echo p50 (us)"
NODE_ONE_WAY_TARGET = (500_000, 3.0)
NODE_RT_TARGET = 1.5


async def _node_sink() -> None:
    """Per run: a count on ``n``, then that many dicts on ``m``; their ``i`` summed back."""
    counts = process.listen("n", message=True)
    items = process.listen("m")
    while True:
        start = await counts.receive()
        total = 0
        for _ in range(start.payload):
            total += (await items.receive())["i"]
        process.send(start.sender, "done", total)


async def _node_counter() -> None:
    """Per run: dicts on ``c`` until a None; their count and ``i`` sum sent back."""
    items = process.listen("c", message=True)
    while True:
        count = total = 0
        while (msg := await items.receive()).payload is not None:
            count += 1
            total += msg.payload["i"]
        process.send(msg.sender, "counted", [count, total])


async def _node_echo() -> None:
    pings = process.listen("ping", message=True)
    while True:
        msg = await pings.receive()
        process.send(msg.sender, "pong", msg.payload)


def node_peer(kind: str, where: str) -> None:
    """The child of the node rows: node ``sink`` listening at ``where``, until stdin closes."""

    async def main() -> None:
        async with open_node("sink", mailbox_size=4096) as node:
            node.registry.register("sink", node.spawn(_node_sink))
            node.registry.register("echo", node.spawn(_node_echo))
            node.registry.register("counter", node.spawn(_node_counter))
            print(await node.listen(where if kind == "unix" else "127.0.0.1:0"), flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)

    trio.run(main)


@contextlib.contextmanager
def _peer(kind: str) -> Any:
    with tempfile.TemporaryDirectory(prefix="pipekit-nodes-") as tmp:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        child = subprocess.Popen(
            [sys.executable, __file__, "--node-peer", kind, os.path.join(tmp, "n.sock")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        try:
            assert child.stdout is not None and child.stdin is not None
            address = child.stdout.readline().decode().strip()
            if not address:
                raise RuntimeError("the node peer did not start")
            yield address
            child.stdin.close()
            child.wait(30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


def node_one_way(kind: str, n: int) -> float:
    with _peer(kind) as address:

        async def producer() -> float:
            sink = registry.lookup("sink")
            send_wait = process.send_wait
            done = process.listen("done")
            start = time.perf_counter()
            process.send(sink, "n", n)
            for i in range(n):
                await send_wait(sink, "m", {"i": i, "v": "x" * 16})
            total = await done.receive()
            took = time.perf_counter() - start
            if total != n * (n - 1) // 2:
                raise RuntimeError(f"checksum {total}: messages lost or duplicated")
            return took

        async def main() -> float:
            with trio.fail_after(TIMEOUT):
                async with open_node("src") as node:
                    await node.connect(address)
                    took: float = await node.run(producer)
                    return took

        return trio.run(main)


def node_send_one_way(kind: str, n: int) -> tuple[float, int]:
    """Plain ``send``, ``send_wait`` only when the link is full (``LinkFull``): the
    seconds, and how many messages the far mailbox refused (UNDELIVERED events)."""
    with _peer(kind) as address:

        async def producer() -> tuple[float, int]:
            counter = registry.lookup("counter")
            send, send_wait = process.send, process.send_wait
            counted = process.listen("counted")
            start = time.perf_counter()
            for i in range(n):
                msg = {"i": i, "v": "x" * 16}
                try:
                    send(counter, "c", msg)
                except LinkFull:
                    await send_wait(counter, "c", msg)
            await send_wait(counter, "c", None)
            count, _ = await counted.receive()
            took = time.perf_counter() - start
            lost = 0
            events = process.events()
            while True:
                try:
                    event = events.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(event, UndeliveredEvent):
                    lost += event.count
            if count + lost != n:
                raise RuntimeError(f"{count} delivered + {lost} undelivered != {n}")
            return took, lost

        async def main() -> tuple[float, int]:
            with trio.fail_after(TIMEOUT):
                async with open_node("src") as node:
                    await node.connect(address)
                    result: tuple[float, int] = await node.run(producer)
                    return result

        return trio.run(main)


def _mp_sink(conn: Any, n: int) -> None:
    total = 0
    recv = conn.recv
    for _ in range(n):
        total += recv()["i"]
    conn.send(total)


def mp_one_way(n: int) -> float:
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_mp_sink, args=(theirs, n), daemon=True)
    proc.start()
    try:
        theirs.close()
        start = time.perf_counter()
        send = ours.send
        for i in range(n):
            send({"i": i, "v": "x" * 16})
        total = ours.recv()
        took = time.perf_counter() - start
        if total != n * (n - 1) // 2:
            raise RuntimeError("mp checksum")
        return took
    finally:
        proc.join(30)
        ours.close()


async def _ping(echo: Any, count: int) -> list[float]:
    """``count`` timed round trips (after 50 untimed) to ``echo``, inside a process:
    a "ping" out, its "pong" back."""
    pongs = process.listen("pong")
    clock = time.perf_counter
    times = []
    for i in range(-50, count):
        msg = {"i": i, "v": "x" * 16}
        t0 = clock()
        process.send(echo, "ping", msg)
        reply = await pongs.receive()
        t1 = clock()
        if reply != msg:
            raise RuntimeError(f"bad reply {reply!r}")
        if i >= 0:
            times.append(t1 - t0)
    return times


def node_round_trip(kind: str, count: int) -> list[float]:
    with _peer(kind) as address:

        async def pinger() -> list[float]:
            return await _ping(registry.lookup("echo"), count)

        async def main() -> list[float]:
            with trio.fail_after(TIMEOUT):
                async with open_node("src") as node:
                    await node.connect(address)
                    times: list[float] = await node.run(pinger)
                    return times

        return trio.run(main)


def process_round_trip(count: int) -> list[float]:
    """The round trip with an echo process on the ``"process"`` host (a child node over
    the stdio adapter: its stdin and stdout), started before the clock runs."""
    bench = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), bench, os.environ.get("PYTHONPATH")])
    )

    async def pinger() -> list[float]:
        return await _ping(process.spawn("actors:_node_echo", "process"), count)

    async def main() -> list[float]:
        with trio.fail_after(TIMEOUT):
            async with open_node("src") as node:
                times: list[float] = await node.run(pinger)
                return times

    return trio.run(main)


def trio_round_trip(count: int) -> list[float]:
    import processes

    times: list[float] = processes.round_trip_trio(count)
    return times


def mp_round_trip(count: int) -> list[float]:
    import latency

    times: list[float] = latency.round_trip_mp(count)
    return times


def node_rows(args: argparse.Namespace, verdicts: Verdicts) -> list[list[str]]:
    """The node table: one-way rates and round-trip p50s, interleaved rounds."""
    one_way: dict[str, Callable[[int], float]] = {
        NODE_UNIX: lambda n: node_one_way("unix", n),
        NODE_TCP: lambda n: node_one_way("tcp", n),
        MP_ONE_WAY: mp_one_way,
    }
    round_trip: dict[str, Callable[[int], list[float]]] = {
        NODE_RT_UNIX: lambda n: node_round_trip("unix", n),
        NODE_RT_TCP: lambda n: node_round_trip("tcp", n),
        NODE_RT_PROCESS: process_round_trip,
        TRIO_RT: trio_round_trip,
        MP_RT: mp_round_trip,
    }
    rates: dict[str, list[float]] = {name: [] for name in one_way}
    p50s: dict[str, list[float]] = {name: [] for name in round_trip}
    sent: list[float] = []  # plain send(): delivered messages a second
    lost: list[float] = []  # and the share the far mailbox refused
    for round_no in range(1, args.repeat + 1):
        for name, run_one_way in one_way.items():
            print(f"  [{round_no}/{args.repeat}] {name} ...", end="", file=sys.stderr)
            gc.collect()
            rate = args.node_messages / run_one_way(args.node_messages)
            rates[name].append(rate)
            print(f" {rate:,.0f}/s", file=sys.stderr, flush=True)
        print(f"  [{round_no}/{args.repeat}] {NODE_SEND_UNIX} ...", end="", file=sys.stderr)
        gc.collect()
        took, refused = node_send_one_way("unix", args.node_messages)
        sent.append((args.node_messages - refused) / took)
        lost.append(refused / args.node_messages)
        print(f" {sent[-1]:,.0f}/s, {lost[-1]:.0%} undelivered", file=sys.stderr, flush=True)
        for name, run_rt in round_trip.items():
            print(f"  [{round_no}/{args.repeat}] {name} ...", end="", file=sys.stderr)
            gc.collect()
            p50 = statistics.median(run_rt(args.round_trips)) * 1e6
            p50s[name].append(p50)
            print(f" {p50:,.0f} us", file=sys.stderr, flush=True)
    table = []
    for name in one_way:
        median = statistics.median(rates[name])
        if name == MP_ONE_WAY:
            table.append([name, f"{median:,.0f}/s", spread_cell(rates[name]), "1.00x", "", ""])
            continue
        ratio = paired_ratio(rates[name], rates[MP_ONE_WAY])
        rate, times = NODE_ONE_WAY_TARGET
        ok = median >= rate and ratio[0] >= times
        table.append(
            [
                name,
                f"{median:,.0f}/s",
                spread_cell(rates[name]),
                ratio_cell(ratio, args.repeat, percent=False) + " mp",
                f">= {rate / 1000:,.0f}k/s & >= {times:g}x mp",
                verdicts.judge(ok),
            ]
        )
    table.append(
        [
            NODE_SEND_UNIX,
            f"{statistics.median(sent):,.0f}/s delivered",
            spread_cell(sent),
            f"{statistics.median(lost):.0%} undelivered (far mailbox full)",
            "",
            "",
        ]
    )
    for name in round_trip:
        median = statistics.median(p50s[name])
        if name in (TRIO_RT, MP_RT):
            table.append([name, f"{median:,.0f}", spread_cell(p50s[name]), "", "", ""])
            continue
        to_trio = paired_ratio(p50s[name], p50s[TRIO_RT])
        to_mp = paired_ratio(p50s[name], p50s[MP_RT])
        judged = name != NODE_RT_PROCESS  # (no target of its own: shown beside them)
        table.append(
            [
                name,
                f"{median:,.0f}",
                spread_cell(p50s[name]),
                f"{ratio_cell(to_trio, args.repeat, percent=False)} trio, "
                f"{ratio_cell(to_mp, args.repeat, percent=False)} mp",
                f"<= {NODE_RT_TARGET:g}x trio" if judged else "",
                verdicts.judge(to_trio[0] <= NODE_RT_TARGET) if judged else "",
            ]
        )
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--spawns", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--node-messages", type=int, default=200_000)
    parser.add_argument("--round-trips", type=int, default=2_000)
    parser.add_argument("--no-nodes", action="store_true", help="skip the node table")
    parser.add_argument("--quick", action="store_true", help="smoke run: small and once")
    parser.add_argument("--node-peer", nargs=2, metavar=("KIND", "WHERE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.spawns, args.repeat = 10_000, 2_000, 1
        args.node_messages, args.round_trips = 5_000, 200
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.node_peer:
        node_peer(*args.node_peer)
        return 0
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
    if not args.no_nodes:
        print(
            f"\nnodes: {args.node_messages:,} messages one way / {args.round_trips:,} round "
            f"trips per row, median of {args.repeat} interleaved round(s)\n",
            flush=True,
        )
        header = ["row", "rate / p50 us", "spread", "vs baseline", "target", "result"]
        for line in render_table(header, node_rows(args, verdicts), right={1, 2, 3}):
            print(line)
    print(f"\n{verdicts.passed} PASS, {verdicts.missed} MISS")
    print(f"total time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
