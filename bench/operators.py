"""What the operators cost per message, as a ratio to ``pk.map`` in the same run.

Run from the checkout::

    python bench/operators.py                  # 1,000,000 messages (200,000 one at a time), 5 runs
    python bench/operators.py --quick          # smoke run: 20,000 messages, 1 run
    python bench/operators.py --messages 500000 --repeat 9
    python bench/operators.py --stat min       # each row's fastest run, not its median

Every row runs with ``pipeline.run()`` (the kernel and trio start-up included) and
checks the output (count, first and last message), so a lost or duplicated message fails
the run instead of producing a fast number. Two sources: *batched* (a ``range``, sent
in lists of 256, as any plain iterable is) and *one at a time* (an async generator: one
``send`` per message, so the stages see small batches).

Every row runs ``source | <stage> | tally``, where ``tally`` counts what arrives a batch
at a time. A row's time is the median of its runs, the rows interleaved round by round
(``--stat min`` takes the fastest run instead, as ``timeit`` does). A stage's cost is
its row's time minus the time of ``source | tally`` (the floor), in ns per message and
as a ratio to the cost of ``pk.map(identity)``. The target: no operator costs more per
message than ``map`` (up to 5%, the resolution: the ``name=`` row runs map's very code).
Where an operator runs a function or builds an object per message, it is compared with a
``map`` doing the same (``vs map`` is then the ratio to the row above it):
``flat_map(x -> (x,))`` with ``map(x -> (x,))``, and ``window(2)``, which builds a 2-item list per
message, with ``map(x -> [x, x])``. ``unbatch`` is measured after a ``batch(100)`` (its
cost is its row minus the ``batch(100)`` row).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import render_table, run_main

# Benchmark the checkout this file lives in, whatever else is installed.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

import pipekit as pk  # noqa: E402
from pipekit.kernel import Module, Pipe  # noqa: E402
from pipekit.pipeline import StageSettings  # noqa: E402


def identity(x: Any) -> Any:
    return x


def always(x: Any) -> bool:
    return True


def single(x: Any) -> tuple[Any]:
    return (x,)


def pair(x: Any) -> list[Any]:
    return [x, x]


class _Tally:
    """What came out of a row: how many messages, the first and the last."""

    def __init__(self) -> None:
        self.count = 0
        self.first: Any = None
        self.last: Any = None


class _TallyModule:
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ()

    def __init__(self, tally: _Tally) -> None:
        self.tally = tally

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        tally = self.tally
        async for got in ports["inp"].batches():
            if not tally.count:
                tally.first = got[0]
            tally.count += len(got)
            tally.last = got[-1]


class Tally(pk.Stage):
    """A sink that counts, a batch at a time (``collect`` would keep a million
    objects alive and make the garbage collector, not the stage, the cost)."""

    role = "sink"

    def __init__(self) -> None:
        super().__init__("tally", StageSettings())
        self.tally = _Tally()

    def module(self, *, first: bool = False) -> Module:
        return _TallyModule(self.tally)


Check = Callable[[_Tally, int], bool]


def same(t: _Tally, n: int) -> bool:
    return (t.count, t.first, t.last) == (n, 0, n - 1)


def one_fewer(t: _Tally, n: int) -> bool:
    return (t.count, t.first, t.last) == (n - 1, 1, n - 1)


def lists_of(size: int) -> Check:
    def check(t: _Tally, n: int) -> bool:
        return t.count == -(-n // size) and t.first[0] == 0 and t.last[-1] == n - 1

    return check


def same_tuples(t: _Tally, n: int) -> bool:
    return (t.count, t.first, t.last) == (n, (0,), (n - 1,))


def pairs(t: _Tally, n: int) -> bool:
    return (t.count, t.first, t.last) == (n, [0, 0], [n - 1, n - 1])


def windows_of_two(t: _Tally, n: int) -> bool:
    return (t.count, t.first, t.last) == (n - 1, [0, 1], [n - 2, n - 1])


def timed_lists(t: _Tally, n: int) -> bool:
    return t.count >= 1 and t.first[0] == 0 and t.last[-1] == n - 1


@dataclass(frozen=True)
class Row:
    name: str
    stages: Callable[[int], Sequence[pk.Stage]]
    check: Check
    base: str = "source | tally (floor)"
    """The row whose time is subtracted to get this row's stage cost."""
    versus: str = "map (baseline)"
    """The map row this row's cost is compared with (one running the same function)."""


FLOOR = "source | tally (floor)"
MAP = "map (baseline)"

ROWS = [
    Row(FLOOR, lambda n: [], same, base=""),
    Row(MAP, lambda n: [pk.map(identity)], same),
    Row("map, name=", lambda n: [pk.map(identity, name="step")], same),
    Row("map, on_error='skip'", lambda n: [pk.map(identity, on_error="skip")], same),
    Row("filter", lambda n: [pk.filter(always)], same),
    Row("map(x -> (x,))", lambda n: [pk.map(single)], same_tuples),
    Row("flat_map(x -> (x,))", lambda n: [pk.flat_map(single)], same, versus="map(x -> (x,))"),
    Row("batch(100)", lambda n: [pk.batch(100)], lists_of(100)),
    Row("batch(100, timeout=1)", lambda n: [pk.batch(100, timeout=1.0)], lists_of(100)),
    Row("unbatch (after batch(100))", lambda n: [pk.batch(100), pk.unbatch()], same, "batch(100)"),
    Row("take(n), all of them", lambda n: [pk.take(n)], same),
    Row("skip(1)", lambda n: [pk.skip(1)], one_fewer),
    Row("tumbling(seconds=0.05)", lambda n: [pk.tumbling(seconds=0.05)], timed_lists),
    Row("map(x -> [x, x])", lambda n: [pk.map(pair)], pairs),
    Row("window(2)", lambda n: [pk.window(2)], windows_of_two, versus="map(x -> [x, x])"),
    Row("window(seconds=0.05, every=0.05)", lambda n: [pk.window(seconds=0.05)], timed_lists),
    Row("throttle(1e12/s)", lambda n: [pk.throttle(1e12)], same),
    Row("tee(tally)", lambda n: [pk.tee(Tally())], same),
]


def run_row(row: Row, n: int, one_at_a_time: bool) -> float:
    async def numbers() -> AsyncIterator[int]:
        for i in range(n):
            yield i

    sink = Tally()
    p = pk.Pipeline([pk.source(numbers if one_at_a_time else range(n)), *row.stages(n), sink])
    t0 = time.perf_counter()
    p.run()
    elapsed = time.perf_counter() - t0
    if not row.check(sink.tally, n):
        raise RuntimeError(f"{row.name}: wrong output ({sink.tally.count} messages)")
    return elapsed


def measure(n: int, repeat: int, one_at_a_time: bool) -> dict[str, list[float]]:
    """Seconds per run of every row; rounds interleave the rows."""
    times: dict[str, list[float]] = {row.name: [] for row in ROWS}
    for r in range(repeat):
        for row in ROWS:
            times[row.name].append(run_row(row, n, one_at_a_time))
        print(
            f"  round {r + 1}/{repeat} ({'one at a time' if one_at_a_time else 'batched'}): "
            f"map {n / times[MAP][-1]:,.0f} msg/s",
            file=sys.stderr,
        )
    return times


TOLERANCE = 1.05
"""A row passes at a stage cost up to this multiple of map's: the measurement's own
resolution (the ``name=`` row runs exactly map's code)."""


STATS: dict[str, Callable[[list[float]], float]] = {"median": statistics.median, "min": min}
"""How a row's runs make its time."""


def table(
    times: dict[str, list[float]], n: int, stat: str = "median"
) -> tuple[list[str], int, int]:
    header = ["row", "msg/s", "stage ns/msg", "vs map", "target", "result"]
    rows = []
    passed = missed = 0
    best = {name: STATS[stat](rounds) for name, rounds in times.items()}
    by_name = {row.name: row for row in ROWS}
    map_cost = best[MAP] - best[FLOOR]
    baselines = {MAP} | {row.versus for row in ROWS}
    for row in ROWS:
        rate = f"{n / best[row.name]:,.0f}"
        if not row.base:
            rows.append([row.name, rate, "-", "-", "-", "floor"])
            continue
        cost = best[row.name] - best[by_name[row.base].name]
        ns = f"{cost / n * 1e9:.0f}"
        if row.name in baselines:
            note = "baseline" if row.name == MAP else "baseline for the next"
            rows.append([row.name, rate, ns, f"{cost / map_cost:.2f}x", "-", note])
            continue
        ratio = cost / (best[row.versus] - best[FLOOR])
        ok = ratio <= TOLERANCE
        passed += ok
        missed += not ok
        rows.append(
            [row.name, rate, ns, f"{ratio:.2f}x", f"<= {TOLERANCE:.2f}x", "PASS" if ok else "MISS"]
        )
    return render_table(header, rows, right={1, 2, 3}), passed, missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="per batched row")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="20,000 messages, 1 run")
    parser.add_argument(
        "--stat", choices=sorted(STATS), default="median", help="a row's time from its runs"
    )
    args = parser.parse_args()
    n, repeat = (20_000, 1) if args.quick else (args.messages, args.repeat)
    print(
        f"pipekit operators, {n:,} messages batched and {n // 5:,} one at a time, "
        f"{args.stat} of {repeat} (Python {sys.version.split()[0]}, trio {trio.__version__})"
    )
    total_pass = total_miss = 0
    for one_at_a_time, count in ((False, n), (True, max(n // 5, 1000))):
        print()
        print("one at a time (an async generator source)" if one_at_a_time else "batched source")
        lines, passed, missed = table(measure(count, repeat, one_at_a_time), count, args.stat)
        print("\n".join(lines))
        total_pass += passed
        total_miss += missed
    print(f"\ntargets: {total_pass} PASS, {total_miss} MISS")
    return 0


if __name__ == "__main__":
    run_main(main)
