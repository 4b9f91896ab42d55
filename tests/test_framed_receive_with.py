"""``FramedPipe.receive_with``: a receive that hands what arrives while it waits to a
handler in the reader's task (the actor nodes' links take messages that way)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

Pair = tuple[trio.SocketStream, trio.SocketStream]


def taking_all(seen: list[Any], tasks: set[Any] | None = None) -> Callable[[list[Any]], int]:
    def handler(messages: list[Any]) -> int:
        seen.extend(messages)
        if tasks is not None:
            tasks.add(trio.lowlevel.current_task())
        return len(messages)

    return handler


async def test_what_arrives_while_waiting_goes_to_the_handler_in_order(
    socket_stream_pair: Pair, framed_pair: Callable[..., Any]
) -> None:
    seen: list[Any] = []
    tasks: set[Any] = set()
    with trio.fail_after(10):
        async with framed_pair(*socket_stream_pair) as (a, b), trio.open_nursery() as nursery:

            async def receive() -> None:
                with pytest.raises(trio.EndOfChannel):
                    await b.receive_with(taking_all(seen, tasks))

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            for i in range(100):
                await a.send(i)
            await a.end()
    assert seen == list(range(100))
    assert b.stats.messages_received == 100
    assert [t.name.rpartition(".")[2] for t in tasks] == ["_reader"]  # the pipe's reader


async def test_messages_queued_before_the_call_are_returned_without_the_handler(
    socket_stream_pair: Pair, framed_pair: Callable[..., Any]
) -> None:
    seen: list[Any] = []
    with trio.fail_after(10):
        async with framed_pair(*socket_stream_pair) as (a, b):
            await a.send_batch([1, 2, 3])
            while b.stats.queue_depth < 3:
                await trio.testing.wait_all_tasks_blocked()
            assert await b.receive_with(taking_all(seen)) == [1, 2, 3]
    assert seen == []


async def test_what_the_handler_leaves_is_returned_ahead_of_later_messages(
    socket_stream_pair: Pair, framed_pair: Callable[..., Any]
) -> None:
    def take_below_five(messages: list[Any]) -> int:
        for i, m in enumerate(messages):
            if m >= 5:
                return i
            seen.append(m)
        return len(messages)

    seen: list[Any] = []
    with trio.fail_after(10):
        async with framed_pair(*socket_stream_pair) as (a, b):
            async with trio.open_nursery() as nursery:
                got: list[Any] = []

                async def receive() -> None:
                    got.extend(await b.receive_with(take_below_five))

                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                await a.send_batch(list(range(8)))
            await a.send_batch([8, 9])
            while len(got) < 5:
                got.append(await b.receive())
    assert seen == [0, 1, 2, 3, 4]
    assert got == [5, 6, 7, 8, 9]


async def test_a_handler_taking_all_gets_more_than_high_water_from_one_frame(
    socket_stream_pair: Pair, framed_pair: Callable[..., Any]
) -> None:
    # 500 messages in one frame, the receiver's window 4: the rest is held encoded and
    # handed over a window at a time as the handler consumes it.
    seen: list[Any] = []
    with trio.fail_after(10):
        window = {"high_water": 4, "low_water": 1}
        async with (
            framed_pair(*socket_stream_pair, acceptor=window) as (a, b),
            trio.open_nursery() as nursery,
        ):

            async def receive() -> None:
                with pytest.raises(trio.EndOfChannel):
                    await b.receive_with(taking_all(seen))

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            await a.send_batch(list(range(500)))
            await a.end()
    assert seen == list(range(500))


async def test_a_peer_is_paused_while_the_receiver_does_not_take_what_the_handler_left(
    socket_stream_pair: Pair, framed_pair: Callable[..., Any]
) -> None:
    with trio.fail_after(10):
        async with framed_pair(*socket_stream_pair, acceptor={"high_water": 4, "low_water": 0}) as (
            a,
            b,
        ):
            async with trio.open_nursery() as nursery:
                left: list[Any] = []

                async def receive() -> None:
                    left.extend(await b.receive_with(lambda messages: 0))

                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                sent = 0
                while not a.conn.peer_paused:
                    assert sent < 1000
                    await a.send(sent)
                    sent += 1
                    await trio.testing.wait_all_tasks_blocked()
            assert left  # the handler left the first batch: the call returned it
            rest = [await b.receive() for _ in range(sent - len(left))]
            assert left + rest == list(range(sent))
            await trio.testing.wait_all_tasks_blocked()
            assert not a.conn.peer_paused  # taken: RESUMEd


async def test_an_exception_of_the_handler_is_raised_by_the_call(
    socket_stream_pair: Pair, framed_pair: Callable[..., Any]
) -> None:
    def fail(messages: list[Any]) -> int:
        raise ValueError(f"no thanks: {messages}")

    with trio.fail_after(10):
        async with framed_pair(*socket_stream_pair) as (a, b):
            async with trio.open_nursery() as nursery:

                async def receive() -> None:
                    with pytest.raises(ValueError, match=r"no thanks: \[1\]"):
                        await b.receive_with(fail)

                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                await a.send(1)
            await a.send(2)
            assert await b.receive() == 2  # the pipe goes on


async def test_a_cancelled_call_stops_the_hand_over(
    socket_stream_pair: Pair, framed_pair: Callable[..., Any]
) -> None:
    seen: list[Any] = []
    with trio.fail_after(10):
        async with framed_pair(*socket_stream_pair) as (a, b):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.receive_with, taking_all(seen))
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            await a.send(1)
            assert await b.receive() == 1
    assert seen == []


async def test_no_batch_is_handed_over_once_the_call_is_cancelled(
    socket_stream_pair: Pair, framed_pair: Callable[..., Any]
) -> None:
    # One frame of 20 messages, the window 4: the reader hands them over a window at a
    # time in one go. The handler cancels the call on the first window; the reader runs
    # on before the cancelled task does, and must hand over nothing more.
    seen: list[list[Any]] = []
    with trio.fail_after(10):
        window = {"high_water": 4, "low_water": 1}
        async with framed_pair(*socket_stream_pair, acceptor=window) as (a, b):
            scope = trio.CancelScope()

            def cancel_on_first(messages: list[Any]) -> int:
                seen.append(list(messages))
                scope.cancel()
                return len(messages)

            async def send_all() -> None:
                await trio.testing.wait_all_tasks_blocked()
                await a.send_batch(list(range(20)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_all)
                with scope:
                    await b.receive_with(cancel_on_first)
            assert scope.cancelled_caught
            assert seen == [[0, 1, 2, 3]]
            rest = [await b.receive() for _ in range(16)]
    assert rest == list(range(4, 20))


async def test_a_handler_that_cancels_the_call_and_then_fails_has_its_error_raised(
    socket_stream_pair: Pair, framed_pair: Callable[..., Any]
) -> None:
    scope = trio.CancelScope()

    def cancel_then_fail(messages: list[Any]) -> int:
        scope.cancel()
        raise RuntimeError(f"broke on {messages}")

    with trio.fail_after(10):
        async with framed_pair(*socket_stream_pair) as (a, b):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.send, 1)
                with scope, pytest.raises(RuntimeError, match=r"broke on \[1\]"):
                    await b.receive_with(cancel_then_fail)
            await a.send(2)
            assert await b.receive_with(lambda messages: 0) == [2]  # nothing stale left


async def test_a_second_concurrent_call_is_refused_as_busy(
    socket_stream_pair: Pair, framed_pair: Callable[..., Any]
) -> None:
    with trio.fail_after(10):
        async with framed_pair(*socket_stream_pair) as (a, b):
            async with trio.open_nursery() as nursery:
                got: list[Any] = []

                async def first() -> None:
                    got.extend(await b.receive_with(lambda messages: 0))

                nursery.start_soon(first)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError, match="already in receive_with"):
                    await b.receive_with(lambda messages: 0)
                await a.send(1)
            assert got == [1]  # the first call still gets what comes


async def test_a_closed_pipe_refuses_the_call(
    socket_stream_pair: Pair, framed_pair: Callable[..., Any]
) -> None:
    async with framed_pair(*socket_stream_pair) as (_a, b):
        await b.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await b.receive_with(lambda messages: len(messages))
