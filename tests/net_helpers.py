"""What the network adapter tests share: one :class:`Net` per transport (unix, tcp,
websocket) that listens and connects the same way, a :class:`RawPeer` driven by hand (raw
bytes or WebSocket messages out, pipekit/1 frames in), and :class:`NetworkSuite`, the
behaviours every socket adapter must have, which each ``test_<transport>.py`` runs by
subclassing it.

Every test talks only to 127.0.0.1 or to a Unix socket under ``tmp_path``; every wait is
bounded by :data:`HANG_GUARD`, which is a guard against hangs, never used to synchronise.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio
import trio.testing
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import connect as ws_connect

from pipekit.adapters import tcp, unix, websocket
from pipekit.adapters._connect import Reconnect
from pipekit.adapters._listener import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_PEERS, Listener
from pipekit.kernel import FramedPipe, ProtocolError, RemoteError
from pipekit.kernel.protocol import (
    FLAG_JSON,
    HEADER,
    Connection,
    ErrorReceived,
    Event,
    FrameType,
    HandshakeComplete,
    PingReceived,
)

HANG_GUARD = 10.0  # seconds; only ever reached when something is broken
LOCALHOST = "127.0.0.1"
GARBAGE = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n" + random.Random(7).randbytes(2000)
"""Bytes that are not pipekit/1: read as a header, ``"GET "`` is the length and ``"HT"``
sets reserved flag bits, so the receiver reports ``malformed`` from the first 8 bytes."""

NoLeaks = Callable[[], AbstractContextManager[None]]


def sample(i: int) -> Any:
    """Message number ``i`` of a test stream: ints, strings, bytes and maps in turn."""
    match i % 4:
        case 0:
            return i
        case 1:
            return f"message {i}"
        case 2:
            return i.to_bytes(4, "big")
        case _:
            return {"i": i, "tags": ["a", "b"], "ok": True}


def samples(count: int) -> list[Any]:
    return [sample(i) for i in range(count)]


async def echo(pipe: FramedPipe) -> None:
    """A handler that sends back everything it receives, then ends."""
    async for batch in pipe.batches():
        await pipe.send_batch(batch)


async def exchange(pipe: FramedPipe, value: Any) -> Any:
    """Send ``value`` to an echoing peer and return what comes back."""
    await pipe.send(value)
    return await pipe.receive()


async def receive_all(pipe: FramedPipe) -> list[Any]:
    """Everything the peer sends until its END."""
    return [message async for batch in pipe.batches() for message in batch]


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Wait (bounded by the caller's ``fail_after``) until ``predicate()`` holds,
    re-checking whenever every task of the run is blocked."""
    while not predicate():
        await trio.testing.wait_all_tasks_blocked(cushion=0.01)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on (for listeners started later)."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


class RetryCounter(logging.Handler):
    """Counts the "connection attempt failed; retrying" records of the adapters and
    lets a test wait for the n-th one."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "connection attempt" in record.getMessage():
            self.count += 1
            self._changed.set()

    async def wait(self, count: int) -> None:
        while self.count < count:
            if self._changed.is_set():
                self._changed = trio.Event()
            await self._changed.wait()


@contextmanager
def count_retries() -> Iterator[RetryCounter]:
    logger = logging.getLogger("pipekit.adapters")
    counter = RetryCounter()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(counter)
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)


# -- a peer driven by hand -------------------------------------------------------------


class RawPeer:
    """One connection to a listener, driven by hand: whatever bytes (or, over
    WebSocket, messages) the test likes go out; what comes back is parsed as pipekit/1
    by an initiator :class:`Connection` into :attr:`events`."""

    def __init__(
        self,
        send: Callable[[bytes | str], Awaitable[None]],
        receive: Callable[[], Awaitable[bytes | None]],
        *,
        per_frame: bool,
        token: str | None = None,
    ) -> None:
        self._send = send
        self._receive = receive
        self.per_frame = per_frame
        self.conn = Connection(initiator=True, name="raw", token=token)
        self.events: list[Event] = []
        self.eof = False
        self.reset: BaseException | None = None
        """Set when the connection was reset rather than closed cleanly."""
        self.close_code: int | None = None
        """Over WebSocket: the code of the listener's close frame, once received."""

    async def send_raw(self, data: bytes | str) -> None:
        await self._send(data)

    async def send_queued(self) -> None:
        """Send every frame :attr:`conn` has queued, one write (or message) each."""
        for frame in self.conn.frames_to_send():
            await self._send(frame)

    async def send_hello(self) -> None:
        """Send this peer's HELLO (before the handshake, the only frame queued)."""
        await self.send_queued()

    async def read_once(self) -> None:
        data = await self._receive()
        if data is None:
            self.eof = True
        elif self.per_frame:
            self.events.extend(self.conn.receive_frame(data))
        else:
            self.events.extend(self.conn.receive_data(data))

    async def handshake(self) -> None:
        """HELLO out, the answer in: the listener now hands this peer's pipe out."""
        await self.send_hello()
        while not self.conn.handshake_complete:
            await self.read_once()
            assert not self.eof, f"closed during the handshake: {self.events}"
        assert any(isinstance(e, HandshakeComplete) for e in self.events)

    async def read_to_end(self) -> list[Event]:
        """Read (and parse) until the listener closes the connection."""
        while not self.eof:
            await self.read_once()
        return self.events

    def errors(self) -> list[ErrorReceived]:
        return [e for e in self.events if isinstance(e, ErrorReceived)]

    def pings(self) -> int:
        return sum(isinstance(e, PingReceived) for e in self.events)


@asynccontextmanager
async def raw_stream_peer(stream: trio.abc.Stream, **kw: Any) -> AsyncIterator[RawPeer]:
    peer: RawPeer

    async def send(data: bytes | str) -> None:
        assert isinstance(data, bytes)
        await stream.send_all(data)

    async def receive() -> bytes | None:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError as exc:  # ECONNRESET: what was unread is lost
            peer.reset = exc
            return None
        return bytes(data) or None

    peer = RawPeer(send, receive, per_frame=False, **kw)
    async with stream:
        yield peer


@asynccontextmanager
async def raw_websocket_peer(url: str, **kw: Any) -> AsyncIterator[RawPeer]:
    """A WebSocket client that completed the upgrade and speaks no pipekit/1 by itself."""
    async with ws_connect(
        url, compression=None, ping_interval=None, close_timeout=1, max_size=None
    ) as ws:
        peer: RawPeer

        async def send(data: bytes | str) -> None:
            await ws.send(data)

        async def receive() -> bytes | None:
            try:
                message = await ws.recv()
            except ConnectionClosed as exc:
                if exc.rcvd is None:
                    peer.reset = exc
                else:
                    peer.close_code = exc.rcvd.code
                return None
            assert isinstance(message, bytes), f"text message from the listener: {message!r}"
            return message

        peer = RawPeer(send, receive, per_frame=True, **kw)
        yield peer


# -- one transport ---------------------------------------------------------------------


class Net:
    """How the tests listen on and connect to one transport."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        assert kind in ("unix", "tcp", "websocket")
        self.kind = kind
        self.path = tmp_path / "pk.sock"
        self.port = 0
        """The TCP port :meth:`listen` binds (0: any) and :meth:`connect` without a
        listener targets (see :meth:`plan_address`)."""

    def plan_address(self) -> None:
        """Choose the address a listener will have before it exists (for reconnects)."""
        if self.kind != "unix":
            self.port = free_port()

    def listen(self, **kw: Any) -> AbstractAsyncContextManager[Listener]:
        if self.kind == "unix":
            return unix.listen(self.path, **kw)
        if self.kind == "tcp":
            return tcp.listen(LOCALHOST, self.port, **kw)
        return websocket.listen(LOCALHOST, self.port, **kw)

    def url(self, listener: Listener | None) -> str:
        host, port = listener.address if listener is not None else (LOCALHOST, self.port)
        return f"ws://{host}:{port}/ws"

    def connect(
        self, listener: Listener | None = None, **kw: Any
    ) -> AbstractAsyncContextManager[FramedPipe]:
        """Connect to ``listener``, or to the planned address if there is none."""
        if self.kind == "unix":
            return unix.connect(listener.address if listener is not None else self.path, **kw)
        if self.kind == "tcp":
            host, port = listener.address if listener is not None else (LOCALHOST, self.port)
            return tcp.connect(host, port, **kw)
        return websocket.connect(self.url(listener), **kw)

    async def open_stream(self, listener: Listener | None) -> trio.abc.Stream:
        """A plain byte stream to the listener (for WebSocket: TCP, no upgrade)."""
        if self.kind == "unix":
            return await trio.open_unix_socket(listener.address if listener else self.path)
        host, port = listener.address if listener is not None else (LOCALHOST, self.port)
        return await trio.open_tcp_stream(host, port)

    def raw(self, listener: Listener, **kw: Any) -> AbstractAsyncContextManager[RawPeer]:
        """A :class:`RawPeer` on the transport (for WebSocket: after the upgrade)."""
        if self.kind == "websocket":
            return raw_websocket_peer(self.url(listener), **kw)

        @asynccontextmanager
        async def opened() -> AsyncIterator[RawPeer]:
            async with raw_stream_peer(await self.open_stream(listener), **kw) as peer:
                yield peer

        return opened()

    @asynccontextmanager
    async def black_hole(self) -> AsyncIterator[trio.Event]:
        """Listen at this transport's address, accept connections and never answer.
        Yields an event set once a peer has connected and sent something."""
        if self.kind == "unix":
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await sock.bind(str(self.path))
            sock.listen(8)
            listeners: list[trio.SocketListener] = [trio.SocketListener(sock)]
        else:
            listeners = await trio.open_tcp_listeners(0, host=LOCALHOST)
            self.port = listeners[0].socket.getsockname()[1]
        arrived = trio.Event()

        async def swallow(stream: trio.SocketStream) -> None:
            async with stream:
                while await stream.receive_some():
                    arrived.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, swallow, listeners)
            try:
                yield arrived
            finally:
                nursery.cancel_scope.cancel()


# -- the behaviours every socket adapter shares ----------------------------------------


class NetworkSuite:
    """Tests every socket adapter must pass; ``test_<kind>.py`` subclasses this with
    ``kind`` set (the class name there starts with ``Test``)."""

    kind: ClassVar[str]

    @pytest.fixture
    def net(self, tmp_path: Path) -> Net:
        return Net(self.kind, tmp_path)

    # -- round trips ------------------------------------------------------------------

    async def test_round_trip_of_many_messages_keeps_order_both_ways(self, net: Net) -> None:
        sent = samples(50_000)
        with trio.fail_after(HANG_GUARD):
            async with (
                net.listen(handler=echo) as listener,
                net.connect(listener) as pipe,
                trio.open_nursery() as nursery,
            ):

                async def produce() -> None:
                    for message in sent[:25_000]:
                        await pipe.send(message)
                    for start in range(25_000, 50_000, 1000):
                        await pipe.send_batch(sent[start : start + 1000])
                    await pipe.end()

                nursery.start_soon(produce)
                got = await receive_all(pipe)  # ends at the echo's END
        assert got == sent
        assert pipe.stats.messages_sent == pipe.stats.messages_received == 50_000

    async def test_half_close_lets_the_server_reply_after_the_client_ended(self, net: Net) -> None:
        async def count_then_reply(pipe: FramedPipe) -> None:
            count = len(await receive_all(pipe))
            await pipe.send({"count": count})
            await pipe.send_batch(samples(5000))

        with trio.fail_after(HANG_GUARD):
            async with (
                net.listen(handler=count_then_reply) as listener,
                net.connect(listener) as pipe,
            ):
                await pipe.send_batch(samples(10_000))
                await pipe.end()
                with pytest.raises(trio.ClosedResourceError):
                    await pipe.send("after END")
                assert await pipe.receive() == {"count": 10_000}
                assert await receive_all(pipe) == samples(5000)
                with pytest.raises(trio.EndOfChannel):
                    await pipe.receive()

    async def test_a_sender_that_ends_and_leaves_at_once_loses_nothing_to_a_slow_reader(
        self, net: Net
    ) -> None:
        # The sender ENDs and closes while the reader is still draining, so the reader's
        # RESUMEs meet a closed socket: that write error must not cut the reading side.
        count = 4_000
        pad = "x" * 1000

        async def send_end_and_leave(pipe: FramedPipe) -> None:
            for start in range(0, count, 500):
                await pipe.send_batch([(i, pad) for i in range(start, start + 500)])
            await pipe.end()

        with trio.fail_after(HANG_GUARD * 3):
            async with net.listen(handler=send_end_and_leave) as listener:
                for _ in range(5):
                    got: list[int] = []
                    async with net.connect(listener, high_water=64) as pipe:
                        while True:
                            try:
                                got.extend(i for i, _ in await pipe.receive_batch(16))
                            except trio.EndOfChannel:
                                break
                            await trio.lowlevel.checkpoint()  # a slow reader: others run
                    assert got == list(range(count))

    # -- serving several peers --------------------------------------------------------

    async def test_handler_serves_several_peers_at_once(self, net: Net) -> None:
        peers = 5
        all_connected = trio.Event()
        connected = 0
        results: dict[int, list[Any]] = {}

        async def client(listener: Listener, k: int) -> None:
            nonlocal connected
            async with net.connect(listener) as pipe:
                connected += 1
                if connected == peers:
                    assert listener.peers == peers
                    all_connected.set()
                await all_connected.wait()
                await pipe.send_batch([f"{k}:{i}" for i in range(500)])
                await pipe.end()
                results[k] = await receive_all(pipe)

        with trio.fail_after(HANG_GUARD):
            async with net.listen(handler=echo) as listener, trio.open_nursery() as nursery:
                for k in range(peers):
                    nursery.start_soon(client, listener, k)
        assert results == {k: [f"{k}:{i}" for i in range(500)] for k in range(peers)}
        assert listener.accepted == peers
        assert listener.refused == 0

    async def test_accept_hands_out_one_pipe_per_peer(self, net: Net) -> None:
        async def serve_one(pipe: FramedPipe) -> None:
            async with pipe:
                async for batch in pipe.batches():
                    await pipe.send_batch([(pipe.peer["name"], m) for m in batch])

        async def client(listener: Listener, k: int) -> None:
            async with net.connect(listener, name=f"client{k}") as pipe:
                await pipe.send_batch(list(range(100)))
                await pipe.end()
                assert await receive_all(pipe) == [[f"client{k}", i] for i in range(100)]

        with trio.fail_after(HANG_GUARD):
            async with net.listen() as listener, trio.open_nursery() as nursery:
                for k in range(3):
                    nursery.start_soon(client, listener, k)
                served = 0
                async for pipe in listener:
                    nursery.start_soon(serve_one, pipe)
                    served += 1
                    if served == 3:
                        break
                nursery.start_soon(client, listener, 3)
                nursery.start_soon(serve_one, await listener.accept())
        with pytest.raises(trio.ClosedResourceError):
            await listener.accept()

    # -- refusals ---------------------------------------------------------------------

    async def test_wrong_token_is_refused_while_other_peers_keep_working(self, net: Net) -> None:
        with trio.fail_after(HANG_GUARD):
            async with (
                net.listen(handler=echo, token="s3cret") as listener,
                net.connect(listener, token="s3cret") as before,
            ):
                assert await exchange(before, "one") == "one"
                with pytest.raises(RemoteError) as info:
                    async with net.connect(listener, token="guessed"):
                        pytest.fail("connected with a wrong token")
                assert info.value.kind == "auth_failed"
                assert "invalid token" in str(info.value)
                refusal = await listener.wait_refused()
                assert refusal.kind == "auth_failed"
                assert "guessed" not in refusal.reason
                assert await exchange(before, "two") == "two"
                async with net.connect(listener, token="s3cret") as after:
                    assert await exchange(after, "three") == "three"
                assert listener.refused == 1

    async def test_missing_token_is_refused_while_other_peers_keep_working(self, net: Net) -> None:
        with trio.fail_after(HANG_GUARD):
            async with (
                net.listen(handler=echo, token="s3cret") as listener,
                net.connect(listener, token="s3cret") as other,
            ):
                with pytest.raises(RemoteError) as info:
                    async with net.connect(listener):
                        pytest.fail("connected without the token")
                assert info.value.kind == "auth_failed"
                assert "no token" in info.value.message
                assert (await listener.wait_refused()).kind == "auth_failed"
                assert await exchange(other, "still served") == "still served"

    async def test_sending_more_than_the_peer_max_frame_raises_locally(self, net: Net) -> None:
        with trio.fail_after(HANG_GUARD):
            async with (
                net.listen(handler=echo, max_frame=4096) as listener,
                net.connect(listener) as pipe,
            ):
                assert pipe.peer["max_frame"] == 4096
                with pytest.raises(ProtocolError) as info:
                    await pipe.send(b"x" * 5000)
                assert info.value.kind == "oversize"
                with pytest.raises(ProtocolError):
                    await pipe.send_batch(["fits", b"x" * 5000])
                # Nothing was sent and the pipe still works.
                assert await exchange(pipe, b"y" * 4000) == b"y" * 4000
                await pipe.end()
                assert await receive_all(pipe) == []

    async def test_peer_ignoring_max_frame_is_disconnected_and_others_unaffected(
        self, net: Net
    ) -> None:
        failures: list[BaseException] = []
        failed = trio.Event()

        async def guarded_echo(pipe: FramedPipe) -> None:
            try:
                await echo(pipe)
            except ProtocolError as exc:
                failures.append(exc)
                failed.set()
                raise

        with trio.fail_after(HANG_GUARD):
            async with (
                net.listen(handler=guarded_echo, max_frame=4096) as listener,
                net.connect(listener) as other,
                net.connect(listener, max_frame=1 << 20) as rogue,
            ):
                rogue.conn.peer_max_frame = 1 << 20  # a peer that ignores the announced limit
                await rogue.send(b"x" * 10_000)
                with pytest.raises(trio.BrokenResourceError) as info:
                    await rogue.receive()
                self.check_oversize_seen_by_sender(info.value)
                await failed.wait()
                assert [getattr(e, "kind", None) for e in failures] == ["oversize"]
                assert await exchange(other, "unaffected") == "unaffected"

    def check_oversize_seen_by_sender(self, exc: BaseException) -> None:
        """What the sender of an oversize frame sees: the listener's ERROR."""
        assert isinstance(exc, RemoteError), repr(exc)
        assert exc.kind == "oversize"
        assert "4096" in exc.message

    async def test_oversize_hello_is_refused_from_the_header(self, net: Net) -> None:
        with trio.fail_after(HANG_GUARD):
            async with net.listen(handler=echo) as listener, net.raw(listener) as raw:
                # A header announcing 1 GiB; the payload never comes.
                await raw.send_raw(HEADER.pack(1 << 30, FrameType.HELLO, FLAG_JSON))
                await raw.read_to_end()
                refusal = await listener.wait_refused()
        assert refusal.kind == "oversize"
        assert [e.kind for e in raw.errors()] == ["oversize"]

    async def test_silent_peer_is_refused_after_the_handshake_timeout(self, net: Net) -> None:
        timeout = 0.3
        with trio.fail_after(HANG_GUARD):
            async with (
                net.listen(handler=echo, handshake_timeout=timeout, max_peers=2) as listener,
                net.connect(listener) as other,
            ):
                async with net.raw(listener) as raw:
                    start = trio.current_time()
                    refusal = await listener.wait_refused()
                    assert trio.current_time() - start >= timeout * 0.9
                    await raw.read_to_end()
                assert refusal.kind == "handshake_timeout"
                assert [e.kind for e in raw.errors()] == ["handshake_timeout"]
                assert not raw.reset
                # The silent peer's slot is free again (max_peers=2), the other peer is
                # still served.
                assert listener.peers == 1
                async with net.connect(listener) as after:
                    assert await exchange(after, "after") == "after"
                assert await exchange(other, "other") == "other"

    async def test_peer_closing_before_its_hello_is_recorded(self, net: Net) -> None:
        with trio.fail_after(HANG_GUARD):
            async with net.listen(handler=echo) as listener, net.connect(listener) as other:
                async with net.raw(listener):
                    pass  # connect, then close without a word
                refusal = await listener.wait_refused()
                assert refusal.kind == "handshake"
                assert "closed before the handshake" in refusal.reason
                if self.kind != "unix":
                    assert refusal.peer.startswith(f"{LOCALHOST}:")
                assert listener.peers == 1
                assert await exchange(other, "other") == "other"

    async def test_garbage_is_refused_as_malformed_with_an_error_frame(self, net: Net) -> None:
        with trio.fail_after(HANG_GUARD):
            async with (
                net.listen(handler=echo) as listener,
                net.connect(listener) as other,
            ):
                async with net.raw(listener) as raw:
                    await raw.send_raw(GARBAGE)
                    await raw.read_to_end()
                refusal = await listener.wait_refused()
                assert refusal.kind == "malformed"
                [error] = raw.errors()
                assert error.kind == "malformed"
                assert error.message == refusal.reason
                assert not raw.reset
                assert await exchange(other, "other") == "other"

    async def test_garbage_flood_still_gets_the_error_frame(self, net: Net) -> None:
        # The sender keeps writing while the listener refuses it: the ERROR must reach
        # it all the same (not be lost to a connection reset).
        flood = GARBAGE + random.Random(8).randbytes(1 << 20)
        with trio.fail_after(HANG_GUARD):
            async with net.listen(handler=echo) as listener, net.raw(listener) as raw:
                async with trio.open_nursery() as nursery:

                    async def send() -> None:
                        # Cut short when the listener closes the connection: expected.
                        with contextlib.suppress(trio.BrokenResourceError, ConnectionClosed):
                            await raw.send_raw(flood)

                    nursery.start_soon(send)
                    await raw.read_to_end()
                    nursery.cancel_scope.cancel()
                assert (await listener.wait_refused()).kind == "malformed"
        assert [e.kind for e in raw.errors()] == ["malformed"]

    async def test_failing_handler_fails_only_its_own_peer(self, net: Net) -> None:
        async def picky(pipe: FramedPipe) -> None:
            async for batch in pipe.batches():
                if "boom" in batch:
                    raise ValueError("cannot handle boom")
                await pipe.send_batch(batch)

        with trio.fail_after(HANG_GUARD):
            async with (
                net.listen(handler=picky) as listener,
                net.connect(listener) as other,
                net.connect(listener) as victim,
            ):
                await victim.send("boom")
                with pytest.raises(RemoteError) as info:
                    await victim.receive()
                assert info.value.kind == "ValueError"
                assert info.value.message == "cannot handle boom"
                assert await exchange(other, "fine") == "fine"
                async with net.connect(listener) as after:
                    assert await exchange(after, "after") == "after"
                assert listener.refused == 0

    # -- idle timeout -----------------------------------------------------------------

    async def test_peer_that_stops_answering_is_dropped_after_the_idle_timeout(
        self, net: Net
    ) -> None:
        idle = 0.4
        with trio.fail_after(HANG_GUARD):
            async with net.listen(idle_timeout=idle) as listener, net.raw(listener) as raw:
                await raw.handshake()
                start = trio.current_time()
                async with await listener.accept() as pipe:
                    with pytest.raises(ProtocolError) as info:
                        await pipe.receive()
                    elapsed = trio.current_time() - start
                await raw.read_to_end()  # it is PINGed, then gets the ERROR, then EOF
        assert info.value.kind == "idle_timeout"
        assert idle * 0.9 <= elapsed < HANG_GUARD
        assert raw.pings() >= 1
        assert [e.kind for e in raw.errors()] == ["idle_timeout"]

    async def test_quiet_live_peer_outlives_several_idle_timeouts(self, net: Net) -> None:
        idle = 0.3
        with trio.fail_after(HANG_GUARD):
            async with (
                net.listen(idle_timeout=idle) as listener,
                net.connect(listener) as pipe,
            ):
                served = await listener.accept()
                async with served:
                    # The application is silent for three idle periods; the pipe answers
                    # the listener's PINGs by itself.
                    await trio.sleep(3 * idle)
                    assert served.last_pong == b"idle?"
                    await pipe.send("still here")
                    assert await served.receive() == "still here"
                    await served.send("so am I")
                    assert await pipe.receive() == "so am I"
                    await pipe.end()  # so that served's close has our END, not a wait for it

    async def test_with_default_settings_silent_peers_are_dropped_and_a_good_client_served(
        self, net: Net, autojump_clock: trio.testing.MockClock
    ) -> None:
        # Peers that complete their HELLO and then go silent (never answering a PING)
        # fill every slot of a listener with default settings; its default idle timeout
        # frees them, so a good client is served again. Virtual time: the guard is long.
        silent = DEFAULT_MAX_PEERS
        peers: list[RawPeer] = []

        async def silent_peer(listener: Listener, task_status: trio.TaskStatus[None]) -> None:
            async with net.raw(listener) as raw:
                peers.append(raw)
                await raw.handshake()
                task_status.started()
                await raw.read_to_end()  # answers nothing: the listener must give up on it

        # The guard is inside the listener's block: binding a Unix socket waits for a
        # thread, and meanwhile the virtual clock would jump to the guard's deadline.
        async with net.listen(handler=echo) as listener:
            with trio.fail_after(10 * DEFAULT_IDLE_TIMEOUT):
                async with trio.open_nursery() as nursery:
                    # One after the other: a burst of connects would overflow the
                    # accept backlog (a Unix socket then fails the connect).
                    for _ in range(silent):
                        await nursery.start(silent_peer, listener)
                    start = trio.current_time()
                    assert listener.peers == silent
                    with pytest.raises(RemoteError) as info:
                        async with net.connect(listener):
                            pytest.fail("a peer got in while every slot was taken")
                    assert info.value.kind == "busy"
                # Every silent peer was PINGed, then told why and closed, within 1.5
                # idle timeouts of its last frame.
                elapsed = trio.current_time() - start
                assert DEFAULT_IDLE_TIMEOUT <= elapsed <= 1.5 * DEFAULT_IDLE_TIMEOUT
                for raw in peers:
                    assert raw.pings() >= 1
                    assert [e.kind for e in raw.errors()] == ["idle_timeout"]
                await wait_until(lambda: listener.peers == 0)
                async with net.connect(listener) as good:
                    assert await exchange(good, "good") == "good"

    async def test_idle_timeout_none_turns_the_listener_default_off(
        self, net: Net, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with net.listen(idle_timeout=None) as listener:  # outside the guard: see above
            with trio.fail_after(10 * DEFAULT_IDLE_TIMEOUT):
                async with net.raw(listener) as raw:
                    await raw.handshake()
                    async with await listener.accept() as pipe:
                        await trio.sleep(5 * DEFAULT_IDLE_TIMEOUT)
                        raw.conn.send("still here")
                        await raw.send_queued()
                        assert await pipe.receive() == "still here"

    # -- max_peers --------------------------------------------------------------------

    async def test_peer_beyond_max_peers_is_refused_busy_until_a_slot_frees(self, net: Net) -> None:
        with trio.fail_after(HANG_GUARD):
            async with (
                net.listen(handler=echo, max_peers=2) as listener,
                net.connect(listener) as first,
            ):
                async with net.connect(listener) as second:
                    with pytest.raises(RemoteError) as info:
                        async with net.connect(listener):
                            pytest.fail("a third peer was accepted")
                    assert info.value.kind == "busy"
                    assert (await listener.wait_refused()).kind == "busy"
                    assert await exchange(second, "second") == "second"
                await wait_until(lambda: listener.peers == 1)
                async with net.connect(listener) as third:
                    assert await exchange(third, "third") == "third"
                assert await exchange(first, "first") == "first"

    async def test_a_connection_still_in_its_handshake_holds_a_peer_slot(self, net: Net) -> None:
        # Counted from the moment it is accepted (before TLS or a WebSocket upgrade), so
        # connections that never finish a handshake cannot pile up beyond max_peers.
        with trio.fail_after(HANG_GUARD):
            async with (
                net.listen(handler=echo, max_peers=1) as listener,
                await net.open_stream(listener),  # connected, says nothing
            ):
                await wait_until(lambda: listener.peers == 1)
                with pytest.raises(RemoteError) as info:
                    async with net.connect(listener):
                        pytest.fail("a second peer got the only slot")
                assert info.value.kind == "busy"

    # -- connecting -------------------------------------------------------------------

    async def test_reconnect_succeeds_once_the_listener_appears(self, net: Net) -> None:
        net.plan_address()
        done = trio.Event()
        replies: list[Any] = []

        async def client() -> None:
            policy = Reconnect(attempts=200, initial=0.01, factor=1.0)
            async with net.connect(reconnect=policy) as pipe:
                replies.append(await exchange(pipe, "hello"))
            done.set()

        with trio.fail_after(HANG_GUARD), count_retries() as retries:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client)
                await retries.wait(2)  # two attempts failed: nobody listens yet
                async with net.listen(handler=echo):
                    await done.wait()
        assert replies == ["hello"]
        assert retries.count >= 2

    async def test_reconnect_retries_while_the_listener_is_busy(self, net: Net) -> None:
        replies: list[Any] = []

        async def second() -> None:
            policy = Reconnect(attempts=200, initial=0.01, factor=1.0)
            async with net.connect(listener, reconnect=policy) as pipe:
                replies.append(await exchange(pipe, "second"))

        with trio.fail_after(HANG_GUARD), count_retries() as retries:
            async with (
                net.listen(handler=echo, max_peers=1) as listener,
                trio.open_nursery() as nursery,
                net.connect(listener) as first,
            ):
                nursery.start_soon(second)
                await retries.wait(1)
                assert listener.refusals[-1].kind == "busy"
                assert await exchange(first, "first") == "first"
                # The first peer left: a later attempt of the second one gets in.
        assert replies == ["second"]

    async def test_without_reconnect_a_refused_connection_raises_oserror_at_once(
        self, net: Net
    ) -> None:
        net.plan_address()
        with trio.fail_after(2), count_retries() as retries, pytest.raises(OSError):
            async with net.connect():
                pytest.fail("connected to nothing")
        assert retries.count == 0

    async def test_a_wrong_token_is_not_retried(self, net: Net) -> None:
        policy = Reconnect(attempts=5, initial=0.01)
        with trio.fail_after(HANG_GUARD), count_retries() as retries:
            async with net.listen(handler=echo, token="s3cret") as listener:
                with pytest.raises(RemoteError) as info:
                    async with net.connect(listener, token="guessed", reconnect=policy):
                        pytest.fail("connected with a wrong token")
                await listener.wait_refused()
        assert info.value.kind == "auth_failed"
        assert retries.count == 0
        assert listener.refused == 1

    async def test_connect_to_a_peer_that_never_answers_times_out(self, net: Net) -> None:
        timeout = 0.3
        with trio.fail_after(HANG_GUARD):
            async with net.black_hole() as arrived:
                start = trio.current_time()
                with pytest.raises(ProtocolError) as info:
                    async with net.connect(handshake_timeout=timeout):
                        pytest.fail("connected to a peer that never answers")
                assert timeout * 0.9 <= trio.current_time() - start < HANG_GUARD
                assert arrived.is_set()
        assert info.value.kind == "handshake_timeout"
        assert f"{timeout} s" in str(info.value)

    async def test_cancelling_a_connect_in_progress(self, net: Net, no_leaks: NoLeaks) -> None:
        with trio.fail_after(HANG_GUARD), no_leaks():
            async with net.black_hole() as arrived, trio.open_nursery() as nursery:
                outcome: list[str] = []

                async def client() -> None:
                    async with net.connect(handshake_timeout=None):
                        outcome.append("connected")
                    outcome.append("left")

                nursery.start_soon(client)
                await arrived.wait()  # its HELLO (or HTTP upgrade) is out: waiting for an answer
                nursery.cancel_scope.cancel()
        assert outcome == []

    # -- the listener's lifetime ------------------------------------------------------

    @pytest.mark.parametrize("mode", ["handler", "accept"])
    async def test_listener_exit_closes_every_peer_pipe(
        self, net: Net, mode: str, no_leaks: NoLeaks
    ) -> None:
        stop = trio.Event()
        served: list[FramedPipe] = []

        async def serve(task_status: trio.TaskStatus[Listener]) -> None:
            async with net.listen(handler=echo if mode == "handler" else None) as listener:
                task_status.started(listener)
                await stop.wait()

        with trio.fail_after(HANG_GUARD), no_leaks():
            async with trio.open_nursery() as nursery:
                listener: Listener = await nursery.start(serve)
                async with net.connect(listener) as a, net.connect(listener) as b:
                    if mode == "accept":
                        served += [await listener.accept(), await listener.accept()]
                        for pipe in served:
                            await pipe.send("hi")
                        assert [await a.receive(), await b.receive()] == ["hi", "hi"]
                    else:
                        assert await exchange(a, "a") == "a"
                        assert await exchange(b, "b") == "b"
                    stop.set()
                    for pipe in (a, b):
                        with pytest.raises(trio.BrokenResourceError):
                            await pipe.receive()
        for pipe in served:
            with pytest.raises(trio.ClosedResourceError):
                await pipe.receive()
