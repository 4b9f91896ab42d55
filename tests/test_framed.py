"""The framed pipe: pipekit/1 over trio byte streams (in-memory pairs and real sockets)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from pipekit.kernel import (
    CodecError,
    FlowControlError,
    FramedPipe,
    MessageTransport,
    PipeOptions,
    ProtocolError,
    RemoteError,
    RemoteProtocolError,
    framed_pipe,
)
from pipekit.kernel.framed import DEFAULT_CLOSE_TIMEOUT
from pipekit.kernel.protocol import (
    HEADER,
    HEADER_SIZE,
    TAKE_MAX,
    Connection,
    EndReceived,
    ErrorReceived,
    Event,
    FrameType,
    HandshakeComplete,
    MessagesReceived,
    PauseReceived,
    PongReceived,
    encode_frame,
)
from pipekit.testing import MockTransport

HANG_GUARD = 10  # seconds; a guard against hangs, never used to synchronise

StreamPair = tuple[trio.abc.Stream, trio.abc.Stream]
FramedPair = tuple[FramedPipe, FramedPipe]
OpenFramedPair = Callable[..., AbstractAsyncContextManager[FramedPair]]


class RawPeer:
    """The far end of a framed pipe, driven by hand with a protocol ``Connection``."""

    def __init__(self, stream: trio.abc.Stream, *, initiator: bool, **kw: Any) -> None:
        self.stream = stream
        self.conn = Connection(initiator=initiator, **kw)
        self.events: list[Event] = []
        self.eof = False

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def read_once(self) -> None:
        data = await self.stream.receive_some()
        if not data:
            self.eof = True
            return
        self.events.extend(self.conn.receive_data(data))

    async def handshake(self) -> None:
        await self.flush()
        while not self.conn.handshake_complete:
            await self.read_once()
            assert not self.eof, "peer closed during the handshake"
        await self.flush()

    async def read_until_eof(self) -> None:
        while not self.eof:
            await self.read_once()

    def encode_data(self, messages: Iterable[Any]) -> bytes:
        assert self.conn.codec is not None
        return encode_frame(FrameType.DATA, self.conn.codec.encode_many(messages))


@asynccontextmanager
async def honest_and_raw(
    honest_stream: trio.abc.Stream,
    raw_stream: trio.abc.Stream,
    *,
    honest_initiates: bool = True,
    **kw: Any,
) -> AsyncIterator[tuple[FramedPipe, RawPeer]]:
    """A real framed pipe facing a hand-driven peer, both past the handshake."""
    raw = RawPeer(raw_stream, initiator=not honest_initiates)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(raw.handshake)
        async with framed_pipe(honest_stream, initiator=honest_initiates, **kw) as pipe:
            await trio.testing.wait_all_tasks_blocked()
            assert raw.conn.handshake_complete
            yield pipe, raw
            nursery.cancel_scope.cancel()


async def drain(pipe: FramedPipe) -> list[Any]:
    """Receive until END."""
    out: list[Any] = []
    while True:
        try:
            out.append(await pipe.receive())
        except trio.EndOfChannel:
            return out


# -- order, codecs, half-close ---------------------------------------------------------


async def test_order_is_preserved_for_100k_messages_sent_one_by_one(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    n = 100_000
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair) as (a, b), trio.open_nursery() as nursery:
            received: list[Any] = []

            async def consume() -> None:
                received.extend(await drain(b))

            nursery.start_soon(consume)
            for i in range(n):
                await a.send(i)
            await a.end()
    assert received == list(range(n))


async def test_order_is_preserved_for_100k_messages_sent_in_batches(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    n = 100_000
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair) as (a, b), trio.open_nursery() as nursery:
            received: list[Any] = []

            async def consume() -> None:
                async for batch in b.batches():
                    received.extend(batch)

            nursery.start_soon(consume)
            for start in range(0, n, 1000):
                await a.send_batch(list(range(start, start + 1000)))
            await a.end()
    assert received == list(range(n))


SAMPLE = {
    "text": "héllo",
    "n": -12345678901,
    "f": 1.5,
    "ok": True,
    "none": None,
    "l": [1, [2, "3"]],
}


@pytest.mark.parametrize("codec", ["msgpack", "cbor", "json"])
async def test_each_codec_negotiates_and_round_trips(
    codec: str, stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair, initiator={"codecs": [codec]}) as (a, b):
            assert a.conn.codec_name == codec
            assert b.conn.codec_name == codec
            await a.send(SAMPLE)
            await a.send_batch([SAMPLE, "two", 3])
            await b.send(["back", SAMPLE])
            assert await b.receive() == SAMPLE
            assert await b.receive_batch() == [SAMPLE, "two", 3]
            assert await a.receive() == ["back", SAMPLE]


async def test_acceptor_chooses_the_first_offered_codec_it_supports(
    framed_pair: OpenFramedPair,
) -> None:
    s1, s2 = trio.testing.memory_stream_pair()
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(
            s1,
            s2,
            initiator={"codecs": ["json", "cbor", "msgpack"]},
            acceptor={"codecs": ["cbor", "msgpack"]},
        ) as (a, b):
            assert a.conn.codec_name == b.conn.codec_name == "cbor"


async def test_no_common_codec_fails_the_handshake_with_a_readable_reason() -> None:
    s1, s2 = trio.testing.memory_stream_pair()
    errors: list[BaseException] = []

    async def side(stream: trio.abc.Stream, initiator: bool, codecs: list[str]) -> None:
        try:
            async with framed_pipe(stream, initiator=initiator, codecs=codecs):
                pass
        except (ProtocolError, RemoteError) as exc:
            errors.append(exc)

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, s1, True, ["json"])
            nursery.start_soon(side, s2, False, ["msgpack"])
    assert len(errors) == 2
    assert {getattr(e, "kind", None) for e in errors} == {"codec_mismatch"}


async def test_half_close_lets_the_other_side_keep_sending(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair) as (a, b):
            await a.send("question")
            await a.end()
            assert await drain(b) == ["question"]
            for i in range(3):
                await b.send(f"answer {i}")
            await b.end()
            assert await drain(a) == ["answer 0", "answer 1", "answer 2"]


async def test_send_after_end_raises_closed_resource_error(framed_pair: OpenFramedPair) -> None:
    s1, s2 = trio.testing.memory_stream_pair()
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(s1, s2) as (a, _b):
            await a.end()
            await a.end()  # idempotent
            with pytest.raises(trio.ClosedResourceError):
                await a.send(1)


async def test_leaving_the_scope_ends_and_flushes_the_pipe() -> None:
    s1, s2 = trio.testing.memory_stream_pair()
    received: list[Any] = []

    async def acceptor() -> None:
        async with framed_pipe(s2, initiator=False) as b:
            received.extend(await drain(b))

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(acceptor)
            async with framed_pipe(s1, initiator=True) as a:
                await a.send_batch(list(range(500)))
    assert received == list(range(500))


# -- failures ----------------------------------------------------------------------------


async def test_fail_makes_the_peers_receive_raise_remote_error(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair) as (a, b):
            await a.send("before")
            await a.fail(ValueError("it broke"))
            assert await b.receive() == "before"
            with pytest.raises(RemoteError) as info:
                await b.receive()
    assert info.value.kind == "ValueError"
    assert info.value.message == "it broke"


async def test_fail_uses_the_exceptions_kind_attribute(framed_pair: OpenFramedPair) -> None:
    s1, s2 = trio.testing.memory_stream_pair()
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(s1, s2) as (a, b):
            await a.fail(ProtocolError("custom reason", kind="custom_kind"))
            with pytest.raises(RemoteError) as info:
                await b.receive()
    assert (info.value.kind, info.value.message) == ("custom_kind", "custom reason")


async def test_body_exception_propagates_unwrapped_and_fails_the_peer() -> None:
    s1, s2 = trio.testing.memory_stream_pair()
    peer_saw: list[BaseException] = []

    async def acceptor() -> None:
        async with framed_pipe(s2, initiator=False) as b:
            try:
                await b.receive()
            except RemoteError as exc:
                peer_saw.append(exc)

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(acceptor)
            with pytest.raises(KeyError, match="oops"):
                async with framed_pipe(s1, initiator=True):
                    raise KeyError("oops")
    assert len(peer_saw) == 1
    assert isinstance(peer_saw[0], RemoteError)
    assert peer_saw[0].kind == "KeyError"


async def test_peer_closing_the_transport_without_end_raises_broken_resource(
    stream_pair: StreamPair,
) -> None:
    honest, raw_stream = stream_pair
    with trio.fail_after(HANG_GUARD):
        async with honest_and_raw(honest, raw_stream) as (pipe, raw):
            await raw.stream.send_all(raw.encode_data(["last words"]))
            await raw.stream.aclose()
            assert await pipe.receive() == "last words"
            with pytest.raises(trio.BrokenResourceError) as info:
                await pipe.receive()
            assert not isinstance(info.value, RemoteError)


async def test_handshake_timeout_raises_protocol_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    s1, _silent_peer = trio.testing.memory_stream_pair()
    start = trio.current_time()
    with pytest.raises(RemoteProtocolError) as info:
        async with framed_pipe(s1, initiator=True, handshake_timeout=7):
            pass  # pragma: no cover - never reached
    assert info.value.kind == "handshake_timeout"
    assert 7 <= trio.current_time() - start < 9


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"idle_timeout": 0}, ValueError),
        ({"high_water": 0}, ValueError),
        ({"coalesce": 1}, TypeError),
    ],
)
async def test_options_are_checked_before_anything_runs(
    options: dict[str, Any], error: type[Exception]
) -> None:
    s1, _silent_peer = trio.testing.memory_stream_pair()
    with pytest.raises(error):
        async with framed_pipe(s1, initiator=True, **options):
            pass  # pragma: no cover - never reached


async def test_one_options_dict_serves_both_ends(stream_pair: StreamPair) -> None:
    options = PipeOptions(codecs=("json",), high_water=4, send_buffer=4096, read_size=1024)
    left, right = stream_pair
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:

            async def echo() -> None:
                async with framed_pipe(right, initiator=False, **options) as pipe:
                    async for message in pipe:
                        await pipe.send(message)

            nursery.start_soon(echo)
            async with framed_pipe(left, initiator=True, **options) as pipe:
                assert pipe.conn.codec_name == "json" and pipe.name == "initiator"
                await pipe.send_batch(list(range(20)))
                await pipe.end()
                assert [message async for message in pipe] == list(range(20))


async def test_oversize_message_raises_locally_and_the_pipe_keeps_working(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair, acceptor={"max_frame": 1024}) as (a, b):
            with pytest.raises(ProtocolError) as info:
                await a.send(b"x" * 2000)
            assert info.value.kind == "oversize"
            with pytest.raises(ProtocolError):
                await a.send_batch(["small", b"y" * 2000])
            await a.send("still fine")
            await a.end()
            assert await drain(b) == ["still fine"]
            assert a.stats.messages_sent == 1


async def test_garbage_bytes_from_the_peer_raise_protocol_error_on_receive(
    stream_pair: StreamPair,
) -> None:
    honest, raw_stream = stream_pair
    with trio.fail_after(HANG_GUARD):
        async with honest_and_raw(honest, raw_stream) as (pipe, raw):
            await raw.stream.send_all(raw.encode_data([1, 2]) + b"\xde\xad\xbe\xef" * 8)
            assert await pipe.receive() == 1
            assert await pipe.receive() == 2
            with pytest.raises(ProtocolError) as info:
                await pipe.receive()
            assert info.value.kind == "malformed"
            # The garbage sender is told why and then disconnected.
            await raw.read_until_eof()
            errors = [e for e in raw.events if isinstance(e, ErrorReceived)]
            assert [e.kind for e in errors] == ["malformed"]


async def test_garbage_instead_of_hello_fails_the_handshake() -> None:
    s1, s2 = trio.testing.memory_stream_pair()
    with trio.fail_after(HANG_GUARD):
        await s2.send_all(b"GET / HTTP/1.1\r\n\r\n")
        with pytest.raises(ProtocolError):
            async with framed_pipe(s1, initiator=False):
                pass  # pragma: no cover - never reached


async def test_wrong_token_is_refused_during_the_handshake() -> None:
    s1, s2 = trio.testing.memory_stream_pair()
    errors: dict[str, BaseException] = {}

    async def side(stream: trio.abc.Stream, initiator: bool, kw: dict[str, Any]) -> None:
        try:
            async with framed_pipe(stream, initiator=initiator, **kw):
                pass
        except (ProtocolError, RemoteError) as exc:
            errors["initiator" if initiator else "acceptor"] = exc

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, s1, True, {"token": "wrong"})
            nursery.start_soon(side, s2, False, {"expected_token": "secret"})
    assert isinstance(errors["initiator"], RemoteError)
    assert errors["initiator"].kind == "auth_failed"
    assert isinstance(errors["acceptor"], ProtocolError)


async def test_receive_after_local_close_raises_closed_resource_error(
    framed_pair: OpenFramedPair,
) -> None:
    s1, s2 = trio.testing.memory_stream_pair()
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(s1, s2) as (a, _b):
            await a.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await a.receive()
            with pytest.raises(trio.ClosedResourceError):
                await a.send(1)


async def test_close_finishes_even_if_pings_keep_the_writer_busy_while_flushing() -> None:
    honest_stream, raw_stream = trio.testing.memory_stream_pair()
    ping = encode_frame(FrameType.PING, b"p")
    pings_left = 0
    pump = honest_stream.send_stream.send_all_hook
    assert pump is not None

    async def pump_then_get_pinged() -> None:
        # Each write of the honest side is answered at once by a PING, so the writer
        # finds a PONG to write right after every write: several writes back to back.
        nonlocal pings_left
        await pump()
        if pings_left:
            pings_left -= 1
            honest_stream.receive_stream.put_data(ping)
            await trio.testing.wait_all_tasks_blocked()

    honest_stream.send_stream.send_all_hook = pump_then_get_pinged
    with trio.fail_after(HANG_GUARD):
        async with honest_and_raw(honest_stream, raw_stream) as (pipe, raw):

            async def answer_end_then_close() -> None:
                while not any(isinstance(e, EndReceived) for e in raw.events):
                    await raw.read_once()
                raw.conn.end()
                await raw.flush()
                await raw.read_until_eof()
                await raw.stream.aclose()

            await pipe.send("bye")
            pings_left = 3
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_end_then_close)
                await pipe.aclose()
            assert pings_left == 0
    assert [type(e) for e in raw.events if not isinstance(e, PongReceived)] == [
        HandshakeComplete,
        MessagesReceived,
        EndReceived,
    ]
    assert sum(isinstance(e, PongReceived) for e in raw.events) == 3


# -- liveness and stats -------------------------------------------------------------------


async def test_ping_gets_a_pong_with_the_same_payload(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair) as (a, _b):
            await a.ping(b"are you there")
            await trio.testing.wait_all_tasks_blocked()
            assert a.last_pong == b"are you there"


async def test_stats_count_messages_and_bytes(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair) as (a, b):
            await a.send_batch(["x" * 100] * 10)
            await a.send("y")
            assert len([await b.receive() for _ in range(11)]) == 11
            await b.send("z")
            assert await a.receive() == "z"
            await trio.testing.wait_all_tasks_blocked()
            assert a.stats.messages_sent == 11
            assert b.stats.messages_received == 11
            assert b.stats.messages_sent == a.stats.messages_received == 1
            assert a.stats.bytes_sent > 11 * 100
            assert a.stats.bytes_sent == b.stats.bytes_received
            assert b.stats.bytes_sent == a.stats.bytes_received
            assert a.stats.queue_depth == b.stats.queue_depth == 0


# -- flow control ---------------------------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self.sent = 0
        self.finished = False


async def produce(pipe: FramedPipe, messages: Iterable[Any], counter: Counter) -> None:
    for msg in messages:
        await pipe.send(msg)
        counter.sent += 1
    counter.finished = True


def socket_buffer_bytes(*streams: trio.SocketStream) -> int:
    return sum(
        s.socket.getsockopt(socket.SOL_SOCKET, opt)
        for s in streams
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF)
    )


async def test_sender_facing_a_stalled_reader_blocks_with_bounded_buffers(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
    framed_pair: OpenFramedPair,
) -> None:
    high_water, send_buffer = 64, 4096
    message = b"m" * 100
    counter = Counter()
    with trio.fail_after(HANG_GUARD):
        async with (
            framed_pair(
                *socket_stream_pair,
                initiator={"send_buffer": send_buffer},
                acceptor={"high_water": high_water},
            ) as (a, b),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(produce, a, (message for _ in range(100_000)), counter)
            await trio.testing.wait_all_tasks_blocked()
            sent = counter.sent
            await trio.testing.wait_all_tasks_blocked()
            assert counter.sent == sent  # blocked, not merely slow
            assert not counter.finished
            assert a.conn.peer_paused
            assert b.conn.paused_peer
            assert a.conn.codec is not None
            encoded = len(a.conn.codec.encode(message))
            frame_messages = a.conn.coalesce_bytes // encoded
            assert high_water <= b.stats.queue_depth <= high_water + frame_messages
            assert a.conn.buffered_bytes <= send_buffer + encoded
            in_transit = socket_buffer_bytes(*socket_stream_pair) + send_buffer + encoded
            assert sent <= b.stats.queue_depth + in_transit // encoded
            nursery.cancel_scope.cancel()


async def test_large_messages_are_held_back_by_the_byte_high_water_mark(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
    framed_pair: OpenFramedPair,
) -> None:
    high_water_bytes, pause_slack, send_buffer = 256 * 1024, 256 * 1024, 64 * 1024
    message = b"L" * (64 * 1024)
    counter = Counter()
    with trio.fail_after(HANG_GUARD):
        async with (
            framed_pair(
                *socket_stream_pair,
                initiator={"send_buffer": send_buffer},
                acceptor={"high_water_bytes": high_water_bytes, "pause_slack": pause_slack},
            ) as (a, b),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(produce, a, (message for _ in range(10_000)), counter)
            await trio.testing.wait_all_tasks_blocked()
            sent = counter.sent
            await trio.testing.wait_all_tasks_blocked()
            assert counter.sent == sent  # blocked, far below the 8192 messages high water
            assert a.conn.peer_paused and b.conn.paused_peer
            held = b.conn.unconsumed_bytes
            assert high_water_bytes <= held <= high_water_bytes + pause_slack + len(message) + 16
            assert b.stats.queue_depth == b.conn.unconsumed < 20
            in_transit = socket_buffer_bytes(*socket_stream_pair) + send_buffer
            assert sent * len(message) <= held + in_transit + len(message)
            # Draining resumes the sender, and everything arrives.
            received = 0
            while received < 10_000:
                received += len(await b.receive_batch())
            assert counter.finished
            nursery.cancel_scope.cancel()


async def test_a_large_batch_stops_at_a_pause_within_the_peers_slack(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
    framed_pair: OpenFramedPair,
) -> None:
    # One send_batch of 16 MiB to a receiver that pauses after 256 KiB: what is written
    # after the PAUSE (the socket buffers' worth, plus what the sender had taken) stays
    # far below the 16 MiB batch, so a pause_slack of a few MiB is never exceeded.
    message = b"B" * (64 * 1024)
    batch = [message] * 256
    slack = socket_buffer_bytes(*socket_stream_pair) + 2 * TAKE_MAX + 2 * len(message)
    with trio.fail_after(HANG_GUARD):
        async with (
            framed_pair(
                *socket_stream_pair,
                acceptor={"high_water_bytes": 256 * 1024, "pause_slack": slack},
            ) as (a, b),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(a.send_batch, batch)
            await trio.testing.wait_all_tasks_blocked()
            assert a.conn.peer_paused and b.conn.paused_peer
            received = 0
            while received < len(batch):
                received += len(await b.receive_batch())  # a violation would raise here
            assert received == len(batch)
            nursery.cancel_scope.cancel()


async def test_send_batch_nowait_queues_in_order_with_the_other_sends(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
    framed_pair: OpenFramedPair,
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair) as (a, b):
            await a.send(0)
            assert a.send_batch_nowait([1, 2])
            await a.send_batch([3])
            assert a.send_batch_nowait([4])
            await a.end()
            assert await drain(b) == [0, 1, 2, 3, 4]


async def test_send_batch_nowait_raises_for_an_unencodable_batch_and_queues_none_of_it(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
    framed_pair: OpenFramedPair,
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair) as (a, b):
            with pytest.raises(CodecError):
                a.send_batch_nowait([1, object()])
            assert a.send_batch_nowait([2])
            await a.end()
            assert await drain(b) == [2]


async def test_send_batch_nowait_refuses_what_would_wait_and_queues_nothing(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
    framed_pair: OpenFramedPair,
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair, acceptor={"high_water": 4, "low_water": 2}) as (
            a,
            b,
        ):
            for _ in range(100):  # b takes nothing: it pauses a
                if a.conn.peer_paused:
                    break
                assert a.send_batch_nowait([b"x" * 100] * 4)
                await trio.testing.wait_all_tasks_blocked()
            sent = a.conn.messages_sent
            assert a.conn.peer_paused
            assert not a.send_batch_nowait(["refused"])
            assert a.conn.messages_sent == sent
            await a.end()
            got = await drain(b)
            assert not a.send_batch_nowait([1])  # ended
    assert len(got) == sent and "refused" not in got


async def test_paused_sender_resumes_when_the_reader_drains_to_low_water(
    framed_pair: OpenFramedPair,
) -> None:
    s1, s2 = trio.testing.memory_stream_pair()
    counter = Counter()
    n = 10_000
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(s1, s2, acceptor={"high_water": 16}) as (a, b):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce, a, range(n), counter)
                await trio.testing.wait_all_tasks_blocked()
                assert a.conn.peer_paused
                blocked_at = counter.sent
                assert blocked_at < n
                # Drain to just above low water (8), including what the receiver held
                # back undecoded: the sender stays paused.
                received = []
                while b.conn.held_bytes or b.stats.queue_depth > 9:
                    received.append(await b.receive())
                await trio.testing.wait_all_tasks_blocked()
                assert counter.sent == blocked_at
                assert a.conn.peer_paused
                # One more reaches low water: RESUME, and the sender moves on.
                received.append(await b.receive())
                await trio.testing.wait_all_tasks_blocked()
                assert counter.sent > blocked_at
                while len(received) < n:
                    received.append(await b.receive())
            assert received == list(range(n))
            assert counter.finished


async def test_concurrent_senders_all_resume_after_the_peer_drains(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    counters = [Counter(), Counter()]
    n = 5000
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair, acceptor={"high_water": 16}) as (a, b):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce, a, (("first", i) for i in range(n)), counters[0])
                nursery.start_soon(produce, a, (("second", i) for i in range(n)), counters[1])
                await trio.testing.wait_all_tasks_blocked()
                assert a.conn.peer_paused
                assert not any(c.finished for c in counters)
                received = [await b.receive() for _ in range(2 * n)]
            assert all(c.finished for c in counters)
    for who in ("first", "second"):
        assert [i for w, i in received if w == who] == list(range(n))


async def test_concurrent_receivers_are_all_woken_by_arriving_messages(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    got: dict[str, Any] = {}

    async def receive_one(who: str, pipe: FramedPipe) -> None:
        got[who] = await pipe.receive()

    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair) as (a, b), trio.open_nursery() as nursery:
            nursery.start_soon(receive_one, "first", b)
            nursery.start_soon(receive_one, "second", b)
            await trio.testing.wait_all_tasks_blocked()
            await a.send("one")
            await trio.testing.wait_all_tasks_blocked()
            assert len(got) == 1
            await a.send("two")
    assert sorted(got.values()) == ["one", "two"]


async def test_receive_batch_with_messages_waiting_is_a_checkpoint(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair) as (a, b):
            await a.send_batch(["x", "y"])
            await trio.testing.wait_all_tasks_blocked()
            with trio.testing.assert_checkpoints():
                assert await b.receive_batch() == ["x", "y"]


async def test_receive_batch_in_a_cancelled_scope_raises_and_keeps_the_messages(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair) as (a, b):
            await a.send("kept")
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                scope.cancel()
                await b.receive_batch()
            assert scope.cancelled_caught
            assert await b.receive_batch() == ["kept"]


async def test_concurrent_batch_receivers_never_get_an_empty_batch(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    batches: list[list[Any]] = []

    async def receive_one(pipe: FramedPipe) -> None:
        batches.append(await pipe.receive_batch())

    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair) as (a, b):
            await a.send("only")
            await trio.testing.wait_all_tasks_blocked()
            async with trio.open_nursery() as nursery:
                # Both see the message waiting; the one that yields second must wait.
                nursery.start_soon(receive_one, b)
                nursery.start_soon(receive_one, b)
                await trio.testing.wait_all_tasks_blocked()
                assert batches == [["only"]]
                await a.send("next")
    assert batches == [["only"], ["next"]]


async def test_end_sent_while_the_peer_is_paused_still_delivers_everything(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair, acceptor={"high_water": 16}) as (a, b):
            await a.send_batch(list(range(100)))
            await trio.testing.wait_all_tasks_blocked()
            assert a.conn.peer_paused
            await a.end()
            await trio.testing.wait_all_tasks_blocked()
            assert a.conn.peer_paused
            # 16 decoded (high water), the rest held back encoded until it is wanted.
            assert b.stats.queue_depth == 16 and b.conn.held_bytes
            assert await drain(b) == list(range(100))
            with pytest.raises(trio.EndOfChannel):
                await b.receive()


async def test_fail_sent_while_the_peer_is_paused_still_delivers_everything_first(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair, acceptor={"high_water": 16}) as (a, b):
            await a.send_batch(list(range(100)))
            await trio.testing.wait_all_tasks_blocked()
            assert a.conn.peer_paused
            await a.fail(RuntimeError("gave up"))
            received = []
            with pytest.raises(RemoteError) as info:
                while True:
                    received.append(await b.receive())
            assert received == list(range(100))
            assert (info.value.kind, info.value.message) == ("RuntimeError", "gave up")


async def test_producer_loop_ending_after_backpressure_delivers_everything(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    counter = Counter()
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair, acceptor={"high_water": 16}) as (a, b):
            async with trio.open_nursery() as nursery:

                async def produce_and_end() -> None:
                    await produce(a, range(10_000), counter)
                    await a.end()

                nursery.start_soon(produce_and_end)
                await trio.testing.wait_all_tasks_blocked()
                assert a.conn.peer_paused
                assert not counter.finished
                assert await drain(b) == list(range(10_000))
            assert counter.finished


async def test_peer_ignoring_pause_is_disconnected_for_violating_flow_control(
    stream_pair: StreamPair,
) -> None:
    honest_stream, raw_stream = stream_pair
    high_water, pause_slack = 8, 4096
    frames_written = 0
    with trio.fail_after(HANG_GUARD):
        async with honest_and_raw(
            honest_stream,
            raw_stream,
            honest_initiates=False,
            high_water=high_water,
            pause_slack=pause_slack,
        ) as (pipe, raw):
            frame = raw.encode_data([b"v" * 100] * 10)  # ~1 KiB, 10 messages

            async def flood() -> None:
                nonlocal frames_written
                try:
                    while not raw.eof:
                        await raw.stream.send_all(frame)
                        frames_written += 1
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                # The honest side must hang up on us: EOF, or - on a socket, since it
                # closes with our unread DATA still queued - a connection reset.
                with contextlib.suppress(trio.BrokenResourceError):
                    await raw.read_until_eof()
            kinds = [type(e) for e in raw.events]
            assert PauseReceived in kinds
            errors = [e for e in raw.events if isinstance(e, ErrorReceived)]
            assert len(errors) == 1
            assert errors[0].kind == "flow_control"
            assert "flow control violated" in errors[0].message
            assert kinds.index(PauseReceived) < kinds.index(ErrorReceived)
            assert kinds[-1] is ErrorReceived  # and then the disconnect

            # Memory stayed bounded: high water + the frame that crossed it + the slack.
            frame_msgs = 10
            slack_msgs = (pause_slack // (len(frame) - 8) + 1) * frame_msgs
            assert pipe.stats.queue_depth <= high_water + frame_msgs + slack_msgs
            assert pipe.stats.bytes_received <= 64 * 1024

            # The honest reader gets what was accepted, then the violation.
            drained = 0
            with pytest.raises(FlowControlError) as info:
                while True:
                    await pipe.receive()
                    drained += 1
            assert "flow control violated" in str(info.value)
            assert info.value.kind == "flow_control"
            assert drained <= high_water + frame_msgs + slack_msgs


# -- memory ----------------------------------------------------------------------------------


async def test_stalled_reader_offered_a_million_messages_keeps_rss_flat(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
    framed_pair: OpenFramedPair,
    rss: Callable[[], int],
) -> None:
    counter = Counter()
    # Lazily generated distinct ~100-byte messages: ~100 MB if they were all buffered.
    messages = (i.to_bytes(8, "big") * 12 for i in range(1_000_000))
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair) as (a, b), trio.open_nursery() as nursery:
            before = rss()
            nursery.start_soon(produce, a, messages, counter)
            await trio.testing.wait_all_tasks_blocked()
            grown = rss() - before
            assert a.conn.peer_paused
            assert not counter.finished
            assert counter.sent < 100_000
            assert b.stats.queue_depth >= b.conn.high_water
            nursery.cancel_scope.cancel()
    assert grown < 20 * 1024 * 1024


async def _read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def test_acceptor_handshake_timeout_tells_the_silent_peer_why(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    with pytest.raises(ProtocolError) as info:
        async with framed_pipe(ours, initiator=False, handshake_timeout=3):
            pass  # pragma: no cover - never reached
    assert info.value.kind == "handshake_timeout"
    peer = Connection(initiator=True)
    events = peer.receive_data(await _read_all(theirs))
    assert [type(e) for e in events] == [ErrorReceived]
    error = events[0]
    assert isinstance(error, ErrorReceived)
    assert error.kind == "handshake_timeout"


async def test_error_for_a_violation_reaches_the_peer_even_if_the_body_handles_it() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    peer = Connection(initiator=True)
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def misbehave() -> None:
                await theirs.send_all(peer.data_to_send())
                peer.receive_data(await theirs.receive_some())  # the answer HELLO
                await theirs.send_all(b"\x00\x00\x00\x00\x00\x63\x00\x00")  # type 99
                got.append(await _read_all(theirs))

            nursery.start_soon(misbehave)
            async with framed_pipe(ours, initiator=False) as pipe:
                with pytest.raises(ProtocolError):
                    await pipe.receive()
                # Handled: the body leaves normally, at once.
    events = peer.receive_data(got[0])
    assert [type(e) for e in events] == [ErrorReceived]
    error = events[0]
    assert isinstance(error, ErrorReceived)
    assert error.kind == "malformed"
    assert "unknown frame type 99" in error.message


async def test_a_peer_that_pauses_and_closes_breaks_the_sender_instead_of_hanging() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    peer = Connection(initiator=False, high_water=1)
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:

            async def pause_then_close() -> None:
                peer.receive_data(await theirs.receive_some())  # our HELLO
                await theirs.send_all(peer.data_to_send())  # the answer
                while not peer.paused_peer:  # read DATA until the peer pauses us
                    peer.receive_data(await theirs.receive_some())
                await theirs.send_all(peer.data_to_send())  # PAUSE
                await theirs.send_eof()  # gone for good: no RESUME will ever come

            nursery.start_soon(pause_then_close)
            with pytest.raises(trio.BrokenResourceError, match="paused this pipe and then closed"):
                async with framed_pipe(ours, initiator=True) as pipe:
                    for i in range(100_000):
                        await pipe.send(i)


async def test_a_failed_write_leaves_what_the_peer_sent_readable_to_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = MockTransport(capacity=None)
    to_receiver, to_sender = transport.wires
    with trio.fail_after(HANG_GUARD):
        async with honest_and_raw(transport.right, transport.left, honest_initiates=False) as (
            receiver,
            sender,
        ):
            to_receiver.pause()  # what the sender writes now stays in transit
            sender.conn.send_many(range(1000))
            sender.conn.end()
            await sender.flush()
            to_sender.cut("broken")  # the sender is gone: the receiver's writes fail
            await receiver.ping(b"anyone?")
            await trio.testing.wait_all_tasks_blocked()
            to_receiver.resume()
            assert await drain(receiver) == list(range(1000))
            # The write failure is reported once the reader has taken what arrived, or
            # after a bounded wait (1 s) when, as here, the transport never reaches EOF.
            await trio.sleep(2)
            with pytest.raises(trio.BrokenResourceError, match="transport failed"):
                await receiver.send("reply")


async def test_a_pause_written_after_the_peer_closed_still_delivers_everything_it_sent(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    honest, raw_stream = socket_stream_pair
    with trio.fail_after(HANG_GUARD):
        async with honest_and_raw(
            honest, raw_stream, honest_initiates=False, high_water=16, read_size=4096
        ) as (receiver, sender):
            # The sender writes everything and END, then closes its socket before the
            # receiver has read any of it: the PAUSE the first read triggers meets EPIPE.
            sender.conn.send_many(range(5000))
            sender.conn.end()
            data = sender.conn.data_to_send()
            sock = raw_stream.socket
            assert os.write(sock.fileno(), data) == len(data)
            sock.close()
            assert await drain(receiver) == list(range(5000))


# -- idle timeout ----------------------------------------------------------------------


async def test_idle_timeout_disconnects_a_peer_that_stays_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    honest, raw_stream = trio.testing.memory_stream_pair()
    async with honest_and_raw(honest, raw_stream, idle_timeout=30) as (pipe, raw):
        # The raw peer never reads again, so it answers no PING.
        with trio.fail_after(60), pytest.raises(ProtocolError) as info:
            await pipe.receive()
        assert info.value.kind == "idle_timeout"
        assert "30 s" in str(info.value)
        assert trio.current_time() >= 30
        await raw.read_until_eof()
    errors = [e for e in raw.events if isinstance(e, ErrorReceived)]
    assert [e.kind for e in errors] == ["idle_timeout"]


async def test_idle_timeout_keeps_a_quiet_but_live_peer_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def quiet_peer() -> None:
            async with framed_pipe(right, initiator=False) as peer:
                # It sends nothing for 10 idle periods, then one message.
                await trio.sleep(100)
                await peer.send("still here")

        nursery.start_soon(quiet_peer)
        async with framed_pipe(left, initiator=True, idle_timeout=10) as pipe:
            with trio.fail_after(200):
                assert await pipe.receive() == "still here"
            assert trio.current_time() >= 100


# -- message transports ----------------------------------------------------------------


class ChannelTransport(MessageTransport):
    """Whole messages over a pair of trio memory channels (a stand-in for WebSocket)."""

    def __init__(
        self,
        send: trio.MemorySendChannel[bytes | str],
        receive: trio.MemoryReceiveChannel[bytes | str],
    ) -> None:
        self.send = send
        self.receive = receive
        self.sent: list[bytes] = []

    async def send_message(self, frame: bytes) -> None:
        self.sent.append(frame)
        try:
            await self.send.send(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise trio.BrokenResourceError("channel closed") from exc

    async def receive_message(self) -> bytes | None:
        try:
            message = await self.receive.receive()
        except trio.EndOfChannel:
            return None
        if isinstance(message, str):
            raise ProtocolError("text message", kind="malformed")
        return message

    async def aclose(self) -> None:
        await self.send.aclose()
        await self.receive.aclose()


def channel_transports() -> tuple[ChannelTransport, ChannelTransport]:
    a_send, b_receive = trio.open_memory_channel[bytes | str](16)
    b_send, a_receive = trio.open_memory_channel[bytes | str](16)
    return ChannelTransport(a_send, a_receive), ChannelTransport(b_send, b_receive)


async def test_message_transport_carries_one_frame_per_message() -> None:
    left, right = channel_transports()
    async with trio.open_nursery() as nursery:

        async def echo() -> None:
            async with framed_pipe(right, initiator=False) as peer:
                async for batch in peer.batches():
                    await peer.send_batch(batch)

        nursery.start_soon(echo)
        async with framed_pipe(left, initiator=True) as pipe:
            await pipe.send_batch(list(range(20_000)))
            await pipe.end()
            with trio.fail_after(HANG_GUARD):
                assert await drain(pipe) == list(range(20_000))
    for frame in left.sent + right.sent:
        (length, _, _) = HEADER.unpack_from(frame)
        assert len(frame) == HEADER_SIZE + length


async def test_text_message_on_a_message_transport_is_refused_as_malformed() -> None:
    left, right = channel_transports()
    async with trio.open_nursery() as nursery:

        async def rude() -> None:
            raw = Connection(initiator=False)
            raw.receive_frame(await right.receive.receive())  # type: ignore[arg-type]
            for frame in raw.frames_to_send():
                await right.send.send(frame)
            await right.send.send("not a frame")

        nursery.start_soon(rude)
        async with framed_pipe(left, initiator=True) as pipe:
            with trio.fail_after(HANG_GUARD), pytest.raises(ProtocolError) as info:
                await pipe.receive()
            assert info.value.kind == "malformed"
            assert "text message" in str(info.value)


# -- vectored writes -------------------------------------------------------------------


async def test_large_bytes_over_a_socket_with_small_buffers_arrive_intact() -> None:
    """Large messages go out with sendmsg, by reference; small kernel buffers force
    partial writes, which must resume exactly where they stopped."""
    left, right = socket.socketpair()
    for sock in (left, right):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    blobs = [bytes([i]) * (100_000 + i * 7919) for i in range(12)]
    a_stream = trio.SocketStream(trio.socket.from_stdlib_socket(left))
    b_stream = trio.SocketStream(trio.socket.from_stdlib_socket(right))
    async with trio.open_nursery() as nursery:
        received: list[Any] = []

        async def receiver() -> None:
            async with framed_pipe(b_stream, initiator=False) as pipe:
                received.extend(await drain(pipe))

        nursery.start_soon(receiver)
        async with framed_pipe(a_stream, initiator=True) as pipe:
            for i, blob in enumerate(blobs):
                await pipe.send(blob)
                await pipe.send(i)
    assert received == [x for i, blob in enumerate(blobs) for x in (blob, i)]


# -- large messages read straight into their own bytes ---------------------------------


async def test_large_messages_among_small_ones_arrive_in_order_and_counted(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
    framed_pair: OpenFramedPair,
) -> None:
    sent: list[Any] = [b"a" * 200_000, "x", b"b" * (1 << 20), b"c" * 150_000, 7]
    sent += [b"d" * 131_072, b"e" * 131_072, {"k": b"f" * 200_000}, b"g" * 70_000]
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair) as (a, b):
            for message in sent:
                await a.send(message)
            assert [await b.receive() for _ in sent] == sent
            assert b.stats.bytes_received == a.stats.bytes_sent
            assert b.stats.messages_received == len(sent)


@pytest.mark.parametrize("cut", [HEADER_SIZE + 2, HEADER_SIZE + 5, 100_000])
async def test_a_large_message_whose_bytes_arrive_in_two_parts_is_read_intact(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream], cut: int
) -> None:
    left, right = socket_stream_pair
    first, second = b"1" * 200_000, bytes(range(256)) * 1000
    with trio.fail_after(HANG_GUARD):
        async with honest_and_raw(left, right, honest_initiates=False) as (pipe, peer):
            peer.conn.send(first)
            peer.conn.send(second)
            data = peer.conn.data_to_send()
            split = len(data) - len(second) - HEADER_SIZE - 5
            await right.send_all(data[:split])
            assert await pipe.receive() == first
            await trio.testing.wait_all_tasks_blocked()
            assert pipe.conn.large_next  # the next frame is read straight if it can be
            await right.send_all(data[split : split + cut])
            await trio.testing.wait_all_tasks_blocked()  # the reader read what came
            await right.send_all(data[split + cut :])
            assert await pipe.receive() == second
            assert pipe.stats.bytes_received == peer.conn.bytes_sent


async def test_a_connection_closed_after_a_large_message_head_is_reported_as_cut(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    left, right = socket_stream_pair
    with trio.fail_after(HANG_GUARD):
        async with honest_and_raw(left, right, honest_initiates=False, close_timeout=0) as (
            pipe,
            peer,
        ):
            peer.conn.send(b"1" * 200_000)
            peer.conn.send(b"2" * 200_000)
            data = peer.conn.data_to_send()
            await right.send_all(data[:-200_000])  # the second frame's head alone
            assert await pipe.receive() == b"1" * 200_000
            await trio.testing.wait_all_tasks_blocked()
            await right.send_eof()
            with pytest.raises(RemoteProtocolError, match="inside a frame"):
                await pipe.receive()


# -- writes by send itself -------------------------------------------------------------


async def test_a_large_message_sent_while_the_writer_is_idle_is_written_by_send_itself(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
    framed_pair: OpenFramedPair,
) -> None:
    blob = bytes(range(256)) * 400  # 100 KiB: fits the socket buffer
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair) as (a, b):
            await trio.testing.wait_all_tasks_blocked()  # the writer is idle
            sent_before = a.stats.bytes_sent
            await a.send(blob)
            # send() did not yield, so the writer cannot have written it.
            assert a.conn.buffered_bytes == 0
            assert a.stats.bytes_sent - sent_before > len(blob)
            assert await b.receive() == blob


async def test_a_small_message_is_left_to_the_writer_to_coalesce(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
    framed_pair: OpenFramedPair,
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair) as (a, b):
            await trio.testing.wait_all_tasks_blocked()
            await a.send("small")
            await a.send("too")
            assert a.conn.buffered_bytes > 0
            assert [await b.receive(), await b.receive()] == ["small", "too"]


async def test_what_the_socket_does_not_take_is_finished_by_the_writer_in_order(
    framed_pair: OpenFramedPair,
) -> None:
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    blob = bytes(range(256)) * 4096  # 1 MiB: far more than the socket takes at once
    a_stream = trio.SocketStream(trio.socket.from_stdlib_socket(left))
    b_stream = trio.SocketStream(trio.socket.from_stdlib_socket(right))
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(a_stream, b_stream) as (a, b):
            await trio.testing.wait_all_tasks_blocked()
            await a.send(blob)
            assert 0 < a.conn.buffered_bytes < len(blob)  # part written, the rest queued
            await a.send("after")
            assert await b.receive() == blob
            assert await b.receive() == "after"


async def test_sends_after_a_write_the_socket_did_not_take_whole_are_left_to_the_writer(
    framed_pair: OpenFramedPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the socket stopped taking a send's own write, the sends that follow queue
    for the writer (which waits for room) instead of each trying the full socket."""
    from pipekit.kernel._transport import write_some

    writes: list[int] = []

    def counted(sock: Any, pieces: Any) -> int:
        writes.append(written := write_some(sock, pieces))
        return written

    monkeypatch.setattr("pipekit.kernel._framedpipe.write_some", counted)
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    first = b"f" * (256 * 1024)  # far more than the socket takes at once
    rest = [bytes([i]) * (64 * 1024) for i in range(3)]
    a_stream = trio.SocketStream(trio.socket.from_stdlib_socket(left))
    b_stream = trio.SocketStream(trio.socket.from_stdlib_socket(right))
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(a_stream, b_stream) as (a, b):
            await trio.testing.wait_all_tasks_blocked()
            writes.clear()
            for blob in [first, *rest]:
                await a.send(blob)
            assert len(writes) == 1 and 0 < writes[0] < len(first)
            for blob in [first, *rest]:
                assert await b.receive() == blob


async def test_send_writes_at_most_send_buffer_bytes_between_two_yields(
    framed_pair: OpenFramedPair,
) -> None:
    """The reader must get to run and see a PAUSE: between two yields send() writes by
    itself at most ``send_buffer`` bytes (and the message that crossed it), as much as it
    could have queued; the writer may write its queue in the same turn."""
    send_buffer = 128 * 1024
    blob = b"y" * (64 * 1024)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    per_slice: list[int] = []
    with trio.fail_after(HANG_GUARD):
        async with (
            framed_pair(client, server, initiator={"send_buffer": send_buffer}) as (a, b),
            trio.open_nursery() as nursery,
        ):

            async def consume() -> None:
                while await b.receive_batch():
                    pass

            async def watch() -> None:
                last = a.stats.bytes_sent
                while True:
                    await trio.lowlevel.checkpoint()
                    per_slice.append(a.stats.bytes_sent - last)
                    last = a.stats.bytes_sent

            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(watch)
            for _ in range(500):
                await a.send(blob)
            nursery.cancel_scope.cancel()
    frame = len(blob) + 64
    assert max(per_slice) <= 2 * (send_buffer + frame)


async def test_a_large_send_to_a_peer_that_closed_breaks_the_pipe_with_a_trio_error(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    honest, raw_stream = socket_stream_pair
    with trio.fail_after(HANG_GUARD):
        async with honest_and_raw(honest, raw_stream) as (pipe, raw):
            await raw.stream.aclose()
            with pytest.raises(trio.BrokenResourceError) as info:
                for _ in range(100):
                    await pipe.send(b"z" * 100_000)
            assert "transport failed" in str(info.value)


async def test_idle_timeout_drops_a_peer_that_paused_us_ended_and_went_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    honest, raw_stream = trio.testing.memory_stream_pair()
    async with honest_and_raw(honest, raw_stream, idle_timeout=30) as (pipe, raw):
        # The peer pauses us, ends its own direction and is never heard of again: its
        # END must not switch the idle timeout off, or it holds us (and a slot) forever.
        await raw.stream.send_all(encode_frame(FrameType.PAUSE) + encode_frame(FrameType.END))
        with pytest.raises(trio.EndOfChannel):
            await pipe.receive()
        with (
            trio.fail_after(60),
            pytest.raises(trio.BrokenResourceError, match="nothing received"),
        ):
            await pipe.send("held back by the PAUSE")
        assert trio.current_time() >= 30


# -- closing: the sender is told of loss (docs/protocol.md section 5) --------------------


@asynccontextmanager
async def tcp_stream_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    """Both ends of a real TCP connection on 127.0.0.1 (resets behave as on a network)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listeners[0].accept()
        try:
            yield client, server
        finally:
            await trio.aclose_forcefully(client)
            await trio.aclose_forcefully(server)
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_leaving_the_block_after_the_peer_vanished_without_end_raises() -> None:
    honest, raw_stream = trio.testing.memory_stream_pair()
    raw = RawPeer(raw_stream, initiator=False)
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(raw.handshake)
            with pytest.raises(trio.BrokenResourceError) as info:
                async with framed_pipe(honest, initiator=True) as pipe:
                    await pipe.send_batch(list(range(100)))
                    await trio.testing.wait_all_tasks_blocked()
                    await raw.stream.aclose()  # gone: no END, no ERROR
    assert not isinstance(info.value, RemoteError)
    assert "without END" in str(info.value)


async def test_a_peer_that_neither_ends_nor_answers_a_ping_fails_the_close_in_bounded_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    honest, raw_stream = trio.testing.memory_stream_pair()
    raw = RawPeer(raw_stream, initiator=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(raw.handshake)  # and then it is never heard of again
        start = trio.current_time()
        with trio.fail_after(60), pytest.raises(trio.BrokenResourceError) as info:
            async with framed_pipe(honest, initiator=True, close_timeout=8) as pipe:
                await pipe.send("hello?")
        assert trio.current_time() - start == pytest.approx(8)
        assert "neither ended its direction nor answered a PING within 8 s" in str(info.value)
        nursery.cancel_scope.cancel()


async def test_a_live_peer_keeping_its_direction_open_delays_the_close_by_close_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A peer that streams on (a tick a second; it never looks at its input and never
    # ENDs) is alive: it answers the PING sent half way, so the close succeeds once
    # close_timeout is up.
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def endless_producer() -> None:
            async with framed_pipe(right, initiator=False) as peer:
                for i in range(10**9):
                    await peer.send(i)
                    await trio.sleep(1)

        nursery.start_soon(endless_producer)
        start = trio.current_time()
        with trio.fail_after(60):
            async with framed_pipe(left, initiator=True) as pipe:
                await pipe.send("subscribe")
                assert await pipe.receive() == 0
        assert trio.current_time() - start == pytest.approx(DEFAULT_CLOSE_TIMEOUT)
        nursery.cancel_scope.cancel()


async def test_a_pipe_that_sent_nothing_closes_at_once_while_the_peer_streams_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def endless_producer() -> None:
            with contextlib.suppress(trio.BrokenResourceError):
                async with framed_pipe(right, initiator=False) as peer:
                    for i in range(10**9):
                        await peer.send(i)

        nursery.start_soon(endless_producer)
        start = trio.current_time()
        async with framed_pipe(left, initiator=True) as pipe:
            assert await pipe.receive() == 0
        assert trio.current_time() == start


async def test_a_failure_the_body_was_told_of_is_not_raised_again_by_the_close(
    stream_pair: StreamPair,
) -> None:
    a_stream, b_stream = stream_pair

    async def fails_after_one(stream: trio.abc.Stream) -> None:
        with contextlib.suppress(ValueError):
            async with framed_pipe(stream, initiator=False) as peer:
                await peer.receive()
                raise ValueError("no more")

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fails_after_one, b_stream)
            async with framed_pipe(a_stream, initiator=True) as pipe:
                await pipe.send_batch(list(range(10)))
                with pytest.raises(RemoteError, match="no more"):
                    await pipe.receive()
            # Left normally: the body saw the peer's ERROR; the close does not repeat it.


async def test_close_timeout_zero_reports_only_what_has_arrived(
    autojump_clock: trio.testing.MockClock,
) -> None:
    honest, raw_stream = trio.testing.memory_stream_pair()
    raw = RawPeer(raw_stream, initiator=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(raw.handshake)
        start = trio.current_time()
        async with framed_pipe(honest, initiator=True, close_timeout=0) as pipe:
            await pipe.send("fire and forget")
        assert trio.current_time() == start
        nursery.cancel_scope.cancel()


async def test_an_end_held_back_by_a_pause_is_written_before_the_transport_is_half_closed(
    stream_pair: StreamPair, framed_pair: OpenFramedPair
) -> None:
    # The peer ended first; our END waits behind DATA held back by its PAUSE. Both
    # directions are closed as far as the machine knows, but nothing may be cut short.
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair, acceptor={"high_water": 16}) as (a, b):
            await b.end()
            with pytest.raises(trio.EndOfChannel):
                await a.receive()
            await a.send_batch(list(range(100)))
            await trio.testing.wait_all_tasks_blocked()
            assert a.conn.peer_paused
            await a.end()
            await trio.testing.wait_all_tasks_blocked()
            assert await drain(b) == list(range(100))


async def test_once_both_directions_are_closed_the_pipe_half_closes_and_sends_nothing_more() -> (
    None
):
    honest, raw_stream = trio.testing.memory_stream_pair()
    with trio.fail_after(HANG_GUARD):
        async with honest_and_raw(honest, raw_stream) as (pipe, raw):
            await raw.stream.send_all(encode_frame(FrameType.END))
            with pytest.raises(trio.EndOfChannel):
                await pipe.receive()
            await pipe.send("last")
            await pipe.end()
            # Still inside the block: the peer reads our END, then EOF, at once.
            await raw.read_until_eof()
            assert [type(e) for e in raw.events[-2:]] == [MessagesReceived, EndReceived]
            # A PING now (a peer breaking section 5) is not answered: nothing more is
            # written onto a transport the peer may already have closed.
            await raw.stream.send_all(encode_frame(FrameType.PING, b"late"))
            await trio.testing.wait_all_tasks_blocked()
            assert pipe.last_pong is None
            assert pipe.stats.bytes_sent == pipe.conn.bytes_sent


# -- the peer's ERROR wins over the transport error that follows it ----------------------


async def test_a_send_after_the_peer_failed_and_reset_the_connection_raises_the_peers_error() -> (
    None
):
    with trio.fail_after(HANG_GUARD):
        async with tcp_stream_pair() as (client, server):
            raw = RawPeer(server, initiator=False)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(raw.handshake)
                async with framed_pipe(client, initiator=True) as pipe:
                    await trio.testing.wait_all_tasks_blocked()
                    await pipe.send_batch(list(range(1000)))  # left unread by the peer
                    await trio.testing.wait_all_tasks_blocked()
                    raw.conn.fail("ValueError", "peer exploded")
                    await raw.flush()
                    # The peer closes with unread input and SO_LINGER 0: a reset.
                    server.socket.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    server.socket.close()
                    with pytest.raises(RemoteError) as info:
                        for _ in range(10_000):
                            await pipe.send(b"x" * 10_000)
                    assert (info.value.kind, info.value.message) == ("ValueError", "peer exploded")
                    assert isinstance(info.value.__cause__, trio.BrokenResourceError)
                    with pytest.raises(RemoteError):
                        await pipe.receive()


async def test_a_failing_side_sends_error_and_closes_without_resetting_the_connection() -> None:
    # Our body fails while the peer is still sending 1 MB we never read: the ERROR goes
    # out, we wait for the peer's END, and the peer sees the ERROR then a clean EOF -
    # never a reset, which could destroy the ERROR in flight.
    with trio.fail_after(HANG_GUARD):
        async with tcp_stream_pair() as (client, server):
            raw = RawPeer(client, initiator=True)
            seen: list[BaseException | bytes] = []

            async def peer() -> None:
                await raw.handshake()
                for i in range(100):
                    raw.conn.send(b"p" * 10_000 + bytes([i]))
                raw.conn.end()
                await raw.flush()
                try:
                    await raw.read_until_eof()
                    seen.append(b"EOF")
                    await client.send_eof()  # both directions closed: our EOF too
                except trio.BrokenResourceError as exc:
                    seen.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer)
                start = trio.current_time()
                with pytest.raises(KeyError):
                    async with framed_pipe(server, initiator=False, high_water=4) as pipe:
                        await pipe.receive()
                        raise KeyError("gave up")
                assert trio.current_time() - start < DEFAULT_CLOSE_TIMEOUT  # no timeout
    assert seen == [b"EOF"]
    errors = [e for e in raw.events if isinstance(e, ErrorReceived)]
    assert [(e.kind, e.message) for e in errors] == [("KeyError", "'gave up'")]


async def test_a_close_held_back_by_a_peer_that_stays_paused_gives_up_in_bounded_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The peer's application never reads: it paused us, and our END waits behind DATA
    # it will never take. The close must not wait forever: it reports the loss.
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def never_reads() -> None:
            async with framed_pipe(right, initiator=False, high_water=16) as peer:
                await trio.sleep_forever()
                await peer.receive()  # pragma: no cover - never reached

        nursery.start_soon(never_reads)
        start = trio.current_time()
        with trio.fail_after(60), pytest.raises(trio.BrokenResourceError, match="paused"):
            async with framed_pipe(left, initiator=True, send_buffer=1024) as pipe:
                with trio.move_on_after(1):
                    for i in range(1000):
                        await pipe.send(i)
                assert pipe.conn.peer_paused
        assert trio.current_time() - start == pytest.approx(1 + DEFAULT_CLOSE_TIMEOUT)
        nursery.cancel_scope.cancel()


async def test_a_close_waits_for_a_slow_but_steady_reader_however_long_it_takes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    got: list[int] = []
    async with trio.open_nursery() as nursery:

        async def slow_reader() -> None:
            async with framed_pipe(right, initiator=False, high_water=16) as peer:
                async for batch in peer.batches(4):
                    got.extend(batch)
                    await trio.sleep(1)  # 4 messages a second: 250 s for 1000

        nursery.start_soon(slow_reader)
        with trio.fail_after(600):
            async with framed_pipe(left, initiator=True, send_buffer=1024) as pipe:
                await pipe.send_batch(list(range(1000)))
    assert got == list(range(1000))


# -- one message at a time: direct writes, coalescing, amortised yields ------------------


def _readable_now(sock: trio.SocketStream) -> bytes:
    """What the raw socket under ``sock`` holds right now (no waiting, no checkpoint)."""
    raw = sock.socket
    chunks = []
    while True:
        try:
            chunk = os.read(raw.fileno(), 1 << 20)
        except BlockingIOError:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def test_a_lone_send_is_on_the_wire_when_send_returns(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    ours, theirs = socket_stream_pair
    with trio.fail_after(HANG_GUARD):
        async with honest_and_raw(ours, theirs) as (pipe, raw):
            await trio.testing.wait_all_tasks_blocked()
            _readable_now(theirs)  # nothing else is expected, but start clean
            await pipe.send({"n": 1})
            # No checkpoint since send returned: the writer task cannot have run.
            data = _readable_now(theirs)
            assert raw.conn.receive_data(data) == [MessagesReceived([{"n": 1}])]


async def test_sends_that_follow_without_a_yield_are_coalesced_by_the_writer(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    ours, theirs = socket_stream_pair
    with trio.fail_after(HANG_GUARD):
        async with honest_and_raw(ours, theirs) as (pipe, raw):
            await trio.testing.wait_all_tasks_blocked()
            for n in range(10):
                await pipe.send(n)
            first = _readable_now(theirs)
            assert raw.conn.receive_data(first) == [MessagesReceived([0])]
            await trio.testing.wait_all_tasks_blocked()  # the writer's turn
            rest = _readable_now(theirs)
            (length, ftype, _), size = HEADER.unpack_from(rest), len(rest)
            assert ftype == FrameType.DATA and size == HEADER_SIZE + length  # one frame
            assert raw.conn.receive_data(rest) == [MessagesReceived(list(range(1, 10)))]


async def test_after_a_reply_arrives_the_next_send_is_written_at_once_again(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    ours, theirs = socket_stream_pair
    with trio.fail_after(HANG_GUARD):
        async with honest_and_raw(ours, theirs) as (pipe, raw):
            for n in range(3):  # request / reply, three times
                await pipe.send(n)
                assert raw.conn.receive_data(_readable_now(theirs)) == [MessagesReceived([n])]
                raw.conn.send(n * 10)
                await raw.flush()
                assert await pipe.receive() == n * 10


@pytest.mark.parametrize("call", ["send", "send_batch of 1", "receive"])
async def test_a_busy_loop_of_pipe_calls_lets_other_tasks_run_within_64_calls(
    stream_pair: StreamPair, framed_pair: OpenFramedPair, call: str
) -> None:
    # The 64th call yields; trio may run the yielding task first in the next batch of
    # runnable tasks, so the other task is certain to have run by the 128th call.
    calls = 2 * 64
    ran = trio.Event()

    async def other() -> None:
        ran.set()

    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair) as (a, b):
            if call == "receive":
                await a.send_batch(list(range(calls)))
            await trio.testing.wait_all_tasks_blocked()
            if call == "receive":
                assert b.stats.queue_depth == calls
            async with trio.open_nursery() as nursery:
                nursery.start_soon(other)
                for n in range(calls):
                    if call == "send":
                        await a.send(n)
                    elif call == "receive":
                        assert await b.receive() == n
                    else:
                        await a.send_batch([n])
                    if ran.is_set():
                        break
                assert ran.is_set()


@pytest.mark.parametrize("call", ["send", "send_batch", "receive"])
async def test_a_call_in_a_cancelled_scope_raises_at_once_and_sends_or_takes_nothing(
    stream_pair: StreamPair, framed_pair: OpenFramedPair, call: str
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*stream_pair) as (a, b):
            await a.send("first")
            with trio.CancelScope() as scope:
                scope.cancel()
                if call == "send":
                    await a.send("never")
                elif call == "send_batch":
                    await a.send_batch(["never"])
                else:
                    await b.receive()
            assert scope.cancelled_caught
            await a.send("last")
            assert [await b.receive(), await b.receive()] == ["first", "last"]


# -- a thread that sends on the pipe itself (thread_sender) --------------------------------

Sockets = tuple[trio.SocketStream, trio.SocketStream]


async def test_a_thread_sender_writes_in_order_before_what_the_pipe_sends_after(
    socket_stream_pair: Sockets, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair) as (a, b):
            sender = a.thread_sender(lambda: True)
            assert sender is not None

            def in_thread() -> list[bool]:
                done = [sender.send(i) for i in range(100)]
                return [*done, sender.send_batch(list(range(100, 300)))]

            assert all(await trio.to_thread.run_sync(in_thread))
            await a.end()
            assert [m async for m in b] == list(range(300))
            assert a.stats.messages_sent == 300


async def test_a_pipe_gives_a_second_thread_sender_none(
    socket_stream_pair: Sockets, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair) as (a, _):
            assert a.thread_sender(lambda: True) is not None
            assert a.thread_sender(lambda: True) is None


async def test_a_pipe_over_a_stream_that_is_not_a_socket_has_no_thread_sender(
    framed_pair: OpenFramedPair,
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*trio.testing.memory_stream_pair()) as (a, _):
            assert a.thread_sender(lambda: True) is None


async def test_a_thread_sender_writes_large_bytes_and_small_messages_in_one_batch(
    socket_stream_pair: Sockets, framed_pair: OpenFramedPair
) -> None:
    blob = bytes(range(256)) * 1536  # 384 KiB: more than the socket takes at once
    batch = ["a", blob, {"b": 1}, blob, "c"]  # (within one take: TAKE_MAX)
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair) as (a, b):
            sender = a.thread_sender(lambda: True)
            assert sender is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, sender.send_batch, batch)
                got = [await b.receive() for _ in batch]
            assert got == batch


async def test_a_thread_batch_larger_than_one_take_is_left_to_the_pipe(
    socket_stream_pair: Sockets, framed_pair: OpenFramedPair
) -> None:
    # Written whole from the thread, it could not stop for a PAUSE: refused, nothing
    # sent, and the pipe's own send_batch (which stops between takes) sends it.
    blob = b"t" * (TAKE_MAX // 2)
    batch = ["a", blob, blob, blob, "b"]
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair) as (a, b):
            sender = a.thread_sender(lambda: True)
            assert sender is not None
            assert not await trio.to_thread.run_sync(sender.send_batch, batch)
            assert a.stats.messages_sent == 0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.send_batch, batch)
                got = [await b.receive() for _ in batch]
            assert got == batch


async def test_a_thread_batch_that_cannot_be_sent_whole_sends_none_of_it(
    socket_stream_pair: Sockets, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair, acceptor={"max_frame": 4096}) as (a, b):
            sender = a.thread_sender(lambda: True)
            assert sender is not None
            assert not await trio.to_thread.run_sync(sender.send_batch, ["x", b"y" * 5000])
            assert not await trio.to_thread.run_sync(sender.send, "z" * 5000)
            assert not await trio.to_thread.run_sync(sender.send, {1, 2})  # not encodable
            assert await trio.to_thread.run_sync(sender.send, "after")
            await a.end()
            assert [m async for m in b] == ["after"]


async def test_a_thread_sender_writes_nothing_while_the_peer_has_paused_the_pipe(
    socket_stream_pair: Sockets, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair) as (a, b):
            sender = a.thread_sender(lambda: True)
            assert sender is not None
            a.conn.receive_data(encode_frame(FrameType.PAUSE))
            assert not await trio.to_thread.run_sync(sender.send, 1)
            a.conn.receive_data(encode_frame(FrameType.RESUME))
            assert await trio.to_thread.run_sync(sender.send, 2)
            assert await b.receive() == 2


async def test_a_thread_sender_writes_nothing_while_the_pipe_has_frames_queued(
    socket_stream_pair: Sockets, framed_pair: OpenFramedPair
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair) as (a, b):
            sender = a.thread_sender(lambda: True)
            assert sender is not None
            a.conn.send("queued first")  # (not yet taken by the writer: no checkpoint)
            assert not sender.send("would overtake it")
            await a.send("then this")
            assert [await b.receive(), await b.receive()] == ["queued first", "then this"]


async def test_a_thread_sender_writes_nothing_once_the_pipe_is_closed_or_not_ready(
    socket_stream_pair: Sockets, framed_pair: OpenFramedPair
) -> None:
    ready = False
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair) as (a, _):
            sender = a.thread_sender(lambda: ready)
            assert sender is not None
            assert not await trio.to_thread.run_sync(sender.send, 1)
            ready = True
            await a.aclose()
            assert not await trio.to_thread.run_sync(sender.send, 1)


async def test_the_pipe_and_a_thread_sender_share_the_socket_frame_by_frame(
    socket_stream_pair: Sockets, framed_pair: OpenFramedPair
) -> None:
    blob = b"q" * 300_000  # larger than a socket buffer: written in several steps
    with trio.fail_after(HANG_GUARD):
        async with framed_pair(*socket_stream_pair) as (a, b):
            sender = a.thread_sender(lambda: True)
            assert sender is not None
            direct = 0

            def in_thread() -> None:
                nonlocal direct
                for i in range(40):
                    if sender.send((i, blob)):
                        direct += 1
                    else:  # the pipe's own path: ordered behind what it has queued
                        trio.from_thread.run(a.send, (i, blob))
                        trio.from_thread.run(a._flush)  # the next may go direct again

            async def ping() -> None:
                for i in range(50):
                    await a.ping(b"%d" % i)
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, in_thread)
                nursery.start_soon(ping)
                got = [await b.receive() for _ in range(40)]
            assert got == [[i, blob] for i in range(40)]
            assert direct > 0
            assert a.violation is None and b.violation is None
