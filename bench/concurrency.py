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
* **Process backend, steady state** (pools started before timing, two workers): one
  ``map`` call on pools already started and warmed up by a first ``map`` of the same
  items: ``pk.WorkerPool(2).map`` (the pool ``parallel_map(backend="process")`` runs
  on, kept warm between calls) against ``multiprocessing.Pool(2)``
  (spawn and fork) and ``mpire.WorkerPool(2, keep_alive=True)``, over ``5 * --items``
  no-op items (per-item overhead, µs) and over ``--cpu-items`` items of ~2 ms of
  pure-Python CPU work. The pipekit pool's trio loop runs in a thread, started after
  the fork-based pools (forking a multi-threaded parent is unsafe), and each call hands
  it one ``map`` (``trio.from_thread``, well under 1 ms per call). Target: below each.
  Then the same no-op pools, ``--calls`` calls of ``map([x])`` one after the other:
  µs per call, the fixed cost of a call (one round trip to a worker and back).
  Each table is followed by the CPU µs per item of each row (this process, every thread,
  and the pool's workers, read from Linux's ``/proc/PID/task/*/schedstat``): what the
  work costs, however a loaded machine shares its cores out.
* **Process backend, start-up included** (the ``--cpu-items`` items): the whole call
  with a pool's start: ``pk.parallel_map(backend="process")``'s first call (its warm
  pools stopped by ``shutdown_pools()`` before each, untimed) and with ``reuse=False``
  (a pool started and stopped by the call) against ``multiprocessing.Pool(2)`` (``map``
  in a ``with`` block, spawn and fork) and ``mpire.WorkerPool(2)``. pipekit's workers
  are fresh interpreters (spawned), so against fork this mostly measures interpreter
  start-up.
* **Process backend, calls in a row** (``--in-a-row`` calls, 10, of ``map`` over 100
  no-op items, ms for all of them): ``pk.parallel_map(backend="process")`` from cold
  (the first call starts the workers, the others reuse them) and warm (every call on
  warm workers) against ``multiprocessing.Pool(2)`` with fork created per call and
  created once (before timing), and ``mpire.WorkerPool(2)`` per call. Targets: below
  the per-call pools (from cold and warm) and below the pool created once (warm).

  mpire rows need ``pip install mpire`` (else they say they were skipped).
* **Slow blocking items**: 500 x ``time.sleep(0.01)`` on 16 threads through
  ``parallel_map(backend="thread")`` against ``ThreadPoolExecutor(16).map``. Target:
  within 1.1x.

The load average is printed at the start and the end. Results are checked (a lost or
wrong result fails the run); the exit code is 0 even when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
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
from pipekit.concurrency import shutdown_pools  # noqa: E402

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


def pk_processes(fn: Callable[[Any], Any], *, reuse: bool) -> Callable[[list[Any]], list[Any]]:
    def run(items: list[Any]) -> list[Any]:
        results = pk.parallel_map(fn, items, backend="process", max_workers=PROCESSES, reuse=reuse)
        return [r.unwrap() for r in results]

    return run


def mp_pool(method: str, fn: Callable[[Any], Any] = burn) -> Callable[[list[Any]], list[Any]]:
    def run(items: list[Any]) -> list[Any]:
        with multiprocessing.get_context(method).Pool(PROCESSES) as pool:
            return pool.map(fn, items)

    return run


def mpire_pool(fn: Callable[[Any], Any] = burn) -> Callable[[list[Any]], list[Any]] | None:
    try:
        from mpire import WorkerPool  # type: ignore[attr-defined, import-not-found, unused-ignore]
    except ImportError:
        return None

    def run(items: list[Any]) -> list[Any]:
        with WorkerPool(n_jobs=PROCESSES) as pool:
            return list(pool.map(fn, items))

    return run


class Cold:
    """A contender whose every timed call starts from a cold state: ``setup`` runs
    before each call, untimed (``measure`` calls it)."""

    def __init__(self, run: Callable[[list[Any]], list[Any]], setup: Callable[[], Any]) -> None:
        self.run = run
        self.setup = setup

    def __call__(self, items: list[Any]) -> list[Any]:
        return self.run(items)


def calls(n: int, run: Callable[[list[Any]], list[Any]] | None) -> Any:
    """``run`` called ``n`` times in a row on the items (one result list per call)."""
    if run is None:
        return None

    def many(items: list[Any]) -> list[Any]:
        return [got for _ in range(n) for got in run(items)]

    setup = getattr(run, "setup", None)
    return many if setup is None else Cold(many, setup)


@contextmanager
def pool_once(method: str) -> Iterator[Callable[[list[Any]], list[Any]]]:
    """A ``multiprocessing.Pool`` created once (before timing) and its ``map(noop)``."""
    with multiprocessing.get_context(method).Pool(PROCESSES) as pool:
        pool.map(noop, [0, 1])
        yield lambda items: pool.map(noop, items)


# -- pools started once, reused by every round (steady state) ----------------------------

Mapper = Callable[[list[Any]], list[Any]]


class StartedPool:
    """A ``pk.WorkerPool(fn, size)`` kept open between calls: its trio loop runs in a
    thread and :meth:`map` hands it one ``map`` call (``trio.from_thread``)."""

    def __init__(self, fn: Callable[[Any], Any], size: int) -> None:
        self.fn = fn
        self.size = size
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._pool: pk.WorkerPool | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="pk-pool", daemon=True)

    def _run(self) -> None:
        try:
            trio.run(self._host)
        except BaseException as exc:  # reported by start()
            self._error = exc
        finally:
            self._ready.set()

    async def _host(self) -> None:
        async with pk.WorkerPool(self.fn, self.size) as pool:
            self._pool, self._stop = pool, trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError("pk.WorkerPool did not start") from self._error

    @property
    def pids(self) -> list[int]:
        assert self._pool is not None
        return self._pool.pids

    def map(self, items: list[Any]) -> list[Any]:
        assert self._pool is not None
        return trio.from_thread.run(self._pool.map, items, trio_token=self._token)

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()


def load() -> str:
    """The 1, 5 and 15 minute load averages (other work on the machine skews rows)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def one_by_one(run: Mapper) -> Mapper:
    """``run`` called once per item, with a list of that one item."""
    return lambda items: [run([x])[0] for x in items]


def cpu_seconds(pids: list[int]) -> float:
    """CPU time the processes ``pids`` (all their threads) have used so far, from
    Linux's ``/proc/PID/task/*/schedstat`` (nanoseconds); what cannot be read counts 0."""
    total = 0
    for pid in pids:
        with suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with suppress(OSError), open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
    return total / 1e9


class CpuMeter:
    """A pool's ``map`` that records, per call, the CPU seconds of this process (every
    thread: the pools' own threads included) and of the pool's workers: what the work
    costs, however a loaded machine shares its cores out."""

    def __init__(self, run: Mapper, pids: Callable[[], list[int]]) -> None:
        self.run = run
        self.pids = pids
        self.calls: list[tuple[float, float]] = []

    def __call__(self, items: list[Any]) -> list[Any]:
        pids = self.pids()
        parent, workers = time.process_time(), cpu_seconds(pids)
        out = self.run(items)
        self.calls.append((time.process_time() - parent, cpu_seconds(pids) - workers))
        return out


@contextmanager
def started_pools(fn: Callable[[Any], Any], warm: list[Any]) -> Iterator[list[CpuMeter | None]]:
    """The ``map`` of each process pool of the steady-state rows (mp-spawn, mp-fork,
    mpire or None, pk), every pool started and warmed up by one ``map`` of ``warm``.
    The fork-based pools fork before the pipekit pool's thread exists. (The workers'
    pids of multiprocessing and mpire are read from their private attributes.)"""
    with ExitStack() as stack:
        maps: list[CpuMeter | None] = []
        for method in ("spawn", "fork"):
            pool = stack.enter_context(multiprocessing.get_context(method).Pool(PROCESSES))
            workers = [p.pid for p in getattr(pool, "_pool", [])]
            maps.append(CpuMeter(functools.partial(pool.map, fn), functools.partial(list, workers)))
        try:
            from mpire import WorkerPool  # type: ignore[attr-defined, import-not-found, unused-ignore]
        except ImportError:
            maps.append(None)
        else:
            mpire = stack.enter_context(WorkerPool(n_jobs=PROCESSES, keep_alive=True))
            maps.append(
                CpuMeter(
                    lambda items: list(mpire.map(fn, items)),
                    lambda: [w.pid for w in getattr(mpire, "_workers", []) if w is not None],
                )
            )
        for run in maps:
            if run is not None:
                run.run(warm)  # mpire forks its workers here
        host = StartedPool(fn, PROCESSES)
        stack.callback(host.stop)
        host.start()
        host.map(warm)
        maps.append(CpuMeter(host.map, lambda: host.pids))
        yield maps


def cpu_table(names: list[str], meters: list[CpuMeter | None], items: int) -> list[str]:
    """CPU µs per item of each steady-state row (medians of the measured rounds)."""
    out: list[list[str]] = []
    for name, meter in zip(names, meters, strict=True):
        if meter is None:
            out.append([name, "skipped", "", ""])
            continue
        calls = meter.calls[1:]  # the first round is measure()'s warm-up
        parent = statistics.median(c[0] for c in calls) / items * 1e6
        workers = statistics.median(c[1] for c in calls) / items * 1e6
        total = statistics.median(c[0] + c[1] for c in calls) / items * 1e6
        out.append([name, f"{parent:,.2f}", f"{workers:,.2f}", f"{total:,.2f}"])
    headers = ["CPU per item (µs)", "this process", "workers", "total"]
    return [*render_table(headers, out, {1, 2, 3}), ""]


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
            setup = getattr(fn, "setup", None)
            if setup is not None:
                setup()  # untimed: a cold start for the call timed next
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
        shown = f"{value:,.2f}" if value < 10 else f"{value:,.1f}"
        if k not in targets:
            out.append([name, shown, "", "baseline"])
            continue
        for n, (base, limit) in enumerate(targets[k]):
            if rows[base][1] is None:
                continue
            ratio = paired_ratio(times[k], times[base])
            label = rows[base][0].split(" ")[0].rstrip(":")
            cell = f"{ratio_cell(ratio, repeat, percent=False)} of {label}"
            verdict = f"{verdicts.judge(ratio[0] <= limit)} (<= {limit:g}x)"
            out.append([name if n == 0 else "", shown if n == 0 else "", cell, verdict])
    return [title, *render_table(["contender", unit, "ratio", "target"], out, {1}), ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=20_000, help="trivial items")
    parser.add_argument("--cpu-items", type=int, default=400, help="CPU items (~2 ms)")
    parser.add_argument("--sleeps", type=int, default=500, help="items of 10 ms")
    parser.add_argument("--calls", type=int, default=300, help="one-item map calls")
    parser.add_argument("--in-a-row", type=int, default=10, help="calls of 100 items")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (median)")
    parser.add_argument("--quick", action="store_true", help="smoke run")
    args = parser.parse_args()
    if args.quick:
        args.items, args.cpu_items, args.sleeps, args.repeat = 2_000, 40, 64, 1
        args.calls = 20
    print(
        f"machine: nproc={os.cpu_count()} python={platform.python_version()} "
        f"trio={trio.__version__}; {args.repeat} rounds, medians of per-round ratios; "
        f"load average {load()}"
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
    many = list(range(5 * args.items))
    few = list(range(args.calls))
    started = [
        f"mp-spawn: multiprocessing.Pool({PROCESSES}).map [spawn], started",
        f"mp-fork: multiprocessing.Pool({PROCESSES}).map [fork], started",
        f"mpire: mpire.WorkerPool({PROCESSES}, keep_alive).map [fork], started",
        f"pk.WorkerPool({PROCESSES}).map (the process backend's pool), started",
    ]
    for fn, work, expected, per_item, what in (
        (noop, many, many, True, f"no-op x {len(many):,}"),
        (burn, cpu, expected_cpu, False, f"burn(~2 ms) x {args.cpu_items:,}"),
    ):
        with started_pools(fn, work) as maps:
            lines += section(
                f"Process backend, steady state (pools started and warm), {what}",
                list(zip(started, maps, strict=True)),
                work,
                expected,
                args.repeat,
                per_item=per_item,
                targets={3: [(0, 1.0), (1, 1.0), (2, 1.0)]},
                verdicts=verdicts,
            )
            if os.path.isdir("/proc/self/task"):
                lines[-1:] = cpu_table(started, maps, len(work))
            if fn is noop:  # the same pools, one item per call: a call's fixed cost
                one = [None if m is None else CpuMeter(one_by_one(m.run), m.pids) for m in maps]
                lines += section(
                    f"Process backend, steady state, map([x]) x {len(few):,}: one round "
                    "trip per call",
                    list(zip(started, one, strict=True)),
                    few,
                    few,
                    args.repeat,
                    per_item=True,
                    targets={3: [(0, 1.0), (1, 1.0), (2, 1.0)]},
                    verdicts=verdicts,
                )
                if os.path.isdir("/proc/self/task"):
                    lines[-1:] = cpu_table(started, one, len(few))

    processes: list[Row] = [
        (f"mp-spawn: multiprocessing.Pool({PROCESSES}).map [spawn]", mp_pool("spawn")),
        (f"mp-fork: multiprocessing.Pool({PROCESSES}).map [fork]", mp_pool("fork")),
        (f"mpire: mpire.WorkerPool({PROCESSES}).map [fork]", mpire_pool()),
        (
            f"pk.parallel_map process backend, {PROCESSES} workers, first call",
            Cold(pk_processes(burn, reuse=True), shutdown_pools),
        ),
        (
            f"pk.parallel_map process backend, {PROCESSES} workers, reuse=False",
            pk_processes(burn, reuse=False),
        ),
    ]
    lines += section(
        f"Process backend, burn(~2 ms) x {args.cpu_items:,}, pool start-up included "
        "(a pool per call; pipekit's first call, its warm pools stopped before it)",
        processes,
        cpu,
        expected_cpu,
        args.repeat,
        per_item=False,
        targets={3: [(0, 1.0), (1, 1.0), (2, 1.0)], 4: [(0, 1.0), (1, 1.0), (2, 1.0)]},
        verdicts=verdicts,
    )

    small = list(range(100))
    with pool_once("fork") as fork_once:
        in_a_row: list[Row] = [
            (f"mp-fork: multiprocessing.Pool({PROCESSES}) [fork] per call", mp_pool("fork", noop)),
            (f"mp-once: multiprocessing.Pool({PROCESSES}) [fork] created once", fork_once),
            (f"mpire: mpire.WorkerPool({PROCESSES}) [fork] per call", mpire_pool(noop)),
            (
                f"pk.parallel_map process backend, {PROCESSES} workers, from cold",
                Cold(pk_processes(noop, reuse=True), shutdown_pools),
            ),
            (
                f"pk.parallel_map process backend, {PROCESSES} workers, warm",
                pk_processes(noop, reuse=True),
            ),
        ]
        lines += section(
            f"Process backend, {args.in_a_row} calls in a row of map(no-op) x 100 items "
            "(from cold: the first of them starts the workers)",
            [(name, calls(args.in_a_row, run)) for name, run in in_a_row],
            small,
            small * args.in_a_row,
            args.repeat,
            per_item=False,
            targets={
                3: [(0, 1.0), (2, 1.0)],
                4: [(0, 1.0), (1, 1.0), (2, 1.0)],
            },
            verdicts=verdicts,
        )
    shutdown_pools()

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
    print(f"load average at the end: {load()}")
    print(f"targets: {verdicts.passed} met, {verdicts.missed} missed")
    return 0


if __name__ == "__main__":
    run_main(main)
