"""``pk.thread`` stages against ``concurrent.futures.ThreadPoolExecutor.map``.

Run from the checkout::

    python bench/threads.py            # 500 x 10 ms sleeps on 16 threads, 200,000 cheap items
    python bench/threads.py --quick    # smoke run (a few seconds)

Three measurements, each the median over ``--repeat`` interleaved rounds (round 1 of
every row, then round 2, ...), ratios paired with the baseline of the same round:

* **Blocking items**: ``time.sleep(0.01)`` over ``--slow`` items on 16 threads, through
  ``pk.source(items) | pk.thread(fn, workers=16) | pk.collect()`` and through
  ``ThreadPoolExecutor(16).map``. Target: pk.thread within 1.1x.
* **A failure**: the same stage where item 100 raises; the seconds from that raise to
  the caller's ``except``, for both. Target: pk.thread within 20 ms of
  ``ThreadPoolExecutor`` (it finishes the chunks already started, each ~2 ms of work).
* **Cheap items**: ``x + 1`` over ``--cheap`` items on 4 threads; wall time per item in
  microseconds, against ``pk.map`` on the event loop (no threads) and
  ``ThreadPoolExecutor(4).map`` (one future per item). No target: for the record (the
  GIL serialises these calls whatever runs them).

The results are checked (a lost or reordered result fails the run). Exit code 0 even
when a target is missed.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import trio  # noqa: E402
from _common import paired_ratio, ratio_cell, render_table, run_main  # noqa: E402

import pipekit as pk  # noqa: E402

THREADS = 16
CHEAP_THREADS = 4
SLOW_SECONDS = 0.01
FAIL_AT = 100
RATIO_TARGET = 1.1
FAILURE_SLACK = 0.02

PK_SLOW = f"sleep 10 ms, {THREADS} threads: pk.thread"
TPE_SLOW = f"sleep 10 ms, {THREADS} threads: ThreadPoolExecutor.map"
PK_FAIL = "failure to caller: pk.thread"
TPE_FAIL = "failure to caller: ThreadPoolExecutor.map"
PK_CHEAP = f"cheap items, {CHEAP_THREADS} threads: pk.thread"
LOOP_CHEAP = "cheap items: pk.map (event loop)"
TPE_CHEAP = f"cheap items, {CHEAP_THREADS} threads: ThreadPoolExecutor.map"


def slow(x: int) -> int:
    time.sleep(SLOW_SECONDS)
    return x


class Boom(Exception):
    """Raised by :func:`failing`; carries when."""

    def __init__(self, at: float) -> None:
        super().__init__("boom")
        self.at = at


def failing(x: int) -> int:
    if x == FAIL_AT:
        raise Boom(time.perf_counter())
    time.sleep(SLOW_SECONDS)
    return x


def cheap(x: int) -> int:
    return x + 1


def timed(run: Callable[[], list[int]], expected: list[int], name: str) -> float:
    start = time.perf_counter()
    got = run()
    elapsed = time.perf_counter() - start
    if got != expected:
        raise RuntimeError(f"{name}: wrong results")
    return elapsed


def pk_map(fn: Callable[[int], int], items: list[int], workers: int) -> list[int]:
    stage = pk.thread(fn, workers=workers) if workers else pk.map(fn)
    result: list[int] = (pk.source(items) | stage | pk.collect()).run()
    return result


def tpe_map(fn: Callable[[int], int], items: list[int], workers: int) -> list[int]:
    with cf.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, items))


def failure_delay(run: Callable[[], object]) -> float:
    """Seconds from :func:`failing` raising to the caller's ``except``."""
    try:
        run()
    except BaseException as exc:
        seen = time.perf_counter()
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, Boom):
            cause = cause.__cause__
        if cause is None:
            raise
        return seen - cause.at
    raise RuntimeError("the failing item did not fail")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pk.thread vs ThreadPoolExecutor")
    parser.add_argument("--slow", type=int, default=500, help="blocking items (10 ms)")
    parser.add_argument("--cheap", type=int, default=200_000, help="cheap items")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (median)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small and once")
    args = parser.parse_args(argv)
    if args.quick:
        args.slow, args.cheap, args.repeat = 200, 20_000, 1
    slow_items = list(range(args.slow))
    cheap_items = list(range(args.cheap))
    cheap_out = [x + 1 for x in cheap_items]
    fail_items = list(range(max(args.slow, 2 * FAIL_AT)))

    rows: dict[str, Callable[[], float]] = {
        PK_SLOW: lambda: timed(lambda: pk_map(slow, slow_items, THREADS), slow_items, PK_SLOW),
        TPE_SLOW: lambda: timed(lambda: tpe_map(slow, slow_items, THREADS), slow_items, TPE_SLOW),
        PK_FAIL: lambda: failure_delay(lambda: pk_map(failing, fail_items, THREADS)),
        TPE_FAIL: lambda: failure_delay(lambda: tpe_map(failing, fail_items, THREADS)),
        PK_CHEAP: lambda: timed(
            lambda: pk_map(cheap, cheap_items, CHEAP_THREADS), cheap_out, PK_CHEAP
        ),
        LOOP_CHEAP: lambda: timed(lambda: pk_map(cheap, cheap_items, 0), cheap_out, LOOP_CHEAP),
        TPE_CHEAP: lambda: timed(
            lambda: tpe_map(cheap, cheap_items, CHEAP_THREADS), cheap_out, TPE_CHEAP
        ),
    }
    print(
        f"machine: nproc={os.cpu_count()} python={platform.python_version()} "
        f"trio={trio.__version__}; {args.slow} blocking items, {args.cheap:,} cheap items, "
        f"median of {args.repeat} interleaved rounds"
    )
    times: dict[str, list[float]] = {name: [] for name in rows}
    for round_ in range(args.repeat):
        for name, measure in rows.items():
            times[name].append(measure())
            print(f"round {round_ + 1}: {name}: {times[name][-1]:.4f} s", file=sys.stderr)

    def med(name: str) -> float:
        return statistics.median(times[name])

    table: list[list[str]] = []
    ratio = paired_ratio(times[PK_SLOW], times[TPE_SLOW])
    met = "PASS" if ratio[0] <= RATIO_TARGET else "MISS"
    cell = ratio_cell(ratio, args.repeat, percent=False)
    table.append([PK_SLOW, f"{med(PK_SLOW):.3f} s", cell, f"<= {RATIO_TARGET}x", met])
    table.append([TPE_SLOW, f"{med(TPE_SLOW):.3f} s", "1.00x", "", ""])
    late = med(PK_FAIL) - med(TPE_FAIL)
    met = "PASS" if late <= FAILURE_SLACK else "MISS"
    table.append(
        [PK_FAIL, f"{med(PK_FAIL) * 1e3:.1f} ms", f"{late * 1e3:+.1f} ms", "<= +20 ms", met]
    )
    table.append([TPE_FAIL, f"{med(TPE_FAIL) * 1e3:.1f} ms", "", "", ""])
    for name in (PK_CHEAP, LOOP_CHEAP, TPE_CHEAP):
        per = med(name) / args.cheap * 1e6
        table.append([name, f"{per:.2f} us/item", "", "", ""])
    print("\n".join(render_table(["name", "time", "ratio", "target", "result"], table, {1, 2})))
    return 0


if __name__ == "__main__":
    run_main(main)
