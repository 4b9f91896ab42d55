"""``pk.WorkerPool.map`` against ``multiprocessing.Pool.map``, two workers each.

Run from the checkout::

    python bench/pool.py              # 2,000 CPU items of ~1 ms, 200,000 trivial items
    python bench/pool.py --quick      # smoke run (a few seconds)
    python bench/pool.py --items 4000 --trivial 400000 --repeat 5

Two measurements, each the median over ``--repeat`` runs, pools started (and warmed up
with one small map) before the clock starts:

* **CPU-bound**, two pure-Python workloads of about 1 ms per item, over ``--items``
  items each: ``burn(n)``, an integer-arithmetic loop that allocates an int object or
  two per iteration, and ``calls(k)``, a naive recursive Fibonacci (call-heavy, almost
  no allocation). Serial time (a list comprehension in this process), then the
  speed-up over serial of ``WorkerPool(size=2).map`` and ``multiprocessing.Pool(2).map``
  (fork and spawn contexts, default chunksize). Target: pipekit >= 1.8x on each. Two
  shapes because how fast a process runs allocation-heavy code depends on the state of
  its small-object allocator (see ``bench/README.md``), which differs between a fresh
  ``spawn`` child, a forked one and a pipekit worker.
* **Per-item overhead**: ``noop(x) -> x`` over ``--trivial`` items; wall time per item
  in microseconds (everything is overhead here). ``multiprocessing.Pool.map`` with its
  default chunksize (``len / (4 * processes)``: huge pickled chunks) and, for reference,
  ``imap`` with ``chunksize=1`` (one message per item, over a tenth of the items).
  Targets: pipekit below ``multiprocessing.Pool.map``'s (the best context), and below
  ``multiprocessing.Pool``'s per-item dispatch (``imap``, ``chunksize=1``).

* **Start-up**: from creating the pool to the first results (``map`` of two items of
  the builtin ``abs``: each worker has answered), over ``--startups`` interleaved
  rounds, median. ``pk.WorkerPool(2)`` in this process (pipekit and trio already
  imported, as in a program that uses them); ``multiprocessing.Pool(2)`` with the
  ``spawn`` and ``fork`` contexts in a fresh ``python -c`` child that times itself (so
  that its workers do not re-import this file, which imports pipekit). Target:
  pipekit within 2x of ``spawn``.

``pk.WorkerPool`` runs with its defaults (adaptive chunks); the line after the table
gives the chunk size and in-flight bound each pipekit pool had settled on.

The result lists are checked (a lost or wrong result fails the run). Exit code 0 even
when a target is missed. Needs Linux (or any system with the ``fork`` start method) and
two idle cores for meaningful numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Benchmark the checkout this file lives in, whatever else is installed.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

import pipekit as pk  # noqa: E402
from pipekit.workers import PoolStats  # noqa: E402

SIZE = 2
THIS = str(Path(__file__).resolve())
SPEEDUP_TARGET = 1.8

# Row names (the smoke test looks for them).
SERIAL = "serial (this process)"
PK_CPU = "pk.WorkerPool(2).map"
MP_CPU = "multiprocessing.Pool(2).map [{}]"
CALLS = " calls"
"""Suffix of the ``calls`` workload's rows (``burn``'s rows have none)."""
PK_NOOP = "pk.WorkerPool(2).map noop"
MP_NOOP = "multiprocessing.Pool(2).map noop [{}]"
MP_NOOP_EACH = "multiprocessing.Pool(2).imap noop chunksize=1 [fork]"
PK_START = "start-up: pk.WorkerPool(2)"
MP_START = "start-up: multiprocessing.Pool(2) [{}]"
START_TARGET = 2.0

MP_STARTUP = (
    "import multiprocessing, sys, time\n"
    "if __name__ == '__main__':\n"
    "    start = time.perf_counter()\n"
    "    with multiprocessing.get_context(sys.argv[1]).Pool(2) as pool:\n"
    "        assert pool.map(abs, [-1, -2]) == [1, 2]\n"
    "        print(time.perf_counter() - start)\n"
)
"""A fresh child that times a ``multiprocessing.Pool``'s start-up (its own clock)."""


# --- the work (imported by the workers: keep the module import-safe) ---------------------


def burn(n: int) -> int:
    """About ``n`` loop iterations of pure-Python arithmetic."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def calls(k: int) -> int:
    """Fibonacci number ``k``, naively: about 1.6 ** k Python calls."""
    return k if k < 2 else calls(k - 1) + calls(k - 2)


def noop(x: int) -> int:
    return x


def calibrate(seconds: float = 0.001) -> int:
    """The ``n`` for which ``burn(n)`` takes about ``seconds`` here."""
    n = 1000
    while True:
        start = time.perf_counter()
        burn(n)
        elapsed = time.perf_counter() - start
        if elapsed > 0.02:
            return max(1, int(n * seconds / elapsed))
        n *= 2


def calibrate_calls(seconds: float = 0.001) -> int:
    """The ``k`` for which ``calls(k)`` takes closest to ``seconds`` here (each step of
    ``k`` is a factor of about 1.6)."""
    k = 10
    while True:
        start = time.perf_counter()
        for _ in range(10):
            calls(k)
        elapsed = (time.perf_counter() - start) / 10
        if elapsed * 1.3 >= seconds or k >= 40:
            return k
        k += 1


# --- measurements -------------------------------------------------------------------------

Measure = Callable[[], Awaitable[float]]


def timed(name: str, run: Callable[[], list[int]], expected: list[int]) -> float:
    start = time.perf_counter()
    results = run()
    elapsed = time.perf_counter() - start
    if results != expected:
        raise RuntimeError(f"{name}: wrong results")
    return elapsed


async def atimed(name: str, run: Callable[[], Awaitable[list[int]]], expected: list[int]) -> float:
    start = time.perf_counter()
    results = await run()
    elapsed = time.perf_counter() - start
    if results != expected:
        raise RuntimeError(f"{name}: wrong results")
    return elapsed


async def measure_all(rows: dict[str, Measure], repeat: int, times: dict[str, list[float]]) -> None:
    """Round-robin: round 1 of every row, then round 2, ... (a slow moment of the
    machine hits every row rather than all runs of one)."""
    for round_ in range(repeat):
        for name, measure in rows.items():
            elapsed = await measure()
            times.setdefault(name, []).append(elapsed)
            print(f"round {round_ + 1}: {name}: {elapsed:.3f} s", file=sys.stderr)


@dataclass
class Workload:
    """One CPU-bound function over ``items``; its rows' names end with ``suffix``."""

    fn: Callable[[int], int]
    items: list[int]
    expected: list[int]
    suffix: str


async def run_rows(
    workloads: list[Workload],
    trivial: list[int],
    mp_pools: dict[str, Any],
    repeat: int,
) -> tuple[dict[str, float], dict[str, PoolStats]]:
    times: dict[str, list[float]] = {}
    each = trivial[: max(1, len(trivial) // 10)]
    async with contextlib.AsyncExitStack() as stack:
        cpu_pools = []
        for load in workloads:
            pool = await stack.enter_async_context(
                pk.WorkerPool(f"{THIS}:{load.fn.__name__}", size=SIZE)
            )
            await pool.map(load.items[:100])  # warm up
            cpu_pools.append(pool)
        noop_pool = await stack.enter_async_context(pk.WorkerPool(f"{THIS}:noop", size=SIZE))
        await noop_pool.map(trivial[:1000])

        def serial(load: Workload) -> Measure:
            fn, items = load.fn, load.items

            async def measure() -> float:
                return timed(SERIAL, lambda: [fn(x) for x in items], load.expected)

            return measure

        def pipekit(pool: pk.WorkerPool, name: str, items: list[int], out: list[int]) -> Measure:
            async def measure() -> float:
                return await atimed(name, lambda: pool.map(items), out)

            return measure

        def mp(
            pool: Any, name: str, fn: Callable[[int], int], items: list[int], out: list[int]
        ) -> Measure:
            async def measure() -> float:
                if name == MP_NOOP_EACH:
                    return timed(name, lambda: list(pool.imap(fn, items, chunksize=1)), out)
                return timed(name, lambda: pool.map(fn, items), out)

            return measure

        cpu_rows: dict[str, Measure] = {}
        for load, cpu_pool in zip(workloads, cpu_pools, strict=True):
            cpu_rows[cpu_row(SERIAL, load.suffix)] = serial(load)
            name = cpu_row(PK_CPU, load.suffix)
            cpu_rows[name] = pipekit(cpu_pool, name, load.items, load.expected)
            for context, pool in mp_pools.items():
                name = cpu_row(MP_CPU.format(context), load.suffix)
                cpu_rows[name] = mp(pool, name, load.fn, load.items, load.expected)
        await measure_all(cpu_rows, repeat, times)

        noop_rows: dict[str, Measure] = {PK_NOOP: pipekit(noop_pool, PK_NOOP, trivial, trivial)}
        for context, pool in mp_pools.items():
            name = MP_NOOP.format(context)
            noop_rows[name] = mp(pool, name, noop, trivial, trivial)
        if "fork" in mp_pools:
            noop_rows[MP_NOOP_EACH] = mp(mp_pools["fork"], MP_NOOP_EACH, noop, each, each)
        await measure_all(noop_rows, repeat, times)
        chunks = {
            f"CPU{load.suffix}": pool.stats for load, pool in zip(workloads, cpu_pools, strict=True)
        }
        chunks["noop"] = noop_pool.stats
    medians = {name: statistics.median(values) for name, values in times.items()}
    return medians, chunks


def cpu_row(name: str, suffix: str) -> str:
    """``name`` with a workload suffix, before a trailing ``[context]`` if any."""
    if suffix and name.endswith("]"):
        head, _, context = name.rpartition(" [")
        return f"{head}{suffix} [{context}"
    if suffix and name == SERIAL:
        return f"serial{suffix} (this process)"
    return name + suffix


async def pk_startup() -> float:
    start = time.perf_counter()
    async with pk.WorkerPool(abs, size=SIZE) as pool:
        if await pool.map([-1, -2]) != [1, 2]:
            raise RuntimeError(f"{PK_START}: wrong results")
        return time.perf_counter() - start


def mp_startup(context: str) -> float:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", MP_STARTUP, context],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return float(done.stdout)


def startups(rounds: int, contexts: list[str]) -> dict[str, list[float]]:
    """Interleaved rounds of every start-up row."""
    times: dict[str, list[float]] = {}
    for round_ in range(rounds):
        times.setdefault(PK_START, []).append(trio.run(pk_startup))
        for context in contexts:
            times.setdefault(MP_START.format(context), []).append(mp_startup(context))
        for name, values in times.items():
            print(f"round {round_ + 1}: {name}: {values[-1]:.3f} s", file=sys.stderr)
    return times


# --- report -------------------------------------------------------------------------------


def row(name: str, seconds: float, figure: str, target: str = "-", result: str = "") -> None:
    print(f"{name:<52}  {seconds:8.3f}  {figure:>13}  {target:<24}  {result}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="WorkerPool vs multiprocessing.Pool")
    parser.add_argument("--items", type=int, default=2000, help="CPU-bound items (~1 ms)")
    parser.add_argument("--trivial", type=int, default=200_000, help="trivial items")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--startups", type=int, default=7, help="start-up rounds (median)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small and once")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.trivial, args.repeat, args.startups = 200, 20_000, 1, 1
    methods = multiprocessing.get_all_start_methods()
    contexts: list[str] = [c for c in ("fork", "spawn") if c in methods]

    n = calibrate()
    k = calibrate_calls()
    workloads = [
        Workload(burn, [n] * args.items, [burn(n)] * args.items, ""),
        Workload(calls, [k] * args.items, [calls(k)] * args.items, CALLS),
    ]
    trivial = list(range(args.trivial))
    print(
        f"machine: nproc={os.cpu_count()} python={platform.python_version()} "
        f"trio={trio.__version__}; {SIZE} workers; burn({n}) ~ 1 ms, calls({k}) ~ 1 ms; "
        f"{args.items:,} CPU items each, {args.trivial:,} trivial items, "
        f"median of {args.repeat}"
    )
    # The multiprocessing pools start before trio does: forking a process that runs
    # trio (and its threads) is not safe.
    with contextlib.ExitStack() as stack:
        mp_pools: dict[str, Any] = {}
        for context in contexts:
            pool = stack.enter_context(multiprocessing.get_context(context).Pool(SIZE))
            pool.map(noop, range(100))  # warm up (spawned workers are importing)
            mp_pools[context] = pool
        t, chunks = trio.run(run_rows, workloads, trivial, mp_pools, args.repeat)

    start_times = startups(args.startups, contexts)

    print(f"{'name':<52}  {'seconds':>8}  {'figure':>13}  {'target':<24}  result")
    print(f"{'-' * 52}  {'-' * 8}  {'-' * 13}  {'-' * 24}  ------")
    for load in workloads:
        serial_name = cpu_row(SERIAL, load.suffix)
        serial = t[serial_name]
        row(serial_name, serial, "1.00x")
        name = cpu_row(PK_CPU, load.suffix)
        speedup = serial / t[name]
        met = "PASS" if speedup >= SPEEDUP_TARGET else "MISS"
        row(name, t[name], f"{speedup:.2f}x", f">= {SPEEDUP_TARGET}x over serial", met)
        for context in contexts:
            name = cpu_row(MP_CPU.format(context), load.suffix)
            row(name, t[name], f"{serial / t[name]:.2f}x")

    def per_item(name: str, count: int) -> float:
        return t[name] / count * 1e6

    pk_noop = per_item(PK_NOOP, args.trivial)
    best = min(per_item(MP_NOOP.format(c), args.trivial) for c in contexts)
    met = "PASS" if pk_noop < best else "MISS"
    row(PK_NOOP, t[PK_NOOP], f"{pk_noop:.2f} us/item", "< mp.Pool.map (chunked)", met)
    if MP_NOOP_EACH in t:
        each = per_item(MP_NOOP_EACH, max(1, args.trivial // 10))
        met = "PASS" if pk_noop < each else "MISS"
        row("", t[PK_NOOP], "", "< mp.Pool per item", met)
    for context in contexts:
        name = MP_NOOP.format(context)
        row(name, t[name], f"{per_item(name, args.trivial):.2f} us/item")
    if MP_NOOP_EACH in t:
        row(MP_NOOP_EACH, t[MP_NOOP_EACH], f"{each:.2f} us/item")
    if "spawn" in contexts:
        base = start_times[MP_START.format("spawn")]
        ratio = statistics.median(
            mine / theirs for mine, theirs in zip(start_times[PK_START], base, strict=True)
        )
        met = "PASS" if ratio <= START_TARGET else "MISS"
        pk_start = statistics.median(start_times[PK_START])
        row(PK_START, pk_start, f"{ratio:.2f}x", f"<= {START_TARGET}x mp.Pool [spawn]", met)
    for context in contexts:
        name = MP_START.format(context)
        row(name, statistics.median(start_times[name]), "")
    settled = ", ".join(
        f"{name} {st.chunksize:,} items (max_inflight {st.max_inflight:,})"
        for name, st in chunks.items()
    )
    print(f"pk.WorkerPool chunks after the runs: {settled}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
