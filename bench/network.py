"""Network adapters: small-message throughput and bulk bytes over unix, tcp and
websocket, each against a baseline measured in the same run.

Run from the checkout::

    python bench/network.py                  # the full run, median of 5 runs
    python bench/network.py --quick          # smoke run: small sizes, 1 run (a few seconds)
    python bench/network.py --repeat 3 --messages 500000 --mib 512

In every row a forked child process sends and this process receives, so that both
cores work (like the framed socketpair row of ``bench/throughput.py``). This process
listens; the child connects once it is told the address. Each clock runs in the
receiver, from the first message (or chunk) received to the last one: connecting, the
handshakes and the child's start-up are outside it, and the first batch received is not
counted in the rate.

1. **small msgs**: ``--messages`` messages ``{"i": n, "v": "x" * 16}`` (``--message
   int``: the integer ``n``) sent with ``send_batch`` of 256 through
   ``pipekit.adapters.unix``, ``.tcp`` (127.0.0.1) and ``.websocket``, received with
   ``batches()``, summed and checked. Baselines: plain ``websockets.trio``, one
   msgpack-encoded message per WebSocket message (``--ws-messages`` of them), and, for
   reference across benches, ``multiprocessing.Pipe`` with one ``send``/``recv`` per
   message. Targets: unix and tcp >= 1,000,000 msg/s; websocket >= 500,000 msg/s and
   >= 10x plain websockets.
2. **one at a time**: ``--each-messages`` of the same messages, the child awaiting one
   ``send`` per message and this process one ``receive`` per message (``async for msg
   in pipe``): the shape people write by hand. Against ``multiprocessing.Pipe`` one
   way (the small-msgs reference row). Target: unix and tcp >= 3x; websocket shown.
3. **sizes**: ``bytes`` messages of 16 B, 1 KiB, 64 KiB and 1 MiB, one ``send`` and one
   ``receive`` per message (``--size-messages`` of them, at most ``--size-mib`` MiB per
   run), through each adapter; against ``multiprocessing.Pipe`` ``send_bytes`` /
   ``recv_bytes`` of the same size. Target: >= 1x at every size on every transport.
4. **bulk bytes**: ``--mib`` MiB in ``bytes`` chunks of ``--chunk-kib`` KiB, one
   ``send`` per chunk, through the unix and tcp adapters; against raw sockets with the
   same chunks, both a blocking ``socket`` in each process (``sendall`` /
   ``recv_into``) and trio ``SocketStream`` (``send_all`` / ``receive_some``). The ratio
   is against the faster raw figure of the same run. Target: >= 80% of raw. For
   reference, the trio row once more with each read received into a reused buffer and
   copied to a new ``bytes``, as a framed receiver must (see bench/README.md).

Runs are interleaved (round 1 of every row, then round 2, ...), so a busy moment of the
machine hits rows and baselines alike. Every child process is reaped, also on Ctrl-C
(exit code 130), and dies with this process if it is killed. Exit code 0 whether targets
are met or missed; non-zero if a run failed (a checksum mismatch, a child that failed, a
hang caught by the 120 s timeout). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import resource
import select
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal, TypeVar

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
from websockets.trio.client import connect as ws_connect  # noqa: E402
from websockets.trio.server import Server, ServerConnection  # noqa: E402
from websockets.trio.server import serve as ws_serve  # noqa: E402
from websockets.version import version as websockets_version  # noqa: E402

import pipekit as pk  # noqa: E402
from pipekit.adapters import tcp, unix, websocket  # noqa: E402
from pipekit.kernel import FramedPipe  # noqa: E402

BATCH = 256
"""Messages per ``send_batch`` in the small-message rows."""
TIMEOUT = 120.0
"""Seconds after which one measurement gives up (a hang is a failure, not a result)."""
CODECS = ("msgpack",)
HOST = "127.0.0.1"

T = TypeVar("T")
Kind = Literal["unix", "tcp", "websocket"]
Message = Literal["dict", "int"]

# Rows, in table order. The smoke test checks that each name is printed.
SMALL_UNIX = "small msgs: unix (adapters.unix)"
SMALL_TCP = "small msgs: tcp 127.0.0.1 (adapters.tcp)"
SMALL_WS = "small msgs: websocket (adapters.websocket)"
SMALL_WS_PLAIN = "small msgs: plain websockets.trio, 1 msg/message"
SMALL_MP = "small msgs: mp.Pipe send()/recv() per msg"
EACH_UNIX = "one at a time: unix send() -> receive()"
EACH_TCP = "one at a time: tcp send() -> receive()"
EACH_WS = "one at a time: websocket send() -> receive()"
SIZES = (16, 1024, 64 * 1024, 1 << 20)
"""The message sizes of the size rows (bytes)."""
BULK_UNIX = "bulk bytes: unix (adapters.unix)"
BULK_UNIX_BLOCKING = "bulk bytes: unix raw, blocking sockets"
BULK_UNIX_TRIO = "bulk bytes: unix raw, trio SocketStream"
BULK_UNIX_COPY = "bulk bytes: unix raw, trio, reads copied to bytes"
BULK_TCP = "bulk bytes: tcp (adapters.tcp)"
BULK_TCP_BLOCKING = "bulk bytes: tcp raw, blocking sockets"
BULK_TCP_TRIO = "bulk bytes: tcp raw, trio SocketStream"
BULK_TCP_COPY = "bulk bytes: tcp raw, trio, reads copied to bytes"


@dataclass(frozen=True)
class Config:
    messages: int
    each_messages: int
    size_messages: int
    size_mib: int
    ws_messages: int
    mib: int
    chunk: int
    message: Message
    repeat: int
    sockdir: str
    """A private temporary directory for the Unix socket files."""
    only: tuple[str, ...] = ()
    """Run only the rows whose name contains one of these (and their baselines)."""

    @property
    def chunks(self) -> int:
        return max(1, self.mib * (1 << 20) // self.chunk)

    @property
    def bulk_bytes(self) -> int:
        return self.chunks * self.chunk

    def size_count(self, size: int) -> int:
        """Messages of ``size`` bytes per run of a size row."""
        return max(16, min(self.size_messages, self.size_mib * (1 << 20) // size))


# --- messages ----------------------------------------------------------------------------


def batch_of(start: int, n: int, message: Message) -> list[Any]:
    """A batch of fresh messages ``start`` .. ``min(start + BATCH, n) - 1``."""
    stop = min(start + BATCH, n)
    if message == "int":
        return list(range(start, stop))
    return [{"i": i, "v": "x" * 16} for i in range(start, stop)]


def check(name: str, n: int, total: int) -> None:
    expected = n * (n - 1) // 2
    if total != expected:
        raise RuntimeError(f"{name}: checksum {total} != {expected}: messages lost or duplicated")


class Clock:
    """The receiver's clock: from the first arrival to the last, and what arrived after
    the first one (messages or bytes), so the rate excludes the first arrival."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0
        self.first_size = 0

    def arrived(self, size: int) -> None:
        if self.first is None:
            self.first = time.perf_counter()
            self.first_size = size

    def done(self) -> None:
        self.last = time.perf_counter()

    def rate(self, name: str, total: int) -> float:
        if self.first is None or self.last <= self.first or total <= self.first_size:
            raise RuntimeError(f"{name}: too little to time; use larger sizes")
        return (total - self.first_size) / (self.last - self.first)


# --- child processes ---------------------------------------------------------------------


def _child_main(
    parent: int,
    control: Connection,
    other: Connection,
    target: Callable[..., None],
    args: tuple[Any, ...],
) -> None:
    # Ctrl-C goes to the whole process group; the parent alone decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    other.close()
    address = control.recv()  # once the parent listens
    control.close()
    target(address, *args)


@dataclass
class Child:
    """A forked sender, waiting to be told where to connect."""

    proc: BaseProcess
    control: Connection

    def tell(self, address: Any) -> None:
        self.control.send(address)

    async def watch(self) -> None:
        """Raise as soon as the child exits with a failure (rather than wait for the
        timeout); a child that finished cleanly is left alone."""
        await trio.lowlevel.wait_readable(self.proc.sentinel)
        self.proc.join()
        if self.proc.exitcode != 0:
            raise RuntimeError(f"the sender child failed with exit code {self.proc.exitcode}")
        await trio.sleep_forever()

    async def guard(self, body: Callable[[], Awaitable[T]]) -> T:
        """``await body()``, failing at once if the child fails meanwhile."""
        result: list[T] = []
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                result.append(await body())
                nursery.cancel_scope.cancel()

            nursery.start_soon(self.watch)
            nursery.start_soon(run)
        return result[0]

    def wait_accept(self, server: socket.socket) -> None:
        """Block until ``server`` has a connection to accept; raise if the child fails
        (or nothing happens within the timeout) first."""
        ready, _, _ = select.select([server.fileno(), self.proc.sentinel], [], [], TIMEOUT)
        if server.fileno() not in ready:
            self.proc.join(1)
            raise RuntimeError(f"the sender child never connected (exit code {self.proc.exitcode})")


@contextlib.contextmanager
def sender(target: Callable[..., None], *args: Any) -> Iterator[Child]:
    """Fork a child that waits for an address, then runs ``target(address, *args)``.
    Forked while no trio loop of this process runs; on exit the child must be gone
    (``reaped``: on a normal exit it must have finished with exit code 0)."""
    ctx = multiprocessing.get_context("fork")
    theirs, ours = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child_main, args=(os.getpid(), theirs, ours, target, args), daemon=True
    )
    try:
        proc.start()
        with reaped(proc):
            theirs.close()
            yield Child(proc, ours)
    finally:
        theirs.close()
        ours.close()


# --- pipekit adapters --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def listening(kind: Kind, sockdir: str) -> AsyncIterator[tuple[Any, Any]]:
    """An adapter's listener on a fresh address: yields (listener, address for connect)."""
    if kind == "unix":
        path = os.path.join(sockdir, "pipekit.sock")
        async with unix.listen(path, codecs=CODECS) as listener:
            yield listener, path
    elif kind == "tcp":
        async with tcp.listen(HOST, 0, codecs=CODECS) as listener:
            yield listener, listener.address
    else:
        async with websocket.listen(HOST, 0, codecs=CODECS) as listener:
            yield listener, listener.url


@contextlib.asynccontextmanager
async def connecting(kind: Kind, address: Any) -> AsyncIterator[FramedPipe]:
    if kind == "unix":
        async with unix.connect(address, codecs=CODECS) as pipe:
            yield pipe
    elif kind == "tcp":
        host, port = address
        async with tcp.connect(host, port, codecs=CODECS) as pipe:
            yield pipe
    else:
        async with websocket.connect(address, codecs=CODECS) as pipe:
            yield pipe


def _send_small(address: Any, kind: Kind, n: int, message: Message) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with connecting(kind, address) as pipe:
                for start in range(0, n, BATCH):
                    await pipe.send_batch(batch_of(start, n, message))
                # Leaving the block ENDs, flushes and closes.

    trio.run(main)


def _send_bulk(address: Any, kind: Kind, chunks: int, size: int) -> None:
    chunk = _payload(size)

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with connecting(kind, address) as pipe:
                for _ in range(chunks):
                    await pipe.send(chunk)

    trio.run(main)


def _send_each(address: Any, kind: Kind, n: int, message: Message) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with connecting(kind, address) as pipe:
                send = pipe.send
                if message == "int":
                    for i in range(n):
                        await send(i)
                else:
                    for i in range(n):
                        await send({"i": i, "v": "x" * 16})

    trio.run(main)


def _send_sized(address: Any, kind: Kind, count: int, size: int) -> None:
    payload = _payload(size)

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with connecting(kind, address) as pipe:
                for _ in range(count):
                    await pipe.send(payload)

    trio.run(main)


async def _accept(listener: Any) -> FramedPipe:
    pipe: FramedPipe = await listener.accept()
    if pipe.conn.codec_name != "msgpack":
        raise RuntimeError(f"expected the msgpack codec, got {pipe.conn.codec_name}")
    return pipe


def small_pipekit(name: str, kind: Kind, cfg: Config) -> float:
    """msg/s of ``cfg.messages`` small messages through an adapter, child -> parent."""
    n = cfg.messages
    as_int = cfg.message == "int"
    with sender(_send_small, kind, n, cfg.message) as child:

        async def receive() -> tuple[float, int]:
            total = count = 0
            clock = Clock()
            with trio.fail_after(TIMEOUT):
                async with listening(kind, cfg.sockdir) as (listener, address):
                    child.tell(address)
                    pipe = await _accept(listener)
                    async for batch in pipe.batches():
                        clock.arrived(len(batch))
                        if as_int:
                            total += sum(batch)
                        else:
                            for msg in batch:
                                total += msg["i"]
                        count += len(batch)
                        if count >= n:
                            clock.done()
                    await pipe.aclose()
            return clock.rate(name, count), total

        rate, total = trio.run(child.guard, receive)
    check(name, n, total)
    return rate


def each_pipekit(name: str, kind: Kind, cfg: Config) -> float:
    """msg/s of ``cfg.each_messages`` small messages, one ``send`` per message in the
    child and one ``receive`` per message here."""
    n = cfg.each_messages
    as_int = cfg.message == "int"
    with sender(_send_each, kind, n, cfg.message) as child:

        async def receive() -> tuple[float, int]:
            total = count = 0
            clock = Clock()
            with trio.fail_after(TIMEOUT):
                async with listening(kind, cfg.sockdir) as (listener, address):
                    child.tell(address)
                    pipe = await _accept(listener)
                    async for msg in pipe:
                        clock.arrived(1)
                        total += msg if as_int else msg["i"]
                        count += 1
                        if count >= n:
                            clock.done()
                    await pipe.aclose()
            return clock.rate(name, count), total

        rate, total = trio.run(child.guard, receive)
    check(name, n, total)
    return rate


def sized_pipekit(name: str, kind: Kind, size: int, cfg: Config) -> float:
    """msg/s of ``bytes`` messages of ``size`` bytes, one ``send`` / ``receive`` each."""
    count = cfg.size_count(size)
    with sender(_send_sized, kind, count, size) as child:

        async def receive() -> tuple[float, int]:
            received = 0
            clock = Clock()
            with trio.fail_after(TIMEOUT):
                async with listening(kind, cfg.sockdir) as (listener, address):
                    child.tell(address)
                    pipe = await _accept(listener)
                    async for data in pipe:
                        clock.arrived(1)
                        received += len(data)
                        if received >= count * size:
                            clock.done()
                    await pipe.aclose()
            return clock.rate(name, received // size), received

        rate, received = trio.run(child.guard, receive)
    if received != count * size:
        raise RuntimeError(f"{name}: received {received} bytes, sent {count * size}")
    return rate


def _send_mp_bytes(_go: None, conn: Connection, other: Connection, count: int, size: int) -> None:
    other.close()
    payload = _payload(size)
    send_bytes = conn.send_bytes
    for _ in range(count):
        send_bytes(payload)
    conn.close()


def sized_mp_pipe(name: str, size: int, cfg: Config) -> float:
    """msg/s through ``multiprocessing.Pipe`` ``send_bytes`` / ``recv_bytes``."""
    count = cfg.size_count(size)
    ours, theirs = multiprocessing.Pipe()
    received = 0
    try:
        with sender(_send_mp_bytes, theirs, ours, count, size) as child:
            theirs.close()
            recv_bytes = ours.recv_bytes
            clock = Clock()
            child.tell(None)
            received = len(recv_bytes())
            clock.arrived(1)
            for _ in range(count - 1):
                received += len(recv_bytes())
            clock.done()
    finally:
        ours.close()
        theirs.close()
    if received != count * size:
        raise RuntimeError(f"{name}: received {received} bytes, sent {count * size}")
    return clock.rate(name, count)


def bulk_pipekit(name: str, kind: Kind, cfg: Config) -> float:
    """Bytes/s of ``cfg.mib`` MiB in ``cfg.chunk``-byte chunks through an adapter."""
    expected = cfg.bulk_bytes
    with sender(_send_bulk, kind, cfg.chunks, cfg.chunk) as child:

        async def receive() -> tuple[float, int]:
            received = 0
            clock = Clock()
            with trio.fail_after(TIMEOUT):
                async with listening(kind, cfg.sockdir) as (listener, address):
                    child.tell(address)
                    pipe = await _accept(listener)
                    async for batch in pipe.batches():
                        for data in batch:
                            clock.arrived(len(data))
                            received += len(data)
                        if received >= expected:
                            clock.done()
                    await pipe.aclose()
            return clock.rate(name, received), received

        rate, received = trio.run(child.guard, receive)
    if received != expected:
        raise RuntimeError(f"{name}: received {received} bytes, sent {expected}")
    return rate


# --- baseline: plain websockets ----------------------------------------------------------


def _send_ws_plain(url: str, n: int, message: Message) -> None:
    pack = msgpack.packb

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with ws_connect(
                url, compression=None, ping_interval=None, proxy=None, max_size=None
            ) as ws:
                send = ws.send
                for start in range(0, n, BATCH):
                    for msg in batch_of(start, n, message):
                        await send(pack(msg))

    trio.run(main)


def small_ws_plain(cfg: Config) -> float:
    """msg/s through plain ``websockets.trio``, one msgpack message per WebSocket
    message (compression and keepalive pings off), child -> parent."""
    n = cfg.ws_messages
    as_int = cfg.message == "int"
    name = SMALL_WS_PLAIN
    with sender(_send_ws_plain, n, cfg.message) as child:

        async def receive() -> tuple[float, int]:
            result: list[tuple[float, int]] = []
            finished = trio.Event()

            async def handler(ws: ServerConnection) -> None:
                unpack = msgpack.unpackb
                recv = ws.recv
                clock = Clock()
                total = 0
                try:
                    for _ in range(n):
                        msg = unpack(await recv())
                        clock.arrived(1)
                        total += msg if as_int else msg["i"]
                    clock.done()
                    result.append((clock.rate(name, n), total))
                    # Let the client close: it does so once everything is sent.
                    await ws.wait_closed()
                finally:
                    finished.set()

            with trio.fail_after(TIMEOUT):
                async with trio.open_nursery() as nursery:
                    server: Server = await nursery.start(
                        partial(
                            ws_serve,
                            handler,
                            0,
                            host=HOST,
                            compression=None,
                            ping_interval=None,
                            max_size=None,
                            server_header=None,
                        )
                    )
                    async with server:
                        port = server.listeners[0].socket.getsockname()[1]
                        child.tell(f"ws://{HOST}:{port}/")
                        await finished.wait()
            if not result:
                raise RuntimeError(f"{name}: the handler did not receive every message")
            return result[0]

        rate, total = trio.run(child.guard, receive)
    check(name, n, total)
    return rate


# --- reference: multiprocessing.Pipe -----------------------------------------------------


def _send_mp(_go: None, conn: Connection, other: Connection, n: int, message: Message) -> None:
    other.close()
    send = conn.send
    for start in range(0, n, BATCH):
        for msg in batch_of(start, n, message):
            send(msg)
    conn.close()


def small_mp_pipe(cfg: Config) -> float:
    """msg/s through ``multiprocessing.Pipe``, one ``send`` / ``recv`` per message (as
    in ``bench/throughput.py``), child -> parent."""
    n = cfg.messages
    as_int = cfg.message == "int"
    ours, theirs = multiprocessing.Pipe()
    try:
        with sender(_send_mp, theirs, ours, n, cfg.message) as child:
            theirs.close()
            recv = ours.recv
            clock = Clock()
            child.tell(None)  # no address: the pipe exists before the fork
            msg = recv()
            clock.arrived(1)
            total = msg if as_int else msg["i"]
            for _ in range(n - 1):
                msg = recv()
                total += msg if as_int else msg["i"]
            clock.done()
    finally:
        ours.close()
        theirs.close()
    check(SMALL_MP, n, total)
    return clock.rate(SMALL_MP, n)


# --- baselines: raw sockets --------------------------------------------------------------


def _payload(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(size % 256)


def _family(kind: Kind) -> socket.AddressFamily:
    return socket.AF_UNIX if kind == "unix" else socket.AF_INET


def _raw_address(kind: Kind, sockdir: str) -> Any:
    return os.path.join(sockdir, "raw.sock") if kind == "unix" else (HOST, 0)


def _send_raw_blocking(address: Any, kind: Kind, chunks: int, size: int) -> None:
    chunk = _payload(size)
    with socket.socket(_family(kind), socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(address)
        sock.settimeout(None)  # plain blocking calls from here on
        _kernel_timeouts(sock)
        send = sock.sendall
        for _ in range(chunks):
            send(chunk)


def _send_raw_trio(address: Any, kind: Kind, chunks: int, size: int) -> None:
    chunk = _payload(size)

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            stream: trio.SocketStream
            if kind == "unix":
                stream = await trio.open_unix_socket(address)
            else:
                stream = await trio.open_tcp_stream(*address)
            async with stream:
                send = stream.send_all
                for _ in range(chunks):
                    await send(chunk)

    trio.run(main)


def _kernel_timeouts(sock: socket.socket) -> None:
    """Let the kernel fail a blocking call that hangs (``SO_RCVTIMEO``/``SO_SNDTIMEO``):
    unlike ``settimeout``, this costs no ``poll`` before every call."""
    limit = struct.pack("ll", int(TIMEOUT), 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)


def bulk_raw_blocking(name: str, kind: Kind, cfg: Config) -> float:
    """Bytes/s with a blocking socket in each process: ``sendall`` of each chunk in the
    child, ``recv_into`` one reused buffer of the chunk size here."""
    expected = cfg.bulk_bytes
    address = _raw_address(kind, cfg.sockdir)
    received = 0
    clock = Clock()
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(socket.socket(_family(kind), socket.SOCK_STREAM))
        if kind == "unix":
            stack.callback(_unlink, address)
        server.bind(address)
        server.listen(1)
        server.settimeout(TIMEOUT)
        with sender(_send_raw_blocking, kind, cfg.chunks, cfg.chunk) as child:
            child.tell(server.getsockname())
            child.wait_accept(server)
            conn, _ = server.accept()
            with conn:
                conn.settimeout(None)
                _kernel_timeouts(conn)
                buf = bytearray(cfg.chunk)
                recv_into = conn.recv_into
                while size := recv_into(buf):
                    clock.arrived(size)
                    received += size
                    if received >= expected:
                        clock.done()
    if received != expected:
        raise RuntimeError(f"{name}: received {received} bytes, sent {expected}")
    return clock.rate(name, received)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def bulk_raw_trio(name: str, kind: Kind, cfg: Config, *, copied: bool = False) -> float:
    """Bytes/s with trio ``SocketStream`` on both sides: ``send_all`` of each chunk in
    the child, ``receive_some(chunk size)`` here - or, ``copied``, ``recv_into`` one
    reused buffer and a copy of each read into a new ``bytes``: the two copies that a
    framed protocol delivering ``bytes`` messages makes (see bench/README.md)."""
    expected = cfg.bulk_bytes
    address = _raw_address(kind, cfg.sockdir)
    with sender(_send_raw_trio, kind, cfg.chunks, cfg.chunk) as child:

        async def receive() -> tuple[float, int]:
            received = 0
            clock = Clock()
            with trio.fail_after(TIMEOUT):
                sock = trio.socket.socket(_family(kind), socket.SOCK_STREAM)
                try:
                    await sock.bind(address)
                    sock.listen(1)
                    listener = trio.SocketListener(sock)
                except BaseException:
                    sock.close()
                    raise
                async with listener:
                    child.tell(sock.getsockname())
                    stream = await listener.accept()
                async with stream:
                    size = cfg.chunk
                    if copied:
                        recv_into = stream.socket.recv_into
                        buf = memoryview(bytearray(size))
                        while count := await recv_into(buf):
                            data = bytes(buf[:count])
                            clock.arrived(len(data))
                            received += len(data)
                            if received >= expected:
                                clock.done()
                    else:
                        receive_some = stream.receive_some
                        while data := await receive_some(size):
                            clock.arrived(len(data))
                            received += len(data)
                            if received >= expected:
                                clock.done()
            return clock.rate(name, received), received

        try:
            rate, received = trio.run(child.guard, receive)
        finally:
            if kind == "unix":
                _unlink(address)
    if received != expected:
        raise RuntimeError(f"{name}: received {received} bytes, sent {expected}")
    return rate


# --- the table ---------------------------------------------------------------------------

Unit = Literal["msg/s", "GB/s"]


@dataclass
class Row:
    name: str
    unit: Unit
    run: Callable[[Config], float]
    baselines: tuple[str, ...] = ()
    """The row(s) this one is compared with: per run, the best of them (none: shown as
    a baseline)."""
    target: str = "-"
    met: Callable[[float, float], bool] | None = None
    """(median figure, median ratio) -> whether the target is met."""
    note: str = ""
    rounds: list[float] = field(default_factory=list)
    faults: list[int] = field(default_factory=list)
    """Minor page faults of this (receiving) process in each run."""

    @property
    def figure(self) -> float:
        return statistics.median(self.rounds)

    def show(self, value: float) -> str:
        if self.unit == "msg/s":
            return f"{value:,.0f} msg/s"
        return f"{value / 1e9:.2f} GB/s"


def bulk_rows(kind: Kind, adapter: str, blocking: str, trio_raw: str, copied: str) -> list[Row]:
    """The bulk rows of one transport: the adapter against the faster of the two raw
    rows, and the copied-reads reference."""
    raw = (blocking, trio_raw)
    return [
        Row(
            adapter,
            "GB/s",
            partial(bulk_pipekit, adapter, kind),
            raw,
            ">= 80% of raw",
            lambda _rate, ratio: ratio >= 0.8,
        ),
        Row(blocking, "GB/s", partial(bulk_raw_blocking, blocking, kind), raw, note="baseline"),
        Row(trio_raw, "GB/s", partial(bulk_raw_trio, trio_raw, kind), raw, note="baseline"),
        Row(
            copied,
            "GB/s",
            partial(bulk_raw_trio, copied, kind, copied=True),
            raw,
            note="reference",
        ),
    ]


def size_label(size: int) -> str:
    if size >= 1 << 20:
        return f"{size >> 20} MiB"
    return f"{size >> 10} KiB" if size >= 1024 else f"{size} B"


def size_rows() -> list[Row]:
    """Per size: each adapter against ``multiprocessing.Pipe.send_bytes``."""
    rows = []
    for size in SIZES:
        label = size_label(size)
        mp_name = f"size {label}: mp.Pipe send_bytes()/recv_bytes()"
        for kind in ("unix", "tcp", "websocket"):
            name = f"size {label}: {kind} send(bytes) -> receive()"
            rows.append(
                Row(
                    name,
                    "msg/s",
                    partial(sized_pipekit, name, kind, size),
                    (mp_name,),
                    ">= 1x mp.Pipe",
                    lambda _rate, ratio: ratio >= 1.0,
                )
            )
        rows.append(Row(mp_name, "msg/s", partial(sized_mp_pipe, mp_name, size), note="baseline"))
    return rows


def make_rows() -> list[Row]:
    return [
        Row(
            SMALL_UNIX,
            "msg/s",
            partial(small_pipekit, SMALL_UNIX, "unix"),
            (SMALL_MP,),
            ">= 1.0M msg/s",
            lambda rate, _ratio: rate >= 1_000_000,
        ),
        Row(
            SMALL_TCP,
            "msg/s",
            partial(small_pipekit, SMALL_TCP, "tcp"),
            (SMALL_MP,),
            ">= 1.0M msg/s",
            lambda rate, _ratio: rate >= 1_000_000,
        ),
        Row(
            SMALL_WS,
            "msg/s",
            partial(small_pipekit, SMALL_WS, "websocket"),
            (SMALL_WS_PLAIN,),
            ">= 500k & >= 10x",
            lambda rate, ratio: rate >= 500_000 and ratio >= 10,
        ),
        Row(SMALL_WS_PLAIN, "msg/s", small_ws_plain, (SMALL_MP,), note="baseline"),
        Row(SMALL_MP, "msg/s", small_mp_pipe, note="reference"),
        Row(
            EACH_UNIX,
            "msg/s",
            partial(each_pipekit, EACH_UNIX, "unix"),
            (SMALL_MP,),
            ">= 3x mp.Pipe",
            lambda _rate, ratio: ratio >= 3.0,
        ),
        Row(
            EACH_TCP,
            "msg/s",
            partial(each_pipekit, EACH_TCP, "tcp"),
            (SMALL_MP,),
            ">= 3x mp.Pipe",
            lambda _rate, ratio: ratio >= 3.0,
        ),
        Row(EACH_WS, "msg/s", partial(each_pipekit, EACH_WS, "websocket"), (SMALL_MP,)),
        *size_rows(),
        *bulk_rows("unix", BULK_UNIX, BULK_UNIX_BLOCKING, BULK_UNIX_TRIO, BULK_UNIX_COPY),
        *bulk_rows("tcp", BULK_TCP, BULK_TCP_BLOCKING, BULK_TCP_TRIO, BULK_TCP_COPY),
    ]


def select_rows(rows: list[Row], only: tuple[str, ...]) -> list[Row]:
    """The rows whose name contains one of ``only`` (all if empty) and their baselines."""
    if not only:
        return rows
    wanted = {r.name for r in rows if any(text in r.name for text in only)}
    wanted |= {b for r in rows if r.name in wanted for b in r.baselines}
    return [r for r in rows if r.name in wanted]


def format_table(rows: list[Row]) -> tuple[list[str], int, int]:
    """The table, and the number of targets met and missed.

    A row's ratio is the median over runs of its figure divided by its baseline's figure
    *of the same run* (the best of its baselines, for the bulk rows); the per-run range
    follows in brackets."""
    by_name = {r.name: r for r in rows}
    header = ("name", "median", "spread", "ratio (range)", "vs", "target", "result")
    lines: list[tuple[str, ...]] = []
    verdicts = Verdicts()
    for row in rows:
        figure = row.figure
        ratio, versus, value = "", "", 1.0
        if row.baselines:
            best = [
                max(by_name[b].rounds[i] for b in row.baselines) for i in range(len(row.rounds))
            ]
            paired = paired_ratio(row.rounds, best)
            value = paired[0]
            ratio = ratio_cell(paired, len(row.rounds), percent=row.unit == "GB/s")
            if row.unit == "GB/s":
                versus = "best raw"
            elif row.baselines == (SMALL_WS_PLAIN,):
                versus = "plain ws"
            else:
                versus = "mp.Pipe" if row.baselines == (SMALL_MP,) else "send_bytes"
        result = verdicts.judge(None if row.met is None else row.met(figure, value), row.note)
        lines.append(
            (row.name, row.show(figure), spread_cell(row.rounds), ratio, versus, row.target, result)
        )
    return render_table(header, lines, {1, 2, 3}), verdicts.passed, verdicts.missed


# --- driver ------------------------------------------------------------------------------


def machine_info(cfg: Config) -> list[str]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    shape = '{"i": n, "v": "x" * 16}' if cfg.message == "dict" else "n (int)"
    return [
        f"machine: nproc={usable} (cpu_count={os.cpu_count()}), {platform.machine()}, "
        f"{platform.system()} {platform.release()}",
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"trio {trio.__version__}, msgpack {'.'.join(map(str, msgpack.version))}, "
        f"websockets {websockets_version}, pipekit {pk.__version__} from {ROOT}",
        f"small msgs: {cfg.messages:,} x {shape} per run in send_batch({BATCH}) "
        f"({cfg.ws_messages:,} for plain websockets); bulk: {cfg.bulk_bytes / (1 << 20):,.0f} "
        f"MiB in {cfg.chunk // 1024:,} KiB chunks; one at a time: {cfg.each_messages:,}; "
        f"sizes: up to {cfg.size_messages:,} messages or {cfg.size_mib} MiB; "
        f"{cfg.repeat} run(s), interleaved; "
        "child sends, parent receives",
    ]


def measure(cfg: Config, rows: list[Row]) -> None:
    for round_no in range(1, cfg.repeat + 1):
        for row in rows:
            print(
                f"  [{round_no}/{cfg.repeat}] {row.name} ...", end="", file=sys.stderr, flush=True
            )
            faults = _minor_faults()
            row.rounds.append(row.run(cfg))
            row.faults.append(_minor_faults() - faults)
            print(f" {row.show(row.rounds[-1])}", file=sys.stderr, flush=True)


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def fault_lines(cfg: Config, rows: list[Row]) -> list[str]:
    """Page faults per bulk chunk in the receiver, by row: a high count means the C
    allocator hands fresh pages to each received chunk (see bench/README.md)."""
    cells = [
        f"{row.name.removeprefix('bulk bytes: ')} {statistics.median(row.faults) / cfg.chunks:.1f}"
        for row in rows
        if row.unit == "GB/s" and row.faults
    ]
    return ["page faults per chunk in the receiver (median): " + "; ".join(cells)] if cells else []


def parse_args(argv: list[str] | None, sockdir: str) -> Config:
    parser = argparse.ArgumentParser(
        description="pipekit network benchmark: small messages and bulk bytes over "
        "unix, tcp and websocket"
    )
    parser.add_argument(
        "--messages", type=int, default=1_000_000, help="small messages per run (1,000,000)"
    )
    parser.add_argument(
        "--ws-messages",
        type=int,
        default=100_000,
        help="messages per run of the plain websockets baseline, one WebSocket message "
        "each (100,000)",
    )
    parser.add_argument(
        "--message",
        choices=("dict", "int"),
        default="dict",
        help='small message: {"i": n, "v": "x" * 16} as in bench/throughput.py, or n',
    )
    parser.add_argument(
        "--each-messages",
        type=int,
        default=200_000,
        help="messages per run of the one-at-a-time rows (200,000)",
    )
    parser.add_argument(
        "--size-messages",
        type=int,
        default=20_000,
        help="messages per run of a size row, at most --size-mib MiB (20,000)",
    )
    parser.add_argument(
        "--size-mib",
        type=int,
        default=512,
        help="MiB per run of a size row, at most (512: a 1 MiB row of 128 messages "
        "lasted 30-60 ms, and one scheduler hiccup moved it by half)",
    )
    parser.add_argument("--mib", type=int, default=1024, help="MiB per bulk run (1024)")
    parser.add_argument("--chunk-kib", type=int, default=256, help="KiB per bulk chunk (256)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per row (5)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only the rows whose name contains TEXT (repeatable), and their baselines",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20,000 messages (2,000 plain websockets, 5,000 one at a time, "
        "500 per size up to 4 MiB), 32 MiB, 1 run",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.ws_messages, args.mib, args.repeat = 20_000, 2_000, 32, 1
        args.each_messages, args.size_messages, args.size_mib = 5_000, 500, 4
    if args.each_messages < 2 or args.size_messages < 2 or args.size_mib < 1:
        parser.error("need --each-messages >= 2, --size-messages >= 2, --size-mib >= 1")
    if min(args.messages, args.ws_messages, args.mib, args.chunk_kib, args.repeat) < 1:
        parser.error("every count must be at least 1")
    if args.messages <= BATCH or args.ws_messages < 2:
        parser.error(f"need --messages > {BATCH} and --ws-messages >= 2")
    if args.chunk_kib * 1024 > args.mib * (1 << 20) // 2:
        parser.error("--mib must hold at least two chunks")
    return Config(
        messages=args.messages,
        each_messages=args.each_messages,
        size_messages=args.size_messages,
        size_mib=args.size_mib,
        ws_messages=args.ws_messages,
        mib=args.mib,
        chunk=args.chunk_kib * 1024,
        message=args.message,
        repeat=args.repeat,
        sockdir=sockdir,
        only=tuple(args.only),
    )


def main(argv: list[str] | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="pipekit-bench-") as sockdir:
        cfg = parse_args(argv, sockdir)
        for text in machine_info(cfg):
            print(text)
        print(flush=True)
        started = time.perf_counter()
        rows = select_rows(make_rows(), cfg.only)
        measure(cfg, rows)
    table, passed, missed = format_table(rows)
    for text in table:
        print(text)
    print(
        "ratio: median over runs of (row / its baseline measured in the same run); "
        "bulk rows: of the faster raw row"
    )
    for text in fault_lines(cfg, rows):
        print(text)
    print(f"targets: {passed} PASS, {missed} MISS (a MISS is a result, not a failure)")
    print(f"\ntotal time {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
