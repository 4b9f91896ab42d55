"""``FramedPipe.send_nowait``: the node links' way to hand a message to a pipe from
synchronous code (a process's ``send``) without waiting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from pipekit.kernel import CodecError


async def test_send_nowait_sends_in_order_with_send(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream], framed_pair: Callable[..., Any]
) -> None:
    async with framed_pair(*socket_stream_pair) as (a, b):
        assert a.send_nowait(1)
        await a.send(2)
        assert a.send_nowait(3)
        assert [await b.receive() for _ in range(3)] == [1, 2, 3]


async def test_send_nowait_declines_while_the_peer_has_paused(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream], framed_pair: Callable[..., Any]
) -> None:
    with trio.fail_after(10):
        async with framed_pair(*socket_stream_pair, acceptor={"high_water": 1, "low_water": 0}) as (
            a,
            b,
        ):
            sent = 0
            while not a.conn.peer_paused:
                assert a.send_nowait(sent)
                sent += 1
                await trio.testing.wait_all_tasks_blocked()
            assert not a.send_nowait("declined")
            assert [await b.receive() for _ in range(sent)] == list(range(sent))


async def test_send_nowait_raises_for_an_unencodable_value_and_a_closed_pipe(
    socket_stream_pair: tuple[trio.SocketStream, trio.SocketStream], framed_pair: Callable[..., Any]
) -> None:
    async with framed_pair(*socket_stream_pair) as (a, _b):
        with pytest.raises(CodecError):
            a.send_nowait(object())
        await a.end()
        with pytest.raises(trio.ClosedResourceError):
            a.send_nowait(1)
