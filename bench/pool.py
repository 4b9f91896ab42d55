"""``pk.WorkerPool.map`` against ``multiprocessing.Pool.map``, two workers each.

Run from the checkout::

    python bench/pool.py              # 2,000 CPU items of ~1 ms, 200,000 trivial items
    python bench/pool.py --quick      # smoke run (a few seconds)
    python bench/pool.py --items 4000 --trivial 400000 --repeat 5

Two measurements, each the median over ``--repeat`` runs, pools started (and warmed up
with one small map) before the clock starts:

* **CPU-bound**: ``burn(n)``, a pure-Python loop calibrated to about 1 ms, over
  ``--items`` items. Serial time (a list comprehension in this process), then the
  speed-up over serial of ``WorkerPool(size=2).map`` and ``multiprocessing.Pool(2).map``
  (fork and spawn contexts, default chunksize). Target: pipekit >= 1.8x.
* **Per-item overhead**: ``noop(x) -> x`` over ``--trivial`` items; wall time per item
  in microseconds (everything is overhead here). ``multiprocessing.Pool.map`` with its
  default chunksize (``len / (4 * processes)``: huge pickled chunks) and, for reference,
  ``imap`` with ``chunksize=1`` (one message per item, over a tenth of the items).
  Targets: pipekit below ``multiprocessing.Pool.map``'s (the best context), and below
  ``multiprocessing.Pool``'s per-item dispatch (``imap``, ``chunksize=1``).

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
from pathlib import Path
from typing import Any

# Benchmark the checkout this file lives in, whatever else is installed.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

import pipekit as pk  # noqa: E402
from pipekit.pool import PoolStats  # noqa: E402

SIZE = 2
THIS = str(Path(__file__).resolve())
SPEEDUP_TARGET = 1.8

# Row names (the smoke test looks for them).
SERIAL = "serial (this process)"
PK_CPU = "pk.WorkerPool(2).map"
MP_CPU = "multiprocessing.Pool(2).map [{}]"
PK_NOOP = "pk.WorkerPool(2).map noop"
MP_NOOP = "multiprocessing.Pool(2).map noop [{}]"
MP_NOOP_EACH = "multiprocessing.Pool(2).imap noop chunksize=1 [fork]"


# --- the work (imported by the workers: keep the module import-safe) ---------------------


def burn(n: int) -> int:
    """About ``n`` loop iterations of pure-Python arithmetic."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


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


async def run_rows(
    n: int,
    work: list[int],
    expected: list[int],
    trivial: list[int],
    mp_pools: dict[str, Any],
    repeat: int,
) -> tuple[dict[str, float], dict[str, PoolStats]]:
    times: dict[str, list[float]] = {}
    each = trivial[: max(1, len(trivial) // 10)]
    async with (
        pk.WorkerPool(f"{THIS}:burn", size=SIZE) as cpu_pool,
        pk.WorkerPool(f"{THIS}:noop", size=SIZE) as noop_pool,
    ):
        await cpu_pool.map(work[:100])  # warm up
        await noop_pool.map(trivial[:1000])

        def serial() -> Measure:
            async def measure() -> float:
                return timed(SERIAL, lambda: [burn(x) for x in work], expected)

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

        cpu_rows: dict[str, Measure] = {
            SERIAL: serial(),
            PK_CPU: pipekit(cpu_pool, PK_CPU, work, expected),
        }
        for context, pool in mp_pools.items():
            name = MP_CPU.format(context)
            cpu_rows[name] = mp(pool, name, burn, work, expected)
        await measure_all(cpu_rows, repeat, times)

        noop_rows: dict[str, Measure] = {PK_NOOP: pipekit(noop_pool, PK_NOOP, trivial, trivial)}
        for context, pool in mp_pools.items():
            name = MP_NOOP.format(context)
            noop_rows[name] = mp(pool, name, noop, trivial, trivial)
        if "fork" in mp_pools:
            noop_rows[MP_NOOP_EACH] = mp(mp_pools["fork"], MP_NOOP_EACH, noop, each, each)
        await measure_all(noop_rows, repeat, times)
        chunks = {name: pool.stats for name, pool in (("CPU", cpu_pool), ("noop", noop_pool))}
    medians = {name: statistics.median(values) for name, values in times.items()}
    return medians, chunks


# --- report -------------------------------------------------------------------------------


def row(name: str, seconds: float, figure: str, target: str = "-", result: str = "") -> None:
    print(f"{name:<52}  {seconds:8.3f}  {figure:>13}  {target:<24}  {result}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="WorkerPool vs multiprocessing.Pool")
    parser.add_argument("--items", type=int, default=2000, help="CPU-bound items (~1 ms)")
    parser.add_argument("--trivial", type=int, default=200_000, help="trivial items")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small and once")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.trivial, args.repeat = 200, 20_000, 1
    methods = multiprocessing.get_all_start_methods()
    contexts: list[str] = [c for c in ("fork", "spawn") if c in methods]

    n = calibrate()
    work = [n] * args.items
    expected = [burn(n)] * args.items
    trivial = list(range(args.trivial))
    print(
        f"machine: nproc={os.cpu_count()} python={platform.python_version()} "
        f"trio={trio.__version__}; {SIZE} workers; burn({n}) ~ 1 ms; "
        f"{args.items:,} CPU items, {args.trivial:,} trivial items, median of {args.repeat}"
    )
    # The multiprocessing pools start before trio does: forking a process that runs
    # trio (and its threads) is not safe.
    with contextlib.ExitStack() as stack:
        mp_pools: dict[str, Any] = {}
        for context in contexts:
            pool = stack.enter_context(multiprocessing.get_context(context).Pool(SIZE))
            pool.map(noop, range(100))  # warm up (spawned workers are importing)
            mp_pools[context] = pool
        t, chunks = trio.run(run_rows, n, work, expected, trivial, mp_pools, args.repeat)

    print(f"{'name':<52}  {'seconds':>8}  {'figure':>13}  {'target':<24}  result")
    print(f"{'-' * 52}  {'-' * 8}  {'-' * 13}  {'-' * 24}  ------")
    serial = t[SERIAL]
    row(SERIAL, serial, "1.00x")
    speedup = serial / t[PK_CPU]
    met = "PASS" if speedup >= SPEEDUP_TARGET else "MISS"
    row(PK_CPU, t[PK_CPU], f"{speedup:.2f}x", f">= {SPEEDUP_TARGET}x over serial", met)
    for context in contexts:
        name = MP_CPU.format(context)
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
    settled = ", ".join(
        f"{name} {st.chunksize:,} items (max_inflight {st.max_inflight:,})"
        for name, st in chunks.items()
    )
    print(f"pk.WorkerPool chunks after the runs: {settled}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
