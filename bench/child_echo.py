"""End-to-end echo throughput through a Python process worker (``pipekit worker``).

Run from the checkout::

    python bench/child_echo.py                  # 1,000,000 messages, median of 3 runs
    python bench/child_echo.py --quick          # smoke run: 20,000 messages, 1 run
    python bench/child_echo.py --messages 200000 --repeat 5

The parent does what the stdio adapter does: a ``socket.socketpair()``, the child's end
inherited as ``PIPEKIT_FD``, ``python -m pipekit worker TARGET`` and
``framed_pipe(initiator=True)`` on its own end. It sends ``--messages`` messages
``{"i": n, "v": "x" * 16}`` (built inside the timed region) with ``send_batch`` of 256,
ENDs, and receives the echo with ``batches()``, summing ``msg["i"]`` (checked, so a lost
or duplicated message fails the run). The clock runs from the completed handshake to the
worker's END, so each message crosses the socket twice and is encoded and decoded twice.
Each row is one worker shape; the workers are the functions at the end of this file.
``startup`` is the median time from spawning the process to the completed handshake.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipekit.adapters.thread import ThreadPort  # noqa: E402
from pipekit.kernel import Pipe, framed_pipe  # noqa: E402

BATCH = 256
TIMEOUT = 120.0
TARGET = 1_000_000


# -- the workers (loaded by the child from this file) --------------------------------------


def echo_batches(port: ThreadPort) -> None:
    """Blocking port shape, batch calls: the fast way to write a thread worker."""
    while True:
        try:
            batch = port.receive_batch()
        except trio.EndOfChannel:
            return
        port.send_batch(batch)


def echo_each(port: ThreadPort) -> None:
    """Blocking port shape, one ``send`` per message."""
    for msg in port:
        port.send(msg)


def echo_generator(messages: Iterator[Any]) -> Iterator[Any]:
    """Generator shape: each yielded value is sent."""
    yield from messages


async def echo_async(inp: Pipe, out: Pipe) -> None:
    """Async shape on the child's trio loop, batch calls."""
    async for batch in inp.batches():
        await out.send_batch(batch)


ROWS: list[tuple[str, str]] = [
    ("port: receive_batch/send_batch", "echo_batches"),
    ("port: for msg in port: send(msg)", "echo_each"),
    ("generator: yield msg", "echo_generator"),
    ("async (inp, out): batches/send_batch", "echo_async"),
]


# -- the parent ----------------------------------------------------------------------------


async def run_once(function: str, n: int) -> tuple[float, float]:
    """One echo of ``n`` messages through a fresh worker: (startup s, echo s)."""
    ours, theirs = socket.socketpair()
    env = {**os.environ, "PIPEKIT_FD": str(theirs.fileno())}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    spawned = time.perf_counter()
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "pipekit", "worker", f"{HERE}:{function}"],
        pass_fds=(theirs.fileno(),),
        env=env,
        stderr=subprocess.PIPE,
    )
    theirs.close()
    total = 0
    try:
        with trio.fail_after(TIMEOUT):
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
            async with framed_pipe(stream, initiator=True, codecs=("msgpack",)) as pipe:
                t0 = time.perf_counter()
                startup = t0 - spawned

                async def produce() -> None:
                    for start in range(0, n, BATCH):
                        stop = min(start + BATCH, n)
                        await pipe.send_batch([{"i": i, "v": "x" * 16} for i in range(start, stop)])
                    await pipe.end()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(produce)
                    async for batch in pipe.batches():
                        for msg in batch:
                            total += msg["i"]
                elapsed = time.perf_counter() - t0
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    err: bytes | bytearray = b""
    if proc.stderr is not None:
        with trio.move_on_after(1):
            err = await proc.stderr.receive_some()
        await proc.stderr.aclose()
    if code != 0:
        raise RuntimeError(f"{function}: worker exited with {code}: {err.decode()}")
    if total != n * (n - 1) // 2:
        raise RuntimeError(f"{function}: checksum mismatch: messages lost or duplicated")
    return startup, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 messages, 1 run")
    args = parser.parse_args(argv)
    n, repeat = (20_000, 1) if args.quick else (args.messages, args.repeat)
    print(
        f"machine: nproc={os.cpu_count()} python={sys.version.split()[0]} trio={trio.__version__}"
    )
    print(f"{n:,} messages per run, median of {repeat}, parent send_batch({BATCH}) -> batches()")
    rates: dict[str, list[float]] = {name: [] for name, _ in ROWS}
    startups: list[float] = []
    run: Callable[[str, int], Any] = run_once
    for _ in range(repeat):  # interleaved, so a busy moment hits every row
        for name, function in ROWS:
            startup, elapsed = trio.run(run, function, n)
            startups.append(startup)
            rates[name].append(n / elapsed)
            print(f"  {name}: {n / elapsed:,.0f} msg/s", file=sys.stderr)
    print()
    print(f"{'worker shape':<38}  {'msg/s':>10}  {'spread':>6}  target")
    print(f"{'-' * 38}  {'-' * 10}  {'-' * 6}  {'-' * 20}")
    for name, _ in ROWS:
        median = statistics.median(rates[name])
        spread = (max(rates[name]) - min(rates[name])) / 2 / median
        target = ""
        if name == ROWS[0][0]:
            target = f">= {TARGET / 1e6:.1f}M: " + ("PASS" if median >= TARGET else "MISS")
        print(f"{name:<38}  {median:>10,.0f}  {spread:>5.0%}  {target}")
    print(f"startup (spawn to handshake): median {statistics.median(startups) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
