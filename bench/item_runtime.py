"""The item-mode worker runtimes side by side: the blocking child (the default) against
the trio child (``PIPEKIT_ITEM_RUNTIME=trio``), with ``multiprocessing.Pool`` (fork and
spawn) as the baseline, two workers each.

Run from the checkout::

    python bench/item_runtime.py              # 7 interleaved rounds
    python bench/item_runtime.py --quick      # smoke run

Per round and per row, medians over the rounds:

* **start-up**: from creating the pool to the first results (``map`` of two items of
  the builtin ``abs``);
* **call**: p50 of ``--calls`` one-item calls in a row on the warm pool
  (``await pool.submit(x)``; ``Pool.apply``), in µs;
* **map**: one ``map`` of ``--items`` no-op items on the warm pool, in ms;
* **interpreter**: a fresh ``python -c`` that does nothing, then one that imports what
  each child runtime imports (the start-up's floor, and the share of it that is
  imports), and one that imports ``pipekit``, in ms.

The ``multiprocessing`` rows run in a fresh ``python -c`` child per round (no trio
thread in the forking process). The load average is printed beside the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

import pipekit as pk  # noqa: E402

RUNTIME_ENV = "PIPEKIT_ITEM_RUNTIME"

MP_CHILD = """
import json, multiprocessing, statistics, sys, time
ctx = multiprocessing.get_context(sys.argv[1]); calls = int(sys.argv[2]); items = int(sys.argv[3])
t = time.perf_counter()
with ctx.Pool(2) as pool:
    assert pool.map(abs, [-1, -2]) == [1, 2]
    start = time.perf_counter() - t
    lat = []
    for i in range(calls):
        t = time.perf_counter(); pool.apply(abs, (i,)); lat.append(time.perf_counter() - t)
    t = time.perf_counter(); pool.map(abs, range(items)); m = time.perf_counter() - t
print(json.dumps([start, statistics.median(lat), m]))
"""


def mp_round(method: str, calls: int, items: int) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-c", MP_CHILD, method, str(calls), str(items)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return list(json.loads(out))


INTERPRETER = {
    "python -c pass": "pass",
    "import the blocking child": "import pipekit.workers._child.blocking",
    "import the trio child": "import pipekit.workers._child.runtime",
    "import pipekit": "import pipekit",
}


def interpreter_round() -> list[float]:
    """Wall seconds of a fresh interpreter running each of :data:`INTERPRETER`."""
    path = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    times = []
    for code in INTERPRETER.values():
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        times.append(time.perf_counter() - t)
    return times


async def pk_round(runtime: str, calls: int, items: int) -> list[float]:
    os.environ[RUNTIME_ENV] = runtime
    t = time.perf_counter()
    async with pk.WorkerPool(abs, size=2) as pool:
        assert await pool.map([-1, -2]) == [1, 2]
        start = time.perf_counter() - t
        lat = []
        for i in range(calls):
            t = time.perf_counter()
            await pool.submit(i)
            lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        result = await pool.map(range(items))
        mapped = time.perf_counter() - t
        assert result == list(range(items))
    return [start, statistics.median(lat), mapped]


def main() -> None:
    parser = argparse.ArgumentParser(description="blocking vs trio item runtime")
    parser.add_argument("--repeat", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=300, help="one-item calls per round")
    parser.add_argument("--items", type=int, default=10_000, help="items of the map")
    parser.add_argument("--quick", action="store_true", help="smoke run")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.calls, args.items = 1, 20, 500
    rows: dict[str, list[list[float]]] = {
        "pk blocking child": [],
        "pk trio child": [],
        "mp.Pool fork": [],
        "mp.Pool spawn": [],
    }
    interpreter: list[list[float]] = []
    saved = os.environ.get(RUNTIME_ENV)
    try:
        for _ in range(args.repeat):
            interpreter.append(interpreter_round())
            rows["mp.Pool fork"].append(mp_round("fork", args.calls, args.items))
            rows["mp.Pool spawn"].append(mp_round("spawn", args.calls, args.items))
            rows["pk blocking child"].append(trio.run(pk_round, "blocking", args.calls, args.items))
            rows["pk trio child"].append(trio.run(pk_round, "trio", args.calls, args.items))
    finally:
        if saved is None:
            os.environ.pop(RUNTIME_ENV, None)
        else:
            os.environ[RUNTIME_ENV] = saved
    med = {k: [statistics.median(r[i] for r in v) for i in range(3)] for k, v in rows.items()}
    print(
        f"machine: nproc={os.cpu_count()} python={sys.version.split()[0]} "
        f"trio={trio.__version__}; load average {os.getloadavg()}"
    )
    print(f"{args.repeat} interleaved rounds, medians")
    print(f"{'row':20} {'start-up ms':>12} {'call p50 us':>12} {f'map {args.items} ms':>14}")
    for name, (start, call, mapped) in med.items():
        print(f"{name:20} {start * 1e3:12.1f} {call * 1e6:12.1f} {mapped * 1e3:14.1f}")
    new = med["pk blocking child"]
    for ref in ("pk trio child", "mp.Pool fork", "mp.Pool spawn"):
        r = med[ref]
        print(
            f"blocking / {ref:14}: start-up {new[0] / r[0]:.2f}x, call {new[1] / r[1]:.2f}x, "
            f"map {new[2] / r[2]:.2f}x"
        )
    paired = [
        n[1] / b[1] for n, b in zip(rows["pk blocking child"], rows["pk trio child"], strict=True)
    ]
    print(f"call, blocking / trio per round: {' '.join(f'{r:.2f}' for r in paired)}")
    print(f"{'interpreter':28} {'ms':>8} {'- bare ms':>10}")
    bare = statistics.median(r[0] for r in interpreter)
    for i, name in enumerate(INTERPRETER):
        took = statistics.median(r[i] for r in interpreter)
        print(f"{name:28} {took * 1e3:8.1f} {(took - bare) * 1e3:10.1f}")


if __name__ == "__main__":
    main()
