"""The mock transport (``pipekit.testing.mock``): a pair of trio streams with faults.

First the streams themselves (trio's generic stream checks, then each fault knob on raw
bytes), then a :func:`~pipekit.kernel.framed_pipe` on top of each fault, reacting as
the protocol says. Waiting for "everything is blocked" uses
:func:`trio.testing.wait_all_tasks_blocked` (all of it is in this trio run); timeouts
only guard against hangs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from pipekit.kernel import FramedPipe, ProtocolError, RemoteError, framed_pipe
from pipekit.kernel.codecs import get_codec
from pipekit.kernel.protocol import FrameType, encode_frame
from pipekit.testing import Frame, MockStream, MockTransport, parse_frames

HANG_GUARD = 10  # seconds; a guard against hangs, never used to synchronise


# --- the streams --------------------------------------------------------------------------


async def test_mock_streams_pass_trio_half_closeable_stream_checks() -> None:
    async def make() -> tuple[MockStream, MockStream]:
        return MockTransport().streams

    async def make_clogged() -> tuple[MockStream, MockStream]:
        transport = MockTransport(capacity=1)
        for wire in transport.wires:
            wire.inject(b"!")  # in transit and at capacity: send_all blocks until a read
        return transport.streams

    await trio.testing.check_half_closeable_stream(make, make_clogged)


async def test_mock_streams_pass_trio_checks_with_chunked_delivery() -> None:
    async def make() -> tuple[MockStream, MockStream]:
        return MockTransport(chunk_sizes=(1, 7, 4096)).streams

    await trio.testing.check_half_closeable_stream(make, None)


async def test_chunks_cap_each_receive_cycling_through_the_sizes() -> None:
    transport = MockTransport()
    transport.to_right.chunks([1, 2])
    await transport.left.send_all(b"abcdefg")
    got = [await transport.right.receive_some() for _ in range(5)]
    assert got == [b"a", b"bc", b"d", b"ef", b"g"]


async def test_pause_holds_data_and_eof_until_resume() -> None:
    transport = MockTransport()
    transport.to_right.pause()
    await transport.left.send_all(b"held")
    await transport.left.send_eof()
    got: list[bytes] = []

    async def read_all() -> None:
        while chunk := await transport.right.receive_some():
            got.append(chunk)
        got.append(b"<eof>")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        assert transport.to_right.in_transit == 4
        transport.to_right.resume()
    assert got == [b"held", b"<eof>"]


async def test_a_stalled_reader_blocks_the_writer_at_capacity() -> None:
    transport = MockTransport(capacity=4)
    transport.to_right.pause()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport.left.send_all, b"123456")
        await trio.testing.wait_all_tasks_blocked()
        assert transport.to_right.written == b"1234"  # the writer waits for room
        transport.to_right.resume()
        assert await transport.right.receive_some() == b"1234"
        assert await transport.right.receive_some() == b"56"
    assert transport.to_right.written == transport.to_right.delivered == b"123456"


async def test_injected_bytes_are_delivered_but_not_recorded_as_written() -> None:
    transport = MockTransport()
    await transport.left.send_all(b"real ")
    transport.to_right.inject(b"forged")
    assert await transport.right.receive_some() == b"real forged"
    assert transport.to_right.written == b"real "
    assert transport.to_right.delivered == b"real forged"


async def test_cut_eof_delivers_what_is_in_transit_then_eof_and_breaks_the_writer() -> None:
    transport = MockTransport()
    await transport.left.send_all(b"last words")
    transport.cut("eof")
    assert await transport.right.receive_some() == b"last words"
    assert await transport.right.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await transport.left.send_all(b"more")
    with pytest.raises(trio.BrokenResourceError):
        await transport.right.send_all(b"reply")


async def test_cut_broken_loses_what_is_in_transit_and_breaks_both_sides() -> None:
    transport = MockTransport()
    await transport.left.send_all(b"lost")
    transport.cut("broken")
    with pytest.raises(trio.BrokenResourceError):
        await transport.right.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await transport.left.send_all(b"more")
    assert transport.to_right.written == b"lost"
    assert transport.to_right.delivered == b""


async def test_cut_wakes_a_blocked_reader() -> None:
    transport = MockTransport()
    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            with pytest.raises(trio.BrokenResourceError):
                await transport.right.receive_some()

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        transport.cut("broken")


def test_parse_frames_splits_recorded_bytes_and_names_the_types() -> None:
    data = encode_frame(FrameType.PING, b"hi") + encode_frame(FrameType.END) + encode_frame(42)
    assert parse_frames(data) == [
        Frame(int(FrameType.PING), 0, b"hi"),
        Frame(int(FrameType.END), 0, b""),
        Frame(42, 0, b""),
    ]
    assert [f.kind for f in parse_frames(data)] == ["PING", "END", "UNKNOWN(42)"]


def test_parse_frames_rejects_a_partial_frame_unless_asked() -> None:
    data = encode_frame(FrameType.PING, b"hi") + encode_frame(FrameType.PING, b"cut")[:-1]
    with pytest.raises(ValueError, match="10 trailing bytes"):
        parse_frames(data)
    assert [f.payload for f in parse_frames(data, partial=True)] == [b"hi"]


# --- a framed pipe on top of each fault -----------------------------------------------------


@asynccontextmanager
async def framed_over(
    transport: MockTransport, **options: Any
) -> AsyncIterator[tuple[FramedPipe, FramedPipe]]:
    """``framed_pipe`` on both streams (left initiates); leaving closes both at once."""
    pipes: dict[str, FramedPipe] = {}
    ready = trio.Event()

    async def run(stream: MockStream, initiator: bool) -> None:
        name = "left" if initiator else "right"
        async with framed_pipe(stream, initiator=initiator, name=name, **options) as pipe:
            pipes[name] = pipe
            if len(pipes) == 2:
                ready.set()
            await trio.sleep_forever()

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, transport.left, True)
            nursery.start_soon(run, transport.right, False)
            await ready.wait()
            try:
                yield pipes["left"], pipes["right"]
            finally:
                nursery.cancel_scope.cancel()


async def receive_until_end(pipe: FramedPipe) -> list[Any]:
    return [m async for m in pipe]


MESSAGES: list[Any] = [0, "text", b"\x00\xff", [1, {"k": None}], 2.5, True, "x" * 5000]


async def test_one_byte_chunks_deliver_framed_messages_intact() -> None:
    transport = MockTransport(chunk_sizes=[1])
    async with framed_over(transport) as (left, right):
        await left.send_batch(MESSAGES)
        await left.end()
        assert await receive_until_end(right) == MESSAGES
        await right.send_batch(MESSAGES[::-1])
        await right.end()
        assert await receive_until_end(left) == MESSAGES[::-1]
    assert transport.to_right.delivered == transport.to_right.written


async def test_recorded_bytes_decode_to_the_frames_that_were_sent() -> None:
    transport = MockTransport()
    async with framed_over(transport) as (left, right):
        await left.send_batch(MESSAGES)
        await left.end()
        assert await receive_until_end(right) == MESSAGES
    frames = parse_frames(transport.to_right.written)
    kinds = [f.kind for f in frames]
    assert kinds[0] == "HELLO" and kinds[-1] == "END"
    assert set(kinds[1:-1]) == {"DATA"}
    codec = get_codec(right.conn.codec_name or "")
    decoded = [m for f in frames[1:-1] for m in codec.decode_many(f.payload)]
    assert decoded == MESSAGES
    assert json.loads(frames[0].payload)["name"] == "left"


async def test_a_stalled_peer_blocks_the_sender_until_delivery_resumes() -> None:
    transport = MockTransport(capacity=4096)
    messages = [f"message {i:05d}" + "." * 100 for i in range(2000)]
    async with framed_over(transport, send_buffer=4096) as (left, right):
        transport.to_right.pause()
        delivered_before = len(transport.to_right.delivered)
        accepted = 0

        async def produce() -> None:
            nonlocal accepted
            for m in messages:
                await left.send(m)
                accepted += 1
            await left.end()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            await trio.testing.wait_all_tasks_blocked()
            stalled_at = accepted
            assert 0 < stalled_at < len(messages)
            assert len(transport.to_right.delivered) == delivered_before
            assert transport.to_right.in_transit == 4096
            transport.to_right.resume()
            assert await receive_until_end(right) == messages
    assert left.stats.paused_seconds > 0


async def test_injected_garbage_fails_the_receiver_with_a_malformed_protocol_error() -> None:
    transport = MockTransport()
    async with framed_over(transport) as (left, right):
        await left.send_batch(["before"])
        await trio.testing.wait_all_tasks_blocked()
        transport.to_right.inject(b"\x00\x00\x00\x02\xde\xad\xbe\xef!!")  # reserved flags
        assert await right.receive() == "before"
        with pytest.raises(ProtocolError) as info:
            await right.receive()
        assert info.value.kind == "malformed"
        with pytest.raises(RemoteError) as remote:  # the peer is told why
            await left.receive()
        assert remote.value.kind == "malformed"
        with pytest.raises(trio.BrokenResourceError):
            await right.send("after")
    errors = [f for f in parse_frames(transport.to_left.written) if f.kind == "ERROR"]
    assert [json.loads(f.payload)["kind"] for f in errors] == ["malformed"]


async def test_a_forged_error_frame_is_raised_as_the_peers_remote_error() -> None:
    transport = MockTransport()
    async with framed_over(transport) as (left, right):
        await left.send("genuine")
        await trio.testing.wait_all_tasks_blocked()
        body = json.dumps({"kind": "forged", "message": "not from the peer"}).encode()
        transport.to_right.inject(encode_frame(FrameType.ERROR, body, json_flag=True))
        assert await right.receive() == "genuine"
        with pytest.raises(RemoteError) as info:
            await right.receive()
        assert (info.value.kind, info.value.message) == ("forged", "not from the peer")


async def test_a_broken_connection_makes_both_ends_raise_broken_resource_error() -> None:
    transport = MockTransport()
    async with framed_over(transport) as (left, right):
        await left.send("in transit")
        transport.cut("broken")
        with pytest.raises(trio.BrokenResourceError):
            await right.receive()
        with pytest.raises(trio.BrokenResourceError):
            for _ in range(100):  # the writer notices at its next write
                await left.send("more")
                await trio.testing.wait_all_tasks_blocked()


async def test_eof_without_end_is_a_broken_connection_not_an_end() -> None:
    transport = MockTransport()
    async with framed_over(transport) as (left, right):
        await left.send("last")
        await trio.testing.wait_all_tasks_blocked()
        transport.cut("eof")
        assert await right.receive() == "last"
        with pytest.raises(trio.BrokenResourceError, match="without END"):
            await right.receive()
