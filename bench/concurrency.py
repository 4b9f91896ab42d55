"""``pk.parallel_map`` against the usual ways of doing the same by hand.

Run from the checkout::

    python bench/concurrency.py            # 20,000 trivial items, 400 CPU items, 500 sleeps
    python bench/concurrency.py --quick    # smoke run (a few seconds)
    python bench/concurrency.py --items 50000 --repeat 7

Each section runs its contenders in interleaved rounds (one of each per round, in
turn), and each ratio is the median of the per-round ratios to the baseline of the same
round (``bench/_common.paired_ratio``), so a noisy machine's slow phases cancel out.

* **Per-item overhead** (``--items`` trivial items, everything is overhead): wall time
  per item of ``pk.parallel_map`` on the task backend (an ``async def`` no-op, 100 at
  once) against ``asyncio.gather`` over one coroutine per item and a bare trio nursery
  with one task per item; and on the thread backend (a no-op, 16 threads) against
  ``concurrent.futures.ThreadPoolExecutor(16).map``. Each call is a whole script-level
  call (``parallel_map`` starts its trio loop; ``asyncio.run`` and ``trio.run`` are
  counted for the baselines too). Target: below each baseline.
* **Channels**: one message at a time from a producer task to a consumer task (the
  actors' pattern) through ``pipekit.channels.channel`` against trio's memory channel of
  the same capacity (unbuffered and 100), and through ``pk.select`` over that channel
  and an idle one. Targets: a channel within 1.3x trio's, a select within 2x.
* **Process backend** (``--cpu-items`` items of ~2 ms of pure-Python CPU work, two
  workers): the whole call, pool start-up included, since ``parallel_map`` starts one
  per call: ``pk.parallel_map(backend="process")`` against ``multiprocessing.Pool(2)``
  (``map`` in a ``with`` block, spawn and fork) and ``mpire.WorkerPool(2)`` when mpire
  is installed (``pip install mpire``; else the row says it was skipped).
* **Slow blocking items**: 500 x ``time.sleep(0.01)`` on 16 threads through
  ``parallel_map(backend="thread")`` against ``ThreadPoolExecutor(16).map``. Target:
  within 1.1x.

Results are checked (a lost or wrong result fails the run); the exit code is 0 even when
a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# Benchmark the checkout this file lives in, whatever else is installed.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import trio  # noqa: E402
from _common import Verdicts, paired_ratio, ratio_cell, render_table, run_main  # noqa: E402

import pipekit as pk  # noqa: E402
from pipekit.channels import Channel, channel  # noqa: E402

THREADS = 16
TASKS = 100
PROCESSES = 2
BURN = 20_000
"""Iterations of :func:`burn` (about 2 ms of pure-Python work on these machines)."""


def noop(x: int) -> int:
    return x


async def anoop(x: int) -> int:
    return x


def burn(n: int) -> int:
    """CPU-bound: an integer loop (module level, so worker processes import it)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


# -- contenders: each takes the items and returns the results as a list ------------------


def pk_tasks(items: list[int]) -> list[Any]:
    return [r.unwrap() for r in pk.parallel_map(anoop, items, max_workers=TASKS)]


def asyncio_gather(items: list[int]) -> list[Any]:
    async def main() -> list[Any]:
        return list(await asyncio.gather(*(anoop(x) for x in items)))

    return asyncio.run(main())


def trio_nursery(items: list[int]) -> list[Any]:
    async def main() -> list[Any]:
        out: list[Any] = [None] * len(items)

        async def one(i: int, x: int) -> None:
            out[i] = await anoop(x)

        async with trio.open_nursery() as nursery:
            for i, x in enumerate(items):
                nursery.start_soon(one, i, x)
        return out

    return trio.run(main)


def pk_threads(fn: Callable[[Any], Any]) -> Callable[[list[Any]], list[Any]]:
    def run(items: list[Any]) -> list[Any]:
        results = pk.parallel_map(fn, items, backend="thread", max_workers=THREADS)
        return [r.unwrap() for r in results]

    return run


def executor(fn: Callable[[Any], Any]) -> Callable[[list[Any]], list[Any]]:
    def run(items: list[Any]) -> list[Any]:
        with ThreadPoolExecutor(THREADS) as pool:
            return list(pool.map(fn, items))

    return run


def pk_processes(items: list[int]) -> list[Any]:
    results = pk.parallel_map(burn, items, backend="process", max_workers=PROCESSES)
    return [r.unwrap() for r in results]


def mp_pool(method: str) -> Callable[[list[int]], list[Any]]:
    def run(items: list[int]) -> list[Any]:
        with multiprocessing.get_context(method).Pool(PROCESSES) as pool:
            return pool.map(burn, items)

    return run


def mpire_pool() -> Callable[[list[int]], list[Any]] | None:
    try:
        from mpire import WorkerPool  # type: ignore[attr-defined, import-not-found, unused-ignore]
    except ImportError:
        return None

    def run(items: list[int]) -> list[Any]:
        with WorkerPool(n_jobs=PROCESSES) as pool:
            return list(pool.map(burn, items))

    return run


def through_trio_channel(capacity: int) -> Callable[[list[int]], list[Any]]:
    def run(items: list[int]) -> list[Any]:
        async def main() -> list[Any]:
            send, receive = trio.open_memory_channel[int](capacity)

            async def produce() -> None:
                async with send:
                    for x in items:
                        await send.send(x)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                return [x async for x in receive]

        return trio.run(main)

    return run


def through_pk_channel(capacity: int, selecting: bool) -> Callable[[list[int]], list[Any]]:
    def run(items: list[int]) -> list[Any]:
        async def main() -> list[Any]:
            ch: Channel[int] = channel(capacity)
            idle: Channel[int] = channel()

            async def produce() -> None:
                for x in items:
                    await ch.send(x)
                ch.close()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                if not selecting:
                    return [x async for x in ch]
                out: list[Any] = []
                while True:
                    got = await pk.select([ch.case_receive(), idle.case_receive()])
                    if not got.ok:
                        return out
                    out.append(got.value)

        return trio.run(main)

    return run


# -- measuring -------------------------------------------------------------------------

Row = tuple[str, Callable[[list[Any]], list[Any]] | None]


def measure(
    rows: list[Row], items: list[Any], expected: list[Any], repeat: int
) -> list[list[float]]:
    """Seconds per call of each row, ``repeat`` interleaved rounds (one warm-up round
    first, not counted); a skipped row (no function) gets NaNs."""
    times: list[list[float]] = [[] for _ in rows]
    for round_ in range(repeat + 1):
        for k, (name, fn) in enumerate(rows):
            if fn is None:
                times[k].append(float("nan"))
                continue
            start = time.perf_counter()
            got = fn(items)
            elapsed = time.perf_counter() - start
            if got != expected:
                raise RuntimeError(f"{name}: wrong results")
            if round_:
                times[k].append(elapsed)
    return times


def section(
    title: str,
    rows: list[Row],
    items: list[Any],
    expected: list[Any],
    repeat: int,
    *,
    per_item: bool,
    targets: dict[int, list[tuple[int, float]]],
    verdicts: Verdicts,
) -> list[str]:
    """A table: each row's time (per item in µs, or per call in ms) and its ratios to
    the baseline rows named in ``targets`` (``row -> [(baseline row, max ratio)]``)."""
    times = measure(rows, items, expected, repeat)
    unit = "µs/item" if per_item else "ms/call"
    out: list[list[str]] = []
    for k, (name, fn) in enumerate(rows):
        if fn is None:
            out.append([name, "skipped", "", "mpire not installed (pip install mpire)"])
            continue
        median = statistics.median(times[k])
        value = median / len(items) * 1e6 if per_item else median * 1e3
        if k not in targets:
            out.append([name, f"{value:,.1f}", "", "baseline"])
            continue
        for n, (base, limit) in enumerate(targets[k]):
            if rows[base][1] is None:
                continue
            ratio = paired_ratio(times[k], times[base])
            label = rows[base][0].split(" ")[0].rstrip(":")
            cell = f"{ratio_cell(ratio, repeat, percent=False)} of {label}"
            verdict = f"{verdicts.judge(ratio[0] <= limit)} (<= {limit:g}x)"
            out.append([name if n == 0 else "", f"{value:,.1f}" if n == 0 else "", cell, verdict])
    return [title, *render_table(["contender", unit, "ratio", "target"], out, {1}), ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=20_000, help="trivial items")
    parser.add_argument("--cpu-items", type=int, default=400, help="CPU items (~2 ms)")
    parser.add_argument("--sleeps", type=int, default=500, help="items of 10 ms")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (median)")
    parser.add_argument("--quick", action="store_true", help="smoke run")
    args = parser.parse_args()
    if args.quick:
        args.items, args.cpu_items, args.sleeps, args.repeat = 2_000, 40, 64, 1
    print(
        f"machine: nproc={os.cpu_count()} python={platform.python_version()} "
        f"trio={trio.__version__}; {args.repeat} rounds, medians of per-round ratios"
    )
    verdicts = Verdicts()
    trivial = list(range(args.items))
    lines: list[str] = []

    overhead: list[Row] = [
        ("asyncio.gather (a coroutine per item)", asyncio_gather),
        ("trio-nursery (a task per item)", trio_nursery),
        (f"pk.parallel_map task backend, {TASKS} at once", pk_tasks),
        (f"ThreadPoolExecutor({THREADS}).map", executor(noop)),
        (f"pk.parallel_map thread backend, {THREADS} threads", pk_threads(noop)),
    ]
    lines += section(
        f"Per-item overhead, no-op x {args.items:,} (async no-op for the async rows)",
        overhead,
        trivial,
        trivial,
        args.repeat,
        per_item=True,
        targets={2: [(0, 1.0), (1, 1.0)], 4: [(3, 1.0)]},
        verdicts=verdicts,
    )

    messages: list[Row] = [
        ("trio.open_memory_channel(0)", through_trio_channel(0)),
        ("pipekit.channels.channel(0)", through_pk_channel(0, False)),
        ("trio.open_memory_channel(100)", through_trio_channel(100)),
        ("pipekit.channels.channel(100)", through_pk_channel(100, False)),
        ("pk.select over channel(100) and an idle one", through_pk_channel(100, True)),
    ]
    lines += section(
        f"Channels, one message at a time between two tasks, x {args.items:,}",
        messages,
        trivial,
        trivial,
        args.repeat,
        per_item=True,
        targets={1: [(0, 1.3)], 3: [(2, 1.3)], 4: [(2, 2.0)]},
        verdicts=verdicts,
    )

    cpu = [BURN] * args.cpu_items
    expected_cpu = [burn(BURN)] * args.cpu_items
    processes: list[Row] = [
        (f"mp-spawn: multiprocessing.Pool({PROCESSES}).map [spawn]", mp_pool("spawn")),
        (f"mp-fork: multiprocessing.Pool({PROCESSES}).map [fork]", mp_pool("fork")),
        (f"mpire: mpire.WorkerPool({PROCESSES}).map [fork]", mpire_pool()),
        (f"pk.parallel_map process backend, {PROCESSES} workers", pk_processes),
    ]
    lines += section(
        f"Process backend, burn(~2 ms) x {args.cpu_items:,}, pool start-up included",
        processes,
        cpu,
        expected_cpu,
        args.repeat,
        per_item=False,
        targets={3: [(0, 1.0), (1, 1.0), (2, 1.0)]},
        verdicts=verdicts,
    )

    sleeps = [0.01] * args.sleeps
    slow: list[Row] = [
        (f"ThreadPoolExecutor({THREADS}).map", executor(nap)),
        (f"pk.parallel_map thread backend, {THREADS} threads", pk_threads(nap)),
    ]
    lines += section(
        f"Slow blocking items, sleep(10 ms) x {args.sleeps} on {THREADS} threads",
        slow,
        sleeps,
        sleeps,
        args.repeat,
        per_item=False,
        targets={1: [(0, 1.1)]},
        verdicts=verdicts,
    )
    print("\n".join(lines))
    print(f"targets: {verdicts.passed} met, {verdicts.missed} missed")
    return 0


if __name__ == "__main__":
    run_main(main)
