"""Processes: echo throughput, bulk bytes, spawn time and round-trip latency, each
against a baseline measured in the same run.

Run from the checkout::

    python bench/processes.py                # the full run (75-105 s on 2 cores)
    python bench/processes.py --quick        # smoke run (a few seconds, + bench/pool.py --quick)
    python bench/processes.py --repeat 3 --no-pool

Sections (see ``bench/README.md`` for what exactly each row times):

1. **frames echo**: ``--messages`` messages ``{"i": n, "v": "x" * 16}`` to a Python
   worker (``open_process(worker_spec(...))``, a ``port.receive_batch`` /
   ``port.send_batch`` echo) and back, the parent sending with ``send_batch`` and
   receiving with ``batches()`` concurrently; against a ``multiprocessing.Pipe`` echo
   child, one ``send``/``recv`` per message. Target: >= 1,000,000 msg/s and >= 3x.
   **one at a time**: the same messages, the parent awaiting one ``send`` per message
   (and one ``receive`` per echo, concurrently): the shape people write by hand.
   Against the same ``multiprocessing.Pipe`` echo. Target: >= 3x.
   **sizes**: ``bytes`` messages of 16 B, 1 KiB, 64 KiB and 1 MiB echoed by the worker
   the same way (``--size-messages`` of them, at most ``--size-mib`` MiB per run),
   by the port worker and by an async worker (``echo_async``: no thread hop in the
   child), against a ``multiprocessing.Pipe`` ``send_bytes``/``recv_bytes`` echo of the
   same size. Target: >= 1x at every size.
2. **bytes through cat**: ``--mib`` MiB in 1 MiB chunks through ``cat`` with
   ``open_process(["cat"], mode="bytes")``; against ``os.pipe -> cat -> os.pipe`` with
   plain blocking ``os.write`` (a thread) and ``os.read`` (pipe buffers and read size
   as pipekit's). Target: >= 90% of the raw figure.
3. **spawn to first reply**: asking for a Python worker until its first reply arrives
   (``pk.run``: start, send 1, receive 1), median of ``--spawns``; against
   ``multiprocessing`` with the spawn context (``Process`` + ``Pipe``). No target.
4. **round trip**: one message at a time to a warm worker (``pk.run(...).call``),
   ``--round-trips`` per run, median and p90; against the same round trip through two
   OS pipes to a Python child doing blocking ``readline`` / ``write`` + ``flush``.
   Target: median within 1.5x.
5. **WorkerPool**: ``bench/pool.py`` is run as a subprocess and its table reproduced.

Runs are interleaved (round 1 of every row, then round 2, ...), so a busy moment of the
machine hits rows and baselines alike. Every child process is reaped, also on Ctrl-C
(exit code 130). Exit code 0 whether targets are met or missed; non-zero if a run
failed (a checksum mismatch, a child that failed, a hang).

Only the standard library is imported at module level: the ``multiprocessing`` spawn
baseline re-imports this file in its child (as ``__mp_main__``), and must not be
charged for importing trio and pipekit, which it does not use. The pipekit workers are
functions of this file too (``pk.run(f"{this file}:echo_port")``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import math
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
# Benchmark the checkout this file lives in, whatever else is installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from pipekit.adapters.thread import ThreadPort
    from pipekit.kernel import Pipe

BATCH = 256
"""Messages per ``send_batch`` in the frames echo."""
MP_WINDOW = 64
"""Messages the ``multiprocessing.Pipe`` echo parent sends before it reads their echo.
(Faster than a sender thread, which trades the GIL per message. Keep it small: each
message is one socket buffer entry of ~1 KiB, and a window that fills both directions'
buffers deadlocks the parent and the child; 1024 does.)"""
CHUNK = 1 << 20
"""Bytes per chunk sent through cat. (The raw baseline reads with pipekit's read size
and enlarges its pipes as pipekit does: ``pipekit.adapters.stdio`` ``BYTES_READ_SIZE``
and ``PIPE_SIZE``.)"""
TIMEOUT = 120.0
"""Seconds after which one measurement gives up (a hang is a failure, not a result)."""
WARM_ROUND_TRIPS = 50
"""Round trips before the timed ones, in every latency row."""
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

# Rows, in table order. The smoke test checks that each name is printed.
ECHO_PK = "frames echo: worker_spec port echo"
ECHO_MP = "frames echo: mp.Pipe echo per msg"
EACH_PK = "frames echo one at a time: parent send() each"
SIZES = (16, 1024, 64 * 1024, 1 << 20)
"""The message sizes of the size rows (bytes)."""


def size_label(size: int) -> str:
    if size >= 1 << 20:
        return f"{size >> 20} MiB"
    return f"{size >> 10} KiB" if size >= 1024 else f"{size} B"


def size_pk(size: int) -> str:
    return f"size {size_label(size)}: worker echo, send(bytes) each"


def size_pk_async(size: int) -> str:
    return f"size {size_label(size)}: async worker echo, send(bytes) each"


def size_mp(size: int) -> str:
    return f"size {size_label(size)}: mp.Pipe send_bytes() echo"


CAT_PK = "bytes through cat: open_process(bytes)"
CAT_RAW = "bytes through cat: os.pipe blocking r/w"
SPAWN_PK = "spawn to first reply: pk.run"
SPAWN_MP = "spawn to first reply: mp spawn"
SPAWN_FORK = "spawn to first reply: mp fork"
SPAWN_PY = "spawn to first reply: bare python child"
RT_PK = "round trip: pk.run call(), port worker"
RT_PK_ASYNC = "round trip: pk.run call(), async worker"
RT_TRIO = "round trip: trio <-> trio socket echo"
RT_OS = "round trip: OS pipes, python readline"
RT_CAT = "round trip: OS pipes, cat"
POOL = "WorkerPool: bench/pool.py"

MESSAGE_LINE = b'{"i": 1, "v": "xxxxxxxxxxxxxxxx"}\n'
"""What the OS-pipe latency rows send: the test message as a JSON line."""

TRIO_ECHO = (
    "import socket, sys, trio\n"
    "async def main():\n"
    "    sock = socket.socket(fileno=int(sys.argv[1]))\n"
    "    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))\n"
    "    while data := await stream.receive_some(65536):\n"
    "        await stream.send_all(data)\n"
    "trio.run(main)\n"
)
"""The child of the trio reference round trip: echoes whatever arrives."""

ECHO_LINES = (
    "import sys\n"
    "r, w = sys.stdin.buffer, sys.stdout.buffer\n"
    "for line in r:\n"
    "    w.write(line)\n"
    "    w.flush()\n"
)
"""The Python child of the OS-pipe round-trip baseline (and the bare spawn reference)."""


# --- the pipekit workers (loaded by ``python -m pipekit worker``) ------------------------


def echo_port(port: ThreadPort) -> None:
    """Blocking port shape, batch calls: what the frames echo and round trip use."""
    import trio

    while True:
        try:
            batch = port.receive_batch()
        except trio.EndOfChannel:
            return
        port.send_batch(batch)


async def echo_async(pipe: Pipe) -> None:
    """Async shape, on the worker's trio loop (no thread hop)."""
    async for batch in pipe.batches():
        await pipe.send_batch(batch)


def worker_target(function: str) -> str:
    return f"{HERE}:{function}"


def child_env() -> dict[str, str]:
    """The environment of pipekit workers: this checkout first on ``sys.path``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


# --- the multiprocessing children --------------------------------------------------------


def _mp_echo(conn: Connection) -> None:
    """Echo every message until ``None`` (or the parent's end closes)."""
    recv, send = conn.recv, conn.send
    with contextlib.suppress(EOFError):
        while True:
            msg = recv()
            if msg is None:
                break
            send(msg)
    conn.close()


def _mp_echo_forked(parent: int, conn: Connection, other: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    die_with_parent(parent)
    other.close()
    _mp_echo(conn)


def _mp_echo_spawned(parent: int, conn: Connection) -> None:
    """The child of the spawn rows: reply to the first message, then (outside the
    clock) have the kernel kill it if the parent dies, and echo until ``None``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    with contextlib.suppress(EOFError):
        conn.send(conn.recv())
    die_with_parent(parent)
    _mp_echo(conn)


@contextlib.contextmanager
def popen(argv: Sequence[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own session (Ctrl-C is for us alone), killed and reaped on error;
    on a normal exit it must exit by itself with code 0."""
    proc = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
    clean = False
    try:
        yield proc
        clean = True
    finally:
        if clean:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                clean = False
        if not clean:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed with exit code {proc.returncode}")


class Fds:
    """Descriptors this process opened; each is closed once (by ``close`` or at the end
    of the ``with`` block), never twice (a number may be reused meanwhile)."""

    def __init__(self) -> None:
        self.open: set[int] = set()

    def pipe(self, size: int | None = None) -> tuple[int, int]:
        r, w = os.pipe()
        self.open |= {r, w}
        if size is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(w, _F_SETPIPE_SZ, size)
        return r, w

    def close(self, *fds: int) -> None:
        for fd in fds:
            if fd in self.open:
                self.open.discard(fd)
                os.close(fd)

    def __enter__(self) -> Fds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(*list(self.open))


# --- 1. frames echo ----------------------------------------------------------------------


def batch_of(start: int, n: int) -> list[dict[str, Any]]:
    return [{"i": i, "v": "x" * 16} for i in range(start, min(start + BATCH, n))]


def check(name: str, n: int, total: int) -> None:
    expected = n * (n - 1) // 2
    if total != expected:
        raise RuntimeError(f"{name}: checksum {total} != {expected}: messages lost or duplicated")


def echo_pipekit(n: int) -> float:
    """Seconds to echo ``n`` messages through a warm worker (after one warm-up message)."""
    import trio

    from pipekit.adapters.stdio import open_process
    from pipekit.workers import worker_spec

    async def main() -> float:
        spec = worker_spec(worker_target("echo_port"), env=child_env())
        total = 0
        with trio.fail_after(TIMEOUT):
            async with open_process(spec) as pipe:
                await pipe.send("warm-up")
                if await pipe.receive() != "warm-up":
                    raise RuntimeError(f"{ECHO_PK}: bad warm-up reply")

                async def produce() -> None:
                    for start in range(0, n, BATCH):
                        await pipe.send_batch(batch_of(start, n))
                    await pipe.end()

                t0 = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(produce)
                    async for batch in pipe.batches():
                        for msg in batch:
                            total += msg["i"]
                elapsed = time.perf_counter() - t0
        check(ECHO_PK, n, total)
        return elapsed

    return trio.run(main)


def echo_pipekit_each(messages: list[Any], worker: str = "echo_port") -> float:
    """Seconds to echo ``messages`` through a warm worker (``worker``: a function of
    this file), the parent sending each with ``send`` and receiving each with
    ``receive`` (concurrently)."""
    import trio

    from pipekit.adapters.stdio import open_process
    from pipekit.workers import worker_spec

    n = len(messages)

    async def main() -> float:
        spec = worker_spec(worker_target(worker), env=child_env())
        received = 0
        with trio.fail_after(TIMEOUT):
            async with open_process(spec) as pipe:
                await pipe.send("warm-up")
                if await pipe.receive() != "warm-up":
                    raise RuntimeError(f"{EACH_PK}: bad warm-up reply")

                async def produce() -> None:
                    for msg in messages:
                        await pipe.send(msg)
                    await pipe.end()

                t0 = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(produce)
                    # The clock stops at the last echo, as the mp.Pipe baselines' does:
                    # the end of the stream waits for the worker to exit (a clean end
                    # means it succeeded), 80-100 ms of interpreter shutdown here, which
                    # is no part of moving messages (it was a third of a 1 MiB row).
                    while received < n:
                        msg = await pipe.receive()
                        if msg != messages[received]:
                            raise RuntimeError(f"{EACH_PK}: message {received} came back wrong")
                        received += 1
                    elapsed = time.perf_counter() - t0
                    async for _extra in pipe:
                        received += 1  # more than was sent: reported below
        if received != n:
            raise RuntimeError(f"{EACH_PK}: {received} of {n} messages came back")
        return elapsed

    return trio.run(main)


def _mp_echo_bytes(parent: int, conn: Connection, other: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    other.close()
    recv, send = conn.recv_bytes, conn.send_bytes
    with contextlib.suppress(EOFError):
        while data := recv():
            send(data)
    conn.close()


def echo_mp_bytes(size: int, count: int) -> float:
    """Seconds to echo ``count`` messages of ``size`` bytes through a forked child over
    ``multiprocessing.Pipe`` ``send_bytes``/``recv_bytes``, ``MP_WINDOW`` at a time (an
    empty message stops the child)."""
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_mp_echo_bytes, args=(os.getpid(), theirs, ours), daemon=True)
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    received = 0
    try:
        proc.start()
        with reaped(proc):
            theirs.close()
            send, recv = ours.send_bytes, ours.recv_bytes
            # At most 64 KiB in flight: more could fill both directions' socket buffers
            # (the child blocked sending echoes we do not read yet: a deadlock).
            window = max(1, min(MP_WINDOW, (64 << 10) // size))
            t0 = time.perf_counter()
            for start in range(0, count, window):
                stop = min(start + window, count)
                for _ in range(start, stop):
                    send(payload)
                for _ in range(stop - start):
                    received += len(recv())
            elapsed = time.perf_counter() - t0
            send(b"")
    finally:
        ours.close()
        theirs.close()
    if received != size * count:
        raise RuntimeError(f"{size_mp(size)}: {received} of {size * count} bytes came back")
    return elapsed


def echo_mp_pipe(n: int) -> float:
    """Seconds to echo ``n`` messages through a forked child over ``multiprocessing.Pipe``,
    one ``send``/``recv`` per message; the parent sends ``MP_WINDOW`` messages, then
    reads their echoes (so neither side blocks the other on a full buffer)."""
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_mp_echo_forked, args=(os.getpid(), theirs, ours), daemon=True)
    total = 0
    try:
        proc.start()
        with reaped(proc):
            theirs.close()
            ours.send("warm-up")
            if ours.recv() != "warm-up":
                raise RuntimeError(f"{ECHO_MP}: bad warm-up reply")
            send, recv = ours.send, ours.recv
            t0 = time.perf_counter()
            for start in range(0, n, MP_WINDOW):
                stop = min(start + MP_WINDOW, n)
                for i in range(start, stop):
                    send({"i": i, "v": "x" * 16})
                for _ in range(stop - start):
                    total += recv()["i"]
            elapsed = time.perf_counter() - t0
            ours.send(None)
    finally:
        ours.close()
        theirs.close()
    check(ECHO_MP, n, total)
    return elapsed


# --- 2. bytes through cat ----------------------------------------------------------------


def _payload() -> bytes:
    return bytes(range(256)) * (CHUNK // 256)


def cat_pipekit(chunks: int) -> float:
    """Seconds to move ``chunks`` MiB through ``cat`` with pipekit (cat started first)."""
    import trio

    from pipekit.adapters.stdio import open_process

    chunk = _payload()

    async def main() -> float:
        received = 0
        with trio.fail_after(TIMEOUT):
            async with open_process(["cat"], mode="bytes") as pipe:

                async def feed() -> None:
                    for _ in range(chunks):
                        await pipe.send(chunk)
                    await pipe.end()

                t0 = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(feed)
                    async for batch in pipe.batches():
                        for data in batch:
                            received += len(data)
                elapsed = time.perf_counter() - t0
        if received != chunks * CHUNK:
            raise RuntimeError(f"{CAT_PK}: received {received} bytes, sent {chunks * CHUNK}")
        return elapsed

    return trio.run(main)


def cat_raw(chunks: int) -> float:
    """The same through ``os.pipe -> cat -> os.pipe``: a writer thread doing blocking
    ``os.write`` of each chunk, the main thread blocking ``os.read``; pipe buffers and
    read size as pipekit's (``F_SETPIPE_SZ`` ``PIPE_SIZE``, reads of ``BYTES_READ_SIZE``)."""
    from pipekit.adapters.stdio import BYTES_READ_SIZE, PIPE_SIZE

    chunk = _payload()
    failure: list[BaseException] = []
    received = 0
    with Fds() as fds:
        in_r, in_w = fds.pipe(PIPE_SIZE)
        out_r, out_w = fds.pipe(PIPE_SIZE)

        def write() -> None:
            try:
                for _ in range(chunks):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(in_w, view) :]
            except OSError as exc:  # cat died (or was killed: we are interrupted)
                failure.append(exc)
            finally:
                fds.close(in_w)

        writer = threading.Thread(target=write, name="cat-writer", daemon=True)
        try:
            with popen(["cat"], stdin=in_r, stdout=out_w):
                fds.close(in_r, out_w)
                t0 = time.perf_counter()
                writer.start()
                read, size = os.read, BYTES_READ_SIZE
                while data := read(out_r, size):
                    received += len(data)
                elapsed = time.perf_counter() - t0
        finally:
            if writer.ident is not None:
                writer.join(10)  # cat is gone by now: its write fails if it was blocked
    if failure:
        raise RuntimeError(f"{CAT_RAW}: writing failed: {failure[0]}")
    if received != chunks * CHUNK:
        raise RuntimeError(f"{CAT_RAW}: received {received} bytes, sent {chunks * CHUNK}")
    return elapsed


# --- 3. spawn to first reply -------------------------------------------------------------


def spawn_pipekit(count: int) -> list[float]:
    """``count`` times: seconds from ``pk.run(...)`` entering to the first reply."""
    import trio

    import pipekit as pk

    async def main() -> list[float]:
        times = []
        env = child_env()
        for _ in range(count):
            with trio.fail_after(TIMEOUT):
                t0 = time.perf_counter()
                async with pk.run(worker_target("echo_port"), env=env) as worker:
                    await worker.send(1)
                    reply = await worker.receive()
                    times.append(time.perf_counter() - t0)
            if reply != 1:
                raise RuntimeError(f"{SPAWN_PK}: bad reply {reply!r}")
        return times

    return trio.run(main)


def spawn_mp(count: int, method: Literal["spawn", "fork"]) -> list[float]:
    """``count`` times: seconds from creating the ``Pipe`` and ``Process`` to the reply."""
    ctx = (
        multiprocessing.get_context("spawn")
        if method == "spawn"
        else multiprocessing.get_context("fork")
    )
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_mp_echo_spawned, args=(os.getpid(), theirs), daemon=True)
        try:
            proc.start()
            with reaped(proc):
                theirs.close()
                ours.send(1)
                reply = ours.recv()
                times.append(time.perf_counter() - t0)
                ours.send(None)
        finally:
            ours.close()
            theirs.close()
        if reply != 1:
            raise RuntimeError(f"spawn to first reply, mp {method}: bad reply {reply!r}")
    return times


def spawn_bare_python(count: int) -> list[float]:
    """``count`` times: seconds from ``subprocess.Popen`` of ``python -c ECHO_LINES``
    (pipes on stdin/stdout) to its first reply: the interpreter's own start-up."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        with popen(
            [sys.executable, "-c", ECHO_LINES], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        ) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(MESSAGE_LINE)
            proc.stdin.flush()
            reply = proc.stdout.readline()
            times.append(time.perf_counter() - t0)
            proc.stdin.close()
            proc.stdout.close()
        if reply != MESSAGE_LINE:
            raise RuntimeError(f"{SPAWN_PY}: bad reply {reply!r}")
    return times


# --- 4. round trip -----------------------------------------------------------------------


def round_trip_pipekit(count: int, function: str) -> list[float]:
    """``count`` round trips (after ``WARM_ROUND_TRIPS``) of one message through
    ``worker.call`` to a warm ``pk.run`` worker: seconds each."""
    import trio

    import pipekit as pk

    async def main() -> list[float]:
        times = []
        clock = time.perf_counter
        with trio.fail_after(TIMEOUT):
            async with pk.run(worker_target(function), env=child_env()) as worker:
                for i in range(-WARM_ROUND_TRIPS, count):
                    msg = {"i": i, "v": "x" * 16}
                    t0 = clock()
                    reply = await worker.call(msg)
                    t1 = clock()
                    if reply != msg:
                        raise RuntimeError(f"round trip ({function}): bad reply {reply!r}")
                    if i >= 0:
                        times.append(t1 - t0)
        return times

    return trio.run(main)


def round_trip_os(count: int, argv: Sequence[str]) -> list[float]:
    """``count`` round trips of one JSON line through two OS pipes to a child that
    echoes lines, with blocking ``os.write`` and ``os.read`` in this process."""
    times = []
    with Fds() as fds:
        in_r, in_w = fds.pipe()
        out_r, out_w = fds.pipe()
        with popen(argv, stdin=in_r, stdout=out_w):
            fds.close(in_r, out_w)
            write, read, clock = os.write, os.read, time.perf_counter
            for i in range(-WARM_ROUND_TRIPS, count):
                t0 = clock()
                write(in_w, MESSAGE_LINE)
                reply = read(out_r, 65536)
                while not reply.endswith(b"\n"):
                    more = read(out_r, 65536)
                    if not more:
                        break
                    reply += more
                t1 = clock()
                if reply != MESSAGE_LINE:
                    raise RuntimeError(f"round trip ({argv[0]}): bad reply {reply!r}")
                if i >= 0:
                    times.append(t1 - t0)
            fds.close(in_w)  # EOF: the child exits
    return times


def round_trip_trio(count: int) -> list[float]:
    """``count`` round trips of the same JSON line over a ``socketpair`` between this
    process and a child, both on trio (``SocketStream.send_all`` / ``receive_some``):
    what two trio event loops cost, without pipekit."""
    import trio

    ours, theirs = socket.socketpair()
    try:
        with popen(
            [sys.executable, "-c", TRIO_ECHO, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=child_env(),
        ):
            theirs.close()

            async def main() -> list[float]:
                times = []
                clock = time.perf_counter
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
                with trio.fail_after(TIMEOUT):
                    for i in range(-WARM_ROUND_TRIPS, count):
                        t0 = clock()
                        await stream.send_all(MESSAGE_LINE)
                        reply = await stream.receive_some(65536)
                        while not reply.endswith(b"\n"):
                            reply += await stream.receive_some(65536)
                        t1 = clock()
                        if reply != MESSAGE_LINE:
                            raise RuntimeError(f"{RT_TRIO}: bad reply {reply!r}")
                        if i >= 0:
                            times.append(t1 - t0)
                    await stream.aclose()  # EOF: the child exits
                return times

            return trio.run(main)
    finally:
        ours.close()
        theirs.close()


# --- 5. WorkerPool -----------------------------------------------------------------------


@dataclass
class PoolReport:
    lines: list[str]
    """``bench/pool.py``'s table (its stdout)."""
    status: str
    passed: int = 0
    missed: int = 0


def run_pool_bench(quick: bool, repeat: int) -> PoolReport:
    """Run ``bench/pool.py`` (if present) as a subprocess and take its table.

    Its progress goes to our stderr; its stdout (machine line and table) is reproduced.
    A non-zero exit of it is a failed run of ours."""
    script = HERE.parent / "pool.py"
    if not script.exists():
        return PoolReport([], "bench/pool.py does not exist (yet): no WorkerPool rows")
    options = ["--quick"] if quick else ["--repeat", str(repeat)]
    with child_with_output([sys.executable, str(script), *options]) as proc:
        out, _ = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"bench/pool.py failed with exit code {proc.returncode}")
    lines = out.decode(errors="replace").rstrip().splitlines()
    results = [line.rstrip().rsplit(None, 1)[-1] for line in lines if line.strip()]
    return PoolReport(
        lines,
        f"python bench/pool.py {' '.join(options)}",
        passed=results.count("PASS"),
        missed=results.count("MISS"),
    )


@contextlib.contextmanager
def child_with_output(argv: Sequence[str]) -> Iterator[subprocess.Popen[bytes]]:
    """A child whose stdout we collect, in its own session. If we are interrupted, it
    gets SIGINT too (it, not its pool workers: it shuts them down itself); if it is
    still running 10 s later, its whole process group gets SIGKILL. Always reaped."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                # Still running, so the group (named by its pid) is certainly its own.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


# --- the table ---------------------------------------------------------------------------

Unit = Literal["msg/s", "GB/s", "ms", "µs"]


@dataclass
class Row:
    name: str
    unit: Unit
    baseline: str | None = None
    """The row this one is compared with (None: this is a baseline)."""
    target: str = "-"
    """The issue's target, as printed."""
    met: Callable[[float, float], bool] | None = None
    """(figure, ratio) -> whether the target is met."""
    note: str = ""
    samples: list[float] = field(default_factory=list)
    """Latency rows: every sample of every round (seconds)."""
    rounds: list[float] = field(default_factory=list)
    """Each round's figure (rate, or median latency in seconds)."""

    @property
    def latency(self) -> bool:
        return self.unit in ("ms", "µs")

    @property
    def figure(self) -> float:
        if self.latency:
            return statistics.median(self.samples)
        return statistics.median(self.rounds)

    def p90(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]

    def show(self, value: float) -> str:
        if self.unit == "msg/s":
            return f"{value:,.0f} msg/s"
        if self.unit == "GB/s":
            return f"{value / 1e9:.2f} GB/s"
        if self.unit == "ms":
            return f"{value * 1e3:,.1f} ms"
        return f"{value * 1e6:,.0f} µs"


ROWS: list[Row] = [
    Row(
        ECHO_PK,
        "msg/s",
        ECHO_MP,
        ">= 1.0M & >= 3x",
        lambda rate, ratio: rate >= 1_000_000 and ratio >= 3,
    ),
    Row(ECHO_MP, "msg/s", note="baseline"),
    Row(EACH_PK, "msg/s", ECHO_MP, ">= 3x mp.Pipe", lambda _rate, ratio: ratio >= 3),
    *(
        row
        for size in SIZES
        for row in (
            Row(size_pk(size), "msg/s", size_mp(size), ">= 1x", lambda _r, ratio: ratio >= 1),
            Row(
                size_pk_async(size),
                "msg/s",
                size_mp(size),
                ">= 1x",
                lambda _r, ratio: ratio >= 1,
            ),
            Row(size_mp(size), "msg/s", note="baseline"),
        )
    ),
    Row(CAT_PK, "GB/s", CAT_RAW, ">= 90% of raw", lambda _rate, ratio: ratio >= 0.9),
    Row(CAT_RAW, "GB/s", note="baseline"),
    Row(SPAWN_PK, "ms", SPAWN_MP, note="no target"),
    Row(SPAWN_MP, "ms", note="baseline"),
    Row(SPAWN_FORK, "ms", SPAWN_MP, note="reference"),
    Row(SPAWN_PY, "ms", SPAWN_MP, note="reference: interpreter start"),
    Row(RT_PK, "µs", RT_OS, "<= 1.5x OS pipes", lambda _t, ratio: ratio <= 1.5),
    Row(RT_PK_ASYNC, "µs", RT_OS, note="reference: async worker"),
    Row(RT_TRIO, "µs", RT_OS, note="reference: no pipekit"),
    Row(RT_OS, "µs", note="baseline"),
    Row(RT_CAT, "µs", RT_OS, note="reference: C echo"),
]


def format_table(rows: list[Row]) -> tuple[list[str], int, int]:
    """The table, and the number of targets met and missed.

    A row's ratio is the median over runs of its figure divided by its baseline's figure
    *of the same run* (see ``paired_ratio``); the per-run range follows in brackets."""
    by_name = {r.name: r for r in rows}
    header = ("name", "median", "p90", "spread", "ratio (range)", "target", "result")
    lines: list[tuple[str, ...]] = []
    verdicts = Verdicts()
    for row in rows:
        figure = row.figure
        p90 = row.show(row.p90()) if row.latency else ""
        if row.baseline is None:
            ratio, value = "1.00x", 1.0
        else:
            paired = paired_ratio(row.rounds, by_name[row.baseline].rounds)
            value = paired[0]
            ratio = ratio_cell(paired, len(row.rounds), percent=row.unit == "GB/s")
            if row.unit == "GB/s":
                ratio = ratio.replace("%", "% of raw", 1)
        result = verdicts.judge(None if row.met is None else row.met(figure, value), row.note)
        lines.append(
            (row.name, row.show(figure), p90, spread_cell(row.rounds), ratio, row.target, result)
        )
    return render_table(header, lines, {1, 2, 3, 4}), verdicts.passed, verdicts.missed


# --- driver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    messages: int
    size_messages: int
    size_mib: int
    mib: int
    spawns: int
    round_trips: int
    repeat: int
    pool: bool
    quick: bool
    only: tuple[str, ...] = ()
    """Run only the rows whose name contains one of these (and their baselines)."""


def machine_info(cfg: Config) -> list[str]:
    import msgpack
    import trio

    import pipekit as pk

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    per_round = math.ceil(cfg.spawns / cfg.repeat)
    return [
        f"machine: nproc={usable} (cpu_count={os.cpu_count()}), {platform.machine()}, "
        f"{platform.system()} {platform.release()}",
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"trio {trio.__version__}, msgpack {'.'.join(map(str, msgpack.version))}, "
        f"pipekit {pk.__version__} from {ROOT}",
        f"echo {cfg.messages:,} messages, {cfg.mib:,} MiB through cat, "
        f"{per_round * cfg.repeat} spawns, {cfg.round_trips:,} round trips per run; "
        f"{cfg.repeat} run(s), interleaved",
    ]


def measure(cfg: Config, rows: dict[str, Row]) -> None:
    per_round = math.ceil(cfg.spawns / cfg.repeat)
    each = [{"i": i, "v": "x" * 16} for i in range(cfg.messages)]

    def sized(size: int) -> list[tuple[str, Callable[[], float | list[float]]]]:
        count = max(16, min(cfg.size_messages, cfg.size_mib * (1 << 20) // size))
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        return [
            (size_pk(size), lambda: count / echo_pipekit_each([payload] * count)),
            (
                size_pk_async(size),
                lambda: count / echo_pipekit_each([payload] * count, "echo_async"),
            ),
            (size_mp(size), lambda: count / echo_mp_bytes(size, count)),
        ]

    steps: list[tuple[str, Callable[[], float | list[float]]]] = [
        (ECHO_PK, lambda: cfg.messages / echo_pipekit(cfg.messages)),
        (ECHO_MP, lambda: cfg.messages / echo_mp_pipe(cfg.messages)),
        (EACH_PK, lambda: len(each) / echo_pipekit_each(each)),
        *(step for size in SIZES for step in sized(size)),
        (CAT_PK, lambda: cfg.mib * CHUNK / cat_pipekit(cfg.mib)),
        (CAT_RAW, lambda: cfg.mib * CHUNK / cat_raw(cfg.mib)),
        (SPAWN_PK, lambda: spawn_pipekit(per_round)),
        (SPAWN_MP, lambda: spawn_mp(per_round, "spawn")),
        (SPAWN_FORK, lambda: spawn_mp(per_round, "fork")),
        (SPAWN_PY, lambda: spawn_bare_python(per_round)),
        (RT_PK, lambda: round_trip_pipekit(cfg.round_trips, "echo_port")),
        (RT_PK_ASYNC, lambda: round_trip_pipekit(cfg.round_trips, "echo_async")),
        (RT_TRIO, lambda: round_trip_trio(cfg.round_trips)),
        (RT_OS, lambda: round_trip_os(cfg.round_trips, [sys.executable, "-c", ECHO_LINES])),
        (RT_CAT, lambda: round_trip_os(cfg.round_trips, ["cat"])),
    ]
    if cfg.only:
        wanted = {name for name, _ in steps if any(text in name for text in cfg.only)}
        wanted |= {b for name in wanted if (b := rows[name].baseline) is not None}
        steps = [(name, step) for name, step in steps if name in wanted]
    for round_no in range(1, cfg.repeat + 1):
        for name, step in steps:
            row = rows[name]
            print(f"  [{round_no}/{cfg.repeat}] {name} ...", end="", file=sys.stderr, flush=True)
            result = step()
            if isinstance(result, list):
                row.samples += result
                row.rounds.append(statistics.median(result))
            else:
                row.rounds.append(result)
            print(f" {row.show(row.rounds[-1])}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        description="pipekit processes benchmark: echo, bytes through cat, spawn, round trip"
    )
    parser.add_argument(
        "--messages", type=int, default=1_000_000, help="messages per echo run (1,000,000)"
    )
    parser.add_argument(
        "--size-messages",
        type=int,
        default=20_000,
        help="messages per run of a size row, at most --size-mib MiB (20,000)",
    )
    parser.add_argument(
        "--size-mib", type=int, default=128, help="MiB per run of a size row, at most (128)"
    )
    parser.add_argument("--mib", type=int, default=1024, help="MiB through cat per run (1024)")
    parser.add_argument(
        "--spawns", type=int, default=20, help="spawns per spawn row, over all runs (20)"
    )
    parser.add_argument(
        "--round-trips", type=int, default=2000, help="round trips per latency run (2,000)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per row (5)")
    parser.add_argument("--no-pool", action="store_true", help="do not run bench/pool.py")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only the rows whose name contains TEXT (repeatable), and their "
        "baselines; implies --no-pool",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20,000 messages, 64 MiB, 2 spawns, 200 round trips, 1 run "
        "(sizes: 2,000 messages, 4 MiB)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.size_messages, args.size_mib = 2_000, 4
        args.messages, args.mib, args.spawns, args.round_trips, args.repeat = (
            20_000,
            64,
            2,
            200,
            1,
        )
    if (
        min(args.messages, args.mib, args.spawns, args.round_trips, args.repeat) < 1
        or min(args.size_messages, args.size_mib) < 1
    ):
        parser.error("every count must be at least 1")
    return Config(
        messages=args.messages,
        size_messages=args.size_messages,
        size_mib=args.size_mib,
        mib=args.mib,
        spawns=args.spawns,
        round_trips=args.round_trips,
        repeat=args.repeat,
        pool=not (args.no_pool or args.only),
        only=tuple(args.only),
        quick=args.quick,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    for text in machine_info(cfg):
        print(text)
    print(flush=True)
    started = time.perf_counter()
    rows = {row.name: row for row in ROWS}
    measure(cfg, rows)
    table, passed, missed = format_table([row for row in ROWS if row.rounds])
    pool = PoolReport([], "skipped (--no-pool)")
    if cfg.pool:
        print("  bench/pool.py ...", file=sys.stderr, flush=True)
        pool = run_pool_bench(cfg.quick, cfg.repeat)
    for text in table:
        print(text)
    print(
        "ratio: median over runs of (row / its baseline measured in the same run); "
        "for ms and µs, above 1 is slower"
    )
    print(f"targets: {passed} PASS, {missed} MISS (a MISS is a result, not a failure)")
    print(f"\n{POOL}: {pool.status}")
    for text in pool.lines:
        print(f"  {text}")
    if pool.lines:
        print(f"targets of bench/pool.py: {pool.passed} PASS, {pool.missed} MISS")
    print(f"\ntotal time {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
