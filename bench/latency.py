"""Round-trip latency, one message at a time: p50 and p99 per transport, each against
floors measured in the same run.

Run from the checkout::

    python bench/latency.py                 # the full run
    python bench/latency.py --quick         # smoke run (a few seconds)
    python bench/latency.py --repeat 5 --round-trips 4000

Every row sends one small message (``{"i": n, "v": "x" * 16}``), waits for its echo,
and only then sends the next: the request/reply shape of ``reply = await
worker.call(request)``. The floors:

* **trio <-> trio**: the same round trip over a ``socketpair`` to a child process whose
  trio loop echoes raw bytes (``SocketStream.send_all`` / ``receive_some``): what two
  trio event loops cost with no pipekit at all, the floor of any design with a trio
  loop on each side. The targets are ratios to it.
* **mp.Pipe**: ``multiprocessing.Pipe`` ``send``/``recv`` to a forked child that echoes,
  blocking calls on both sides (no event loop): the ratio to it is reported beside.

Targets: ``Worker.call`` (both worker shapes) and unix/tcp p50 <= 1.25x the trio floor's
p50, websocket <= 1.5x; p99 <= 3x the floor's p99. Rounds are interleaved (round 1 of
every row, then round 2, ...) and each ratio is paired with the floor of its own round,
so a busy moment of the machine hits rows and floors alike. Exit code 0 whether targets
are met or missed; non-zero if a run failed (a bad echo, a child that failed, a hang).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import statistics
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import processes
from _common import Verdicts, reaped, render_table, run_main

TIMEOUT = 120.0
WARM = processes.WARM_ROUND_TRIPS

FLOOR = "floor: trio <-> trio socketpair echo"
MP = "floor: mp.Pipe send()/recv() echo"
OS_PIPE = "floor: OS pipes, python readline"
INPROC = "in-process pipe: send() -> receive()"
THREAD = "thread port: echo thread"
CALL_ASYNC = "Worker.call(): async worker"
CALL_PORT = "Worker.call(): port worker"
POOL_ONE = "WorkerPool(1).map([x]): item mode"
UNIX = "unix: send() -> receive()"
TCP = "tcp 127.0.0.1: send() -> receive()"
WEBSOCKET = "websocket: send() -> receive()"

TARGETS: dict[str, float] = {
    CALL_ASYNC: 1.25,
    CALL_PORT: 1.25,
    UNIX: 1.25,
    TCP: 1.25,
    WEBSOCKET: 1.5,
}
"""p50 targets, as ratios to the trio floor's p50 (p99: 3x the floor's p99 for each)."""
P99_TARGET = 3.0


def message(i: int) -> dict[str, Any]:
    return {"i": i, "v": "x" * 16}


# --- floors -----------------------------------------------------------------------------


def _mp_echo_forked(parent: int, conn: Any, other: Any) -> None:
    processes._mp_echo_forked(parent, conn, other)


def round_trip_mp(count: int) -> list[float]:
    """``count`` round trips through ``multiprocessing.Pipe`` to a forked echo child."""
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_mp_echo_forked, args=(os.getpid(), theirs, ours), daemon=True)
    times = []
    try:
        proc.start()
        with reaped(proc):
            theirs.close()
            send, recv, clock = ours.send, ours.recv, time.perf_counter
            for i in range(-WARM, count):
                msg = message(i)
                t0 = clock()
                send(msg)
                reply = recv()
                t1 = clock()
                if reply != msg:
                    raise RuntimeError(f"{MP}: bad reply {reply!r}")
                if i >= 0:
                    times.append(t1 - t0)
            send(None)
    finally:
        ours.close()
        theirs.close()
    return times


def round_trip_os_pipes(count: int) -> list[float]:
    """Two OS pipes to a Python child doing blocking ``readline``/``write``."""
    return processes.round_trip_os(count, [sys.executable, "-c", processes.ECHO_LINES])


# --- in this process --------------------------------------------------------------------


def round_trip_inproc(count: int) -> list[float]:
    """Two tasks on one loop joined by ``open_pipe_pair``: one echoes what it receives."""
    import trio

    from pipekit.kernel import open_pipe_pair

    async def main() -> list[float]:
        a, b = open_pipe_pair()

        async def echo() -> None:
            async for msg in b:
                await b.send(msg)

        times = []
        clock = time.perf_counter
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo)
                for i in range(-WARM, count):
                    msg = message(i)
                    t0 = clock()
                    await a.send(msg)
                    reply = await a.receive()
                    t1 = clock()
                    if reply != msg:
                        raise RuntimeError(f"{INPROC}: bad reply {reply!r}")
                    if i >= 0:
                        times.append(t1 - t0)
                await a.end()
        return times

    return trio.run(main)


def _echo_thread(port: Any) -> None:
    for msg in port:
        port.send(msg)


def round_trip_thread(count: int) -> list[float]:
    """A trio task and a thread joined by ``open_thread_port``; the thread echoes."""
    import trio

    from pipekit.adapters.thread import open_thread_port

    async def main() -> list[float]:
        times = []
        clock = time.perf_counter
        with trio.fail_after(TIMEOUT):
            async with open_thread_port(_echo_thread) as pipe:
                for i in range(-WARM, count):
                    msg = message(i)
                    t0 = clock()
                    await pipe.send(msg)
                    reply = await pipe.receive()
                    t1 = clock()
                    if reply != msg:
                        raise RuntimeError(f"{THREAD}: bad reply {reply!r}")
                    if i >= 0:
                        times.append(t1 - t0)
        return times

    return trio.run(main)


def identity(x: Any) -> Any:
    """The pool row's function (its workers import it from this file)."""
    return x


def round_trip_pool(count: int) -> list[float]:
    """``count`` one-item ``map`` calls on a warm one-worker ``pk.WorkerPool`` (item
    mode: the process backend's call round trip), one after the other."""
    import trio

    import pipekit as pk

    async def main() -> list[float]:
        times = []
        clock = time.perf_counter
        with trio.fail_after(TIMEOUT):
            async with pk.WorkerPool(identity, 1) as pool:
                for i in range(-WARM, count):
                    t0 = clock()
                    reply = await pool.map([i])
                    t1 = clock()
                    if reply != [i]:
                        raise RuntimeError(f"{POOL_ONE}: bad reply {reply!r}")
                    if i >= 0:
                        times.append(t1 - t0)
        return times

    return trio.run(main)


# --- sockets: a child process serves an echo handler ----------------------------------

ECHO_SERVER = textwrap.dedent(
    """
    import sys, trio
    from pipekit.adapters import tcp, unix, websocket

    async def echo(pipe):
        async for msg in pipe:
            await pipe.send(msg)

    async def main(kind, where):
        if kind == "unix":
            listening = unix.listen(where, handler=echo)
        elif kind == "tcp":
            listening = tcp.listen("127.0.0.1", 0, handler=echo)
        else:
            listening = websocket.listen("127.0.0.1", 0, handler=echo)
        async with listening as listener:
            address = listener.address
            print(where if kind == "unix" else address[1], flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes it

    trio.run(main, sys.argv[1], sys.argv[2])
    """
)


def round_trip_socket(kind: str, name: str, count: int) -> list[float]:
    """``count`` round trips to an echo handler served by a child process."""
    import subprocess
    import tempfile

    import trio

    from pipekit.adapters import tcp, unix, websocket

    with tempfile.TemporaryDirectory(prefix="pipekit-latency-") as tmp:
        where = os.path.join(tmp, "echo.sock")
        with processes.popen(
            [sys.executable, "-c", ECHO_SERVER, kind, where],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=processes.child_env(),
        ) as child:
            assert child.stdout is not None and child.stdin is not None
            address = child.stdout.readline().decode().strip()
            if not address:
                raise RuntimeError(f"{name}: the echo server did not start")

            def connect() -> Any:
                if kind == "unix":
                    return unix.connect(address)
                if kind == "tcp":
                    return tcp.connect("127.0.0.1", int(address))
                return websocket.connect(f"ws://127.0.0.1:{address}/ws")

            async def main() -> list[float]:
                times = []
                clock = time.perf_counter
                with trio.fail_after(TIMEOUT):
                    async with connect() as pipe:
                        for i in range(-WARM, count):
                            msg = message(i)
                            t0 = clock()
                            await pipe.send(msg)
                            reply = await pipe.receive()
                            t1 = clock()
                            if reply != msg:
                                raise RuntimeError(f"{name}: bad reply {reply!r}")
                            if i >= 0:
                                times.append(t1 - t0)
                return times

            try:
                return trio.run(main)
            finally:
                child.stdin.close()


# --- the table --------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    measure: Callable[[int], list[float]]
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)

    def add(self, times: list[float]) -> None:
        ordered = sorted(times)
        self.p50.append(statistics.median(ordered))
        self.p99.append(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))])


def make_rows() -> list[Row]:
    return [
        Row(FLOOR, processes.round_trip_trio),
        Row(MP, round_trip_mp),
        Row(OS_PIPE, round_trip_os_pipes),
        Row(INPROC, round_trip_inproc),
        Row(THREAD, round_trip_thread),
        Row(CALL_ASYNC, lambda n: processes.round_trip_pipekit(n, "echo_async")),
        Row(CALL_PORT, lambda n: processes.round_trip_pipekit(n, "echo_port")),
        Row(POOL_ONE, round_trip_pool),
        Row(UNIX, lambda n: round_trip_socket("unix", UNIX, n)),
        Row(TCP, lambda n: round_trip_socket("tcp", TCP, n)),
        Row(WEBSOCKET, lambda n: round_trip_socket("websocket", WEBSOCKET, n)),
    ]


def paired(values: list[float], base: list[float]) -> float:
    return statistics.median(v / b for v, b in zip(values, base, strict=True))


def format_table(rows: list[Row]) -> tuple[list[str], Verdicts]:
    by_name = {row.name: row for row in rows}
    floor, mp = by_name[FLOOR], by_name[MP]
    verdicts = Verdicts()
    header = ["round trip", "p50 µs", "p99 µs", "p50 / floor", "p99 / floor", "p50 / mp", "target"]
    body = []
    for row in rows:
        r50 = paired(row.p50, floor.p50)
        r99 = paired(row.p99, floor.p99)
        rmp = paired(row.p50, mp.p50)
        goal = TARGETS.get(row.name)
        ok = None if goal is None else (r50 <= goal and r99 <= P99_TARGET)
        note = "" if goal is None else f" (<= {goal:g}x / {P99_TARGET:g}x)"
        body.append(
            [
                row.name,
                f"{statistics.median(row.p50) * 1e6:.0f}",
                f"{statistics.median(row.p99) * 1e6:.0f}",
                f"{r50:.2f}x",
                f"{r99:.2f}x",
                f"{rmp:.2f}x",
                verdicts.judge(ok) + note,
            ]
        )
    return render_table(header, body, right={1, 2, 3, 4, 5}), verdicts


def machine_info(args: argparse.Namespace) -> str:
    return (
        f"machine: nproc={os.cpu_count()} python={platform.python_version()} "
        f"round trips per run={args.round_trips} runs={args.repeat}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (a few seconds)")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs per row")
    parser.add_argument("--round-trips", type=int, default=3000, help="per row and run")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.round_trips = 1, 200
    rows = make_rows()
    for run in range(args.repeat):
        for row in rows:
            print(f"run {run + 1}/{args.repeat}: {row.name}", file=sys.stderr, flush=True)
            row.add(row.measure(args.round_trips))
    lines, verdicts = format_table(rows)
    print(machine_info(args))
    print("\n".join(lines))
    print(f"targets: {verdicts.passed} PASS, {verdicts.missed} MISS")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        run_main(main)
