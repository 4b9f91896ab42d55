"""Small-message throughput, source to sink, for every pipekit transport and a baseline.

Run from the checkout::

    python bench/throughput.py                 # 1,000,000 messages, median of 3 runs
    python bench/throughput.py --quick         # smoke run: 20,000 messages, 1 run
    python bench/throughput.py --messages 200000 --repeat 5

Every row moves ``--messages`` messages ``{"i": n, "v": "x" * 16}`` (a new dict per
message, built by the producer inside the timed region) from a producer to a consumer
that reads every message (``total += msg["i"]``; the total is checked, so a lost or
duplicated message fails the run). The table shows the median msg/s over ``--repeat``
runs, its ratio to the ``multiprocessing.Pipe`` per-message baseline and to the row's
target baseline (``mp.Pipe``, or trio's memory channel for the in-process per-message
row), each the median of per-round ratios (the baseline measured in the same round), and
the issue's target with PASS/MISS. The "per msg" rows are the shapes code writes one
message at a time (issue 14). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from _common import (
    Verdicts,
    die_with_parent,
    paired_ratio,
    ratio_cell,
    reaped,
    render_table,
    run_main,
    spread_cell,
)

# Benchmark the checkout this file lives in, whatever else is installed.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402
import trio  # noqa: E402

import pipekit as pk  # noqa: E402
from pipekit.adapters.thread import ThreadPort, open_thread_port  # noqa: E402
from pipekit.kernel import framed_pipe, open_pipe_pair  # noqa: E402

BATCH = 256
"""Messages per ``send_batch`` / per list in the batched rows."""
TIMEOUT = 120.0
"""Seconds after which one trio measurement gives up (a hang is a failure, not a result)."""

# Rows, in table order. The smoke test checks that each name is printed.
INPROC_BATCH = "in-process pipe: send_batch(256) -> batches()"
INPROC_EACH = "in-process pipe: send() -> async for (per msg)"
CHANNEL_EACH = "baseline trio memory channel: send() -> async for"
PIPELINE = "pipeline: pk.source(gen) | pk.sink(fn)"
THREAD_TO_TRIO = "thread port: thread send() -> trio batches()"
TRIO_TO_THREAD = "thread port: trio send_batch(256) -> thread iter"
THREAD_TO_TRIO_EACH = "thread port: thread send() -> trio async for (per msg)"
TRIO_TO_THREAD_EACH = "thread port: trio send() -> thread iter (per msg)"
FRAMED_ONE = "framed socketpair: 1 process, 1 loop (1 core)"
FRAMED_TWO = "framed socketpair: child -> parent (2 cores)"
MP_EACH = "baseline mp.Pipe: send()/recv() per msg"
MP_BATCH = "baseline mp.Pipe: send(list of 256)"


@dataclass(frozen=True)
class Target:
    rate: float
    """Minimum msg/s."""
    ratio: float = 3.0
    """Minimum multiple of the baseline row measured in the same round."""
    baseline: str = MP_EACH
    """The row the ratio is taken against."""

    def describe(self) -> str:
        against = "chan" if self.baseline == CHANNEL_EACH else "mp"
        return f">= {self.rate / 1e6:.1f}M & >= {self.ratio:g}x {against}"

    def met(self, rate: float, ratio: float) -> bool:
        return rate >= self.rate and ratio >= self.ratio


IN_PROCESS = Target(2_000_000)
THREAD_PORT = Target(1_000_000)
FRAMED = Target(1_000_000)
# Issue 14: one message at a time.
IN_PROCESS_EACH = Target(1_000_000, 5.0, CHANNEL_EACH)
THREAD_PORT_EACH = Target(500_000, 5.0)


def batch_of(start: int, n: int) -> list[dict[str, Any]]:
    """A batch of fresh messages ``start`` .. ``min(start + BATCH, n) - 1``."""
    return [{"i": i, "v": "x" * 16} for i in range(start, min(start + BATCH, n))]


def expected_total(n: int) -> int:
    return n * (n - 1) // 2


def check(name: str, n: int, total: int) -> None:
    if total != expected_total(n):
        raise RuntimeError(
            f"{name}: checksum {total} != {expected_total(n)}: messages lost or duplicated"
        )


# --- child processes ---------------------------------------------------------------------


def _child_main(parent: int, target: Callable[..., None], args: tuple[Any, ...]) -> None:
    # Ctrl-C goes to the whole process group; the parent alone decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    target(*args)


@contextlib.contextmanager
def child_process(target: Callable[..., None], *args: Any) -> Iterator[BaseProcess]:
    """Fork a child running ``target(*args)``; on exit make sure it is gone.

    On a normal exit the child must finish by itself (within 30 s) with exit code 0;
    on an error or Ctrl-C it is terminated, then killed, and always joined."""
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_child_main, args=(os.getpid(), target, args), daemon=True)
    proc.start()
    with reaped(proc):
        yield proc


# --- 1. in-process pipe ------------------------------------------------------------------


def bench_inproc_batch(n: int) -> float:
    async def main() -> float:
        a, b = open_pipe_pair()
        total = 0

        async def produce() -> None:
            for start in range(0, n, BATCH):
                await a.send_batch(batch_of(start, n))
            await a.end()

        async def consume() -> None:
            nonlocal total
            async for batch in b.batches():
                for msg in batch:
                    total += msg["i"]

        with trio.fail_after(TIMEOUT):
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                nursery.start_soon(consume)
            elapsed = time.perf_counter() - t0
        check(INPROC_BATCH, n, total)
        return elapsed

    return trio.run(main)


def bench_inproc_each(n: int) -> float:
    async def main() -> float:
        a, b = open_pipe_pair()
        total = 0

        async def produce() -> None:
            for i in range(n):
                await a.send({"i": i, "v": "x" * 16})
            await a.end()

        async def consume() -> None:
            nonlocal total
            async for msg in b:
                total += msg["i"]

        with trio.fail_after(TIMEOUT):
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                nursery.start_soon(consume)
            elapsed = time.perf_counter() - t0
        check(INPROC_EACH, n, total)
        return elapsed

    return trio.run(main)


def bench_channel_each(n: int) -> float:
    """trio's own memory channel, the same shape and capacity as the pipe row above."""

    async def main() -> float:
        send, receive = trio.open_memory_channel[dict[str, Any]](1024)
        total = 0

        async def produce() -> None:
            async with send:
                for i in range(n):
                    await send.send({"i": i, "v": "x" * 16})

        async def consume() -> None:
            nonlocal total
            async for msg in receive:
                total += msg["i"]

        with trio.fail_after(TIMEOUT):
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                nursery.start_soon(consume)
            elapsed = time.perf_counter() - t0
        check(CHANNEL_EACH, n, total)
        return elapsed

    return trio.run(main)


# --- 2. pipeline -------------------------------------------------------------------------


def bench_pipeline(n: int) -> float:
    total = 0

    def generate() -> Iterator[dict[str, Any]]:
        for i in range(n):
            yield {"i": i, "v": "x" * 16}

    def add(msg: dict[str, Any]) -> None:
        nonlocal total
        total += msg["i"]

    pipeline = pk.source(generate) | pk.sink(add)
    t0 = time.perf_counter()
    pipeline.run()
    elapsed = time.perf_counter() - t0
    check(PIPELINE, n, total)
    return elapsed


# --- 3. thread port ----------------------------------------------------------------------


def bench_thread_to_trio(n: int) -> float:
    def produce(port: ThreadPort) -> None:
        for i in range(n):
            port.send({"i": i, "v": "x" * 16})

    async def main() -> float:
        total = 0
        with trio.fail_after(TIMEOUT):
            t0 = time.perf_counter()
            async with open_thread_port(produce) as pipe:
                async for batch in pipe.batches():
                    for msg in batch:
                        total += msg["i"]
                elapsed = time.perf_counter() - t0
        check(THREAD_TO_TRIO, n, total)
        return elapsed

    return trio.run(main)


def bench_trio_to_thread(n: int) -> float:
    def consume(port: ThreadPort) -> None:
        total = 0
        for msg in port:
            total += msg["i"]
        port.send(total)

    async def main() -> float:
        with trio.fail_after(TIMEOUT):
            t0 = time.perf_counter()
            async with open_thread_port(consume) as pipe:
                for start in range(0, n, BATCH):
                    await pipe.send_batch(batch_of(start, n))
                await pipe.end()
                # The clock stops once the thread has consumed everything: its total
                # comes back (older versions of open_thread_port also interrupted a
                # thread that was still reading when the block was left).
                total = await pipe.receive()
                elapsed = time.perf_counter() - t0
        check(TRIO_TO_THREAD, n, total)
        return elapsed

    return trio.run(main)


def bench_thread_to_trio_each(n: int) -> float:
    def produce(port: ThreadPort) -> None:
        send = port.send
        for i in range(n):
            send({"i": i, "v": "x" * 16})

    async def main() -> float:
        total = 0
        with trio.fail_after(TIMEOUT):
            t0 = time.perf_counter()
            async with open_thread_port(produce) as pipe:
                async for msg in pipe:
                    total += msg["i"]
                elapsed = time.perf_counter() - t0
        check(THREAD_TO_TRIO_EACH, n, total)
        return elapsed

    return trio.run(main)


def bench_trio_to_thread_each(n: int) -> float:
    def consume(port: ThreadPort) -> None:
        total = 0
        for msg in port:
            total += msg["i"]
        port.send(total)

    async def main() -> float:
        with trio.fail_after(TIMEOUT):
            t0 = time.perf_counter()
            async with open_thread_port(consume) as pipe:
                for i in range(n):
                    await pipe.send({"i": i, "v": "x" * 16})
                await pipe.end()
                total = await pipe.receive()  # once the thread has consumed everything
                elapsed = time.perf_counter() - t0
        check(TRIO_TO_THREAD_EACH, n, total)
        return elapsed

    return trio.run(main)


# --- 4. framed pipe over a Unix socketpair -----------------------------------------------


def _trio_stream(sock: socket.socket) -> trio.SocketStream:
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


async def _framed_produce(sock: socket.socket, n: int, wait_for_go: bool) -> None:
    async with framed_pipe(
        _trio_stream(sock), initiator=True, codecs=("msgpack",), name="producer"
    ) as pipe:
        if wait_for_go:
            await pipe.receive()
        for start in range(0, n, BATCH):
            await pipe.send_batch(batch_of(start, n))
        # Leaving the block ENDs and flushes.


async def _framed_consume(sock: socket.socket, n: int, send_go: bool) -> tuple[float, int]:
    """Returns (seconds from the producer's go to the END, checksum)."""
    total = 0
    async with framed_pipe(_trio_stream(sock), initiator=False, name="consumer") as pipe:
        if pipe.conn.codec_name != "msgpack":
            raise RuntimeError(f"expected the msgpack codec, got {pipe.conn.codec_name}")
        t0 = time.perf_counter()
        if send_go:
            await pipe.send("go")
            await pipe.end()
        async for batch in pipe.batches():
            for msg in batch:
                total += msg["i"]
        elapsed = time.perf_counter() - t0
    return elapsed, total


def bench_framed_one_process(n: int) -> float:
    async def main() -> float:
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        result: list[tuple[float, int]] = []

        async def consume() -> None:
            result.append(await _framed_consume(right, n, send_go=False))

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                nursery.start_soon(_framed_produce, left, n, False)
        elapsed, total = result[0]
        check(FRAMED_ONE, n, total)
        return elapsed

    return trio.run(main)


def _framed_child(sock: socket.socket, other: socket.socket, n: int) -> None:
    other.close()
    trio.run(_framed_produce, sock, n, True)


def bench_framed_two_processes(n: int) -> float:
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with child_process(_framed_child, child_sock, parent_sock, n):
            child_sock.close()

            async def main() -> tuple[float, int]:
                with trio.fail_after(TIMEOUT):
                    return await _framed_consume(parent_sock, n, send_go=True)

            elapsed, total = trio.run(main)
    finally:
        child_sock.close()
        parent_sock.close()
    check(FRAMED_TWO, n, total)
    return elapsed


# --- 5. baseline: multiprocessing.Pipe ---------------------------------------------------


def _mp_child_each(conn: Connection, other: Connection, n: int) -> None:
    other.close()
    conn.recv()  # go
    send = conn.send
    for i in range(n):
        send({"i": i, "v": "x" * 16})
    conn.close()


def _mp_child_batch(conn: Connection, other: Connection, n: int) -> None:
    other.close()
    conn.recv()  # go
    for start in range(0, n, BATCH):
        conn.send(batch_of(start, n))
    conn.close()


def _bench_mp(n: int, child: Callable[[Connection, Connection, int], None], batched: bool) -> float:
    parent_conn, child_conn = multiprocessing.Pipe()
    try:
        with child_process(child, child_conn, parent_conn, n):
            child_conn.close()
            total = 0
            recv = parent_conn.recv
            t0 = time.perf_counter()
            parent_conn.send("go")
            if batched:
                count = 0
                while count < n:
                    batch = recv()
                    for msg in batch:
                        total += msg["i"]
                    count += len(batch)
            else:
                for _ in range(n):
                    total += recv()["i"]
            elapsed = time.perf_counter() - t0
    finally:
        child_conn.close()
        parent_conn.close()
    check(MP_BATCH if batched else MP_EACH, n, total)
    return elapsed


def bench_mp_each(n: int) -> float:
    return _bench_mp(n, _mp_child_each, batched=False)


def bench_mp_batch(n: int) -> float:
    return _bench_mp(n, _mp_child_batch, batched=True)


# --- driver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    name: str
    run: Callable[[int], float]
    target: Target | None
    """None: no target of its own (a baseline, or shown for honesty next to a target row)."""
    note: str = ""


BENCHES = [
    Bench(INPROC_BATCH, bench_inproc_batch, IN_PROCESS),
    Bench(INPROC_EACH, bench_inproc_each, IN_PROCESS_EACH),
    Bench(CHANNEL_EACH, bench_channel_each, None, "baseline"),
    Bench(PIPELINE, bench_pipeline, IN_PROCESS),
    Bench(THREAD_TO_TRIO, bench_thread_to_trio, THREAD_PORT),
    Bench(TRIO_TO_THREAD, bench_trio_to_thread, THREAD_PORT),
    Bench(THREAD_TO_TRIO_EACH, bench_thread_to_trio_each, THREAD_PORT_EACH),
    Bench(TRIO_TO_THREAD_EACH, bench_trio_to_thread_each, THREAD_PORT_EACH),
    Bench(FRAMED_ONE, bench_framed_one_process, FRAMED),
    Bench(FRAMED_TWO, bench_framed_two_processes, FRAMED),
    Bench(MP_EACH, bench_mp_each, None, "baseline"),
    Bench(MP_BATCH, bench_mp_batch, None, "baseline"),
]


def machine_info(n: int, repeat: int) -> list[str]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return [
        f"machine: nproc={usable} (cpu_count={os.cpu_count()}), {platform.machine()}, "
        f"{platform.system()} {platform.release()}",
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"trio {trio.__version__}, msgpack {'.'.join(map(str, msgpack.version))}, "
        f"pipekit {pk.__version__} from {ROOT}",
        f'messages: {n:,} x {{"i": n, "v": "x" * 16}} per row, median of {repeat} run(s), '
        f"batches of {BATCH}",
    ]


def selected(only: list[str] | None) -> list[Bench]:
    """The rows to run: all, or those matching ``only`` plus the baselines they need."""
    if not only:
        return BENCHES
    names = {b.name for b in BENCHES if any(text in b.name for text in only)}
    names.add(MP_EACH)
    names.update(b.target.baseline for b in BENCHES if b.name in names and b.target)
    return [b for b in BENCHES if b.name in names]


def format_table(benches: list[Bench], rates: dict[str, list[float]]) -> list[str]:
    header = ("name", "msg/s", "spread", "vs mp.Pipe", "vs baseline", "target", "result")
    rows: list[tuple[str, ...]] = []
    verdicts = Verdicts()
    repeat = len(rates[MP_EACH])
    for bench in benches:
        runs = rates[bench.name]
        rate = statistics.median(runs)
        vs_mp = paired_ratio(runs, rates[MP_EACH])
        target = "-" if bench.target is None else bench.target.describe()
        if bench.target is None:
            ok, vs_base = None, "-"
        else:
            ratio = paired_ratio(runs, rates[bench.target.baseline])
            ok = bench.target.met(rate, ratio[0])
            vs_base = ratio_cell(ratio, repeat, percent=False)
        result = verdicts.judge(ok, bench.note)
        cells = (
            f"{rate:,.0f}",
            spread_cell(runs),
            f"{vs_mp[0]:.2f}x",
            vs_base,
            target,
            result,
        )
        rows.append((bench.name, *cells))
    out = render_table(header, rows, {1, 2, 3, 4})
    out.append(
        f"targets: {verdicts.passed} PASS, {verdicts.missed} MISS "
        "(PASS needs both the msg/s and the ratio)"
    )
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="pipekit small-message throughput benchmark")
    parser.add_argument(
        "--messages", type=int, default=1_000_000, help="messages per row (default 1,000,000)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per row; the median is shown (default 3)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 messages, 1 run")
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="run only the rows whose name contains TEXT (repeatable), and their baselines",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.repeat = 20_000, 1
    if args.messages < 1 or args.repeat < 1:
        parser.error("--messages and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n, repeat = args.messages, args.repeat
    for text in machine_info(n, repeat):
        print(text)
    print(flush=True)
    started = time.perf_counter()
    benches = selected(args.only)
    rates: dict[str, list[float]] = {b.name: [] for b in benches}
    # Rounds interleave the rows, so that a slow moment of the machine hits every row
    # (and the baseline) rather than one row's every run.
    for round_no in range(1, repeat + 1):
        for bench in benches:
            print(f"  [{round_no}/{repeat}] {bench.name} ...", end="", file=sys.stderr, flush=True)
            seconds = bench.run(n)
            rates[bench.name].append(n / seconds)
            print(f" {n / seconds:,.0f} msg/s", file=sys.stderr, flush=True)
    for text in format_table(benches, rates):
        print(text)
    print(f"\ntotal time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
