"""pipekit.channels: channels with trio's semantics, ``select`` (fair, cancel-safe, with
``default``) and ``after`` timeouts. Time is trio's MockClock wherever it matters."""

from __future__ import annotations

import contextlib
import math
import random
from typing import Any

import pytest
import trio
import trio.testing

import pipekit as pk
from pipekit.channels import Channel, Selected, after, channel, parse_duration, select

# -- channel ---------------------------------------------------------------------------


async def test_an_unbuffered_send_waits_for_a_receiver() -> None:
    ch: Channel[int] = channel()
    sent = trio.Event()

    async def sender() -> None:
        await ch.send(1)
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set() and len(ch) == 0
        assert await ch.receive() == 1
        await sent.wait()


async def test_a_buffered_channel_holds_capacity_values_then_blocks() -> None:
    ch: Channel[int] = channel(2)
    await ch.send(1)
    await ch.send(2)
    with pytest.raises(trio.WouldBlock):
        ch.send_nowait(3)
    assert len(ch) == 2
    assert [await ch.receive(), await ch.receive()] == [1, 2]


async def test_values_come_out_in_the_order_they_went_in_also_from_blocked_senders() -> None:
    ch: Channel[int] = channel(1)
    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(ch.send, i)
            await trio.testing.wait_all_tasks_blocked()
        assert [await ch.receive() for _ in range(5)] == [0, 1, 2, 3, 4]


async def test_blocked_receivers_are_served_first_come_first_served() -> None:
    ch: Channel[str] = channel()
    got: list[tuple[int, str]] = []

    async def receiver(n: int) -> None:
        got.append((n, await ch.receive()))

    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(receiver, n)
            await trio.testing.wait_all_tasks_blocked()
        for value in "abc":
            await ch.send(value)
    assert got == [(0, "a"), (1, "b"), (2, "c")]


async def test_close_lets_receivers_drain_then_ends_the_channel() -> None:
    ch: Channel[int] = channel(3)
    for i in range(3):
        await ch.send(i)
    ch.close()
    assert [x async for x in ch] == [0, 1, 2]
    with pytest.raises(trio.EndOfChannel):
        await ch.receive()


async def test_close_wakes_blocked_receivers_with_end_of_channel() -> None:
    ch: Channel[int] = channel()
    ended: list[bool] = []

    async def receiver() -> None:
        try:
            await ch.receive()
        except trio.EndOfChannel:
            ended.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        await ch.aclose()
    assert ended == [True, True]


async def test_send_after_close_raises_closed_resource_error() -> None:
    ch: Channel[int] = channel(5)
    ch.close()
    ch.close()  # twice is harmless
    with pytest.raises(trio.ClosedResourceError):
        await ch.send(1)


async def test_a_sender_blocked_at_close_gets_closed_resource_error() -> None:
    ch: Channel[int] = channel()
    with pytest.RaisesGroup(trio.ClosedResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ch.send, 1)
            await trio.testing.wait_all_tasks_blocked()
            ch.close()
    with pytest.raises(trio.EndOfChannel):
        ch.receive_nowait()  # the blocked value was not delivered


async def test_a_cancelled_send_sends_nothing_and_a_cancelled_receive_takes_nothing() -> None:
    ch: Channel[int] = channel()
    with trio.move_on_after(1) as scope:
        await ch.send(1)  # nobody receives
    assert scope.cancelled_caught
    with pytest.raises(trio.WouldBlock):
        ch.receive_nowait()
    buffered: Channel[int] = channel(1)
    with trio.CancelScope() as scope:
        await buffered.send(7)
        scope.cancel()
        await buffered.receive()  # cancelled at its checkpoint, before taking the value
    assert buffered.receive_nowait() == 7


async def test_nowait_operations_raise_would_block() -> None:
    ch: Channel[int] = channel()
    with pytest.raises(trio.WouldBlock):
        ch.send_nowait(1)
    with pytest.raises(trio.WouldBlock):
        ch.receive_nowait()


async def test_an_unbounded_channel_never_blocks_a_sender() -> None:
    ch: Channel[int] = channel(math.inf)
    for i in range(1000):
        ch.send_nowait(i)
    assert len(ch) == 1000 and ch.capacity == math.inf


@pytest.mark.parametrize(
    ("capacity", "error"),
    [(-1, ValueError), (1.5, ValueError), (True, TypeError), ("3", TypeError)],
)
def test_a_bad_capacity_is_refused(capacity: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="capacity"):
        channel(capacity)


async def test_a_channel_is_a_trio_channel_and_an_async_context_manager() -> None:
    ch: Channel[int] = channel(1)
    assert isinstance(ch, trio.abc.SendChannel) and isinstance(ch, trio.abc.ReceiveChannel)
    async with ch:
        await ch.send(1)
    assert ch.closed and await ch.receive() == 1


# -- select ----------------------------------------------------------------------------


async def test_select_receives_from_the_ready_case_and_says_which() -> None:
    a: Channel[str] = channel(1)
    b: Channel[str] = channel(1)
    await b.send("x")
    got = await select([a.case_receive(), b.case_receive()])
    assert (got.channel, got.index, got.value, got.ok, got.default) == (b, 1, "x", True, False)


async def test_select_sends_to_a_waiting_receiver() -> None:
    a: Channel[str] = channel()
    full: Channel[str] = channel()
    received: list[str] = []

    async def receiver() -> None:
        received.append(await a.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        got = await select([full.case_send("no"), a.case_send("yes")])
    assert (got.channel, got.value) == (a, None)
    assert received == ["yes"]


async def test_select_waits_and_only_the_case_that_fired_did_anything() -> None:
    a: Channel[int] = channel()
    b: Channel[int] = channel()
    out: Channel[int] = channel()
    results: list[Selected] = []

    async def selector() -> None:
        results.append(await select([a.case_receive(), b.case_receive(), out.case_send(9)]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(selector)
        await trio.testing.wait_all_tasks_blocked()
        a.send_nowait(1)  # fires the select, which leaves b and out at once
        with pytest.raises(trio.WouldBlock):
            b.send_nowait(2)
        with pytest.raises(trio.WouldBlock):
            out.receive_nowait()
    assert results[0].channel is a and results[0].value == 1


async def test_a_cancelled_select_consumes_nothing_and_sends_nothing() -> None:
    a: Channel[int] = channel()
    out: Channel[int] = channel()
    with trio.move_on_after(1) as scope:
        await select([a.case_receive(), out.case_send(5)])
    assert scope.cancelled_caught
    with pytest.raises(trio.WouldBlock):
        a.send_nowait(1)  # no receiver was left behind
    with pytest.raises(trio.WouldBlock):
        out.receive_nowait()  # no sender was left behind


async def test_select_is_a_checkpoint_even_when_a_case_is_ready() -> None:
    a: Channel[int] = channel(1)
    await a.send(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await select([a.case_receive()])
    assert scope.cancelled_caught and a.receive_nowait() == 1


async def test_select_picks_fairly_among_ready_cases() -> None:
    a: Channel[str] = channel(1)
    b: Channel[str] = channel(1)
    c: Channel[str] = channel(1)
    counts = {"a": 0, "b": 0, "c": 0}
    for ch, name in ((a, "a"), (b, "b"), (c, "c")):
        ch.send_nowait(name)
    for _ in range(900):
        got = await select([a.case_receive(), b.case_receive(), c.case_receive()])
        counts[got.value] += 1
        got.channel.send_nowait(got.value)  # type: ignore[union-attr]
    # Each would get 300 on average; below 200 has probability far under 1e-12.
    assert min(counts.values()) > 200, counts


async def test_select_with_default_returns_at_once_when_nothing_is_ready() -> None:
    a: Channel[int] = channel()
    out: Channel[int] = channel()
    got = await select([a.case_receive(), out.case_send(1)], default=True)
    assert got.default and got.case is None and got.channel is None and got.index == -1
    with pytest.raises(trio.WouldBlock):
        out.receive_nowait()
    a2: Channel[int] = channel(1)
    a2.send_nowait(3)
    got = await select([a2.case_receive()], default=True)
    assert not got.default and got.value == 3
    assert (await select([], default=True)).default


async def test_a_receive_case_on_a_closed_channel_fires_with_ok_false() -> None:
    a: Channel[int] = channel()
    b: Channel[int] = channel()

    async def close_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        a.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_soon)
        got = await select([a.case_receive(), b.case_receive()])
    assert (got.channel, got.ok, got.value) == (a, False, None)
    got = await select([a.case_receive(), b.case_receive()])  # ready at once now
    assert (got.channel, got.ok) == (a, False)


async def test_a_send_case_on_a_closed_channel_raises() -> None:
    a: Channel[int] = channel()
    a.close()
    with pytest.raises(trio.ClosedResourceError):
        await select([a.case_send(1)])


async def test_a_select_blocked_on_a_send_case_raises_when_its_channel_closes() -> None:
    a: Channel[int] = channel()
    with pytest.RaisesGroup(trio.ClosedResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(select, [a.case_send(1)])
            await trio.testing.wait_all_tasks_blocked()
            a.close()


@pytest.mark.parametrize(
    ("cases", "error", "match"),
    [
        ([], ValueError, "at least one case"),
        (["x"], TypeError, "takes cases"),
        ([channel()], TypeError, "use ch.case_receive"),
        ([trio.open_memory_channel[int](0)[1]], TypeError, "not trio's channels"),
    ],
)
async def test_select_refuses_what_is_not_a_list_of_cases(
    cases: list[Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        await select(cases)


async def test_select_refuses_a_lone_case_outside_a_list() -> None:
    with pytest.raises(TypeError, match="list of cases"):
        await select(channel().case_receive())  # type: ignore[arg-type]


async def test_select_is_pk_select() -> None:
    assert pk.select is select


# -- after -----------------------------------------------------------------------------


async def test_after_times_out_a_select_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    quiet: Channel[int] = channel()
    start = trio.current_time()
    timer = after("5s")
    got = await select([quiet.case_receive(), timer.case_receive()])
    assert got.channel is timer and got.value == trio.current_time() == start + 5


async def test_a_value_that_arrives_before_the_timeout_wins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    replies: Channel[str] = channel()

    async def reply_later() -> None:
        await trio.sleep(1)
        await replies.send("pong")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reply_later)
        got = await select([replies.case_receive(), after(2).case_receive()])
    assert got.channel is replies and got.value == "pong"
    assert trio.current_time() == 1


async def test_after_fires_once_then_stays_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = after("100ms")
    assert await timer.receive() == pytest.approx(0.1)
    assert (await select([timer.case_receive()], default=True)).default
    with trio.move_on_after(60) as scope:
        await timer.receive()
    assert scope.cancelled_caught


async def test_the_earliest_of_several_timers_fires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    late, early = after("1m"), after("1s")
    got = await select([late.case_receive(), early.case_receive()])
    assert got.channel is early and trio.current_time() == 1


async def test_a_closed_timer_ends() -> None:
    timer = after(10)
    timer.close()
    with pytest.raises(trio.EndOfChannel):
        await timer.receive()


async def test_nothing_can_be_sent_into_a_timer() -> None:
    timer = after(1)
    with pytest.raises(TypeError, match="nothing can be sent"):
        await timer.send(1.0)
    with pytest.raises(TypeError, match="nothing can be sent"):
        timer.case_send(1.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("100ms", 0.1),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("250us", 250e-6),
        ("2ns", 2e-9),
        (" 3s ", 3.0),
        (0, 0.0),
        (2, 2.0),
        (0.25, 0.25),
        (math.inf, math.inf),
    ],
)
def test_durations_are_seconds_or_numbers_with_units(text: float | str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("5", ValueError),
        ("", ValueError),
        ("5 s", ValueError),
        ("s", ValueError),
        ("-1s", ValueError),
        (-1, ValueError),
        (math.nan, ValueError),
        (True, TypeError),
        (None, TypeError),
        ("3 days", ValueError),
    ],
)
def test_a_bad_duration_gets_a_readable_error(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="duration"):
        parse_duration(value)


async def test_after_refuses_a_bad_duration() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        after("soon")


# -- no value lost or duplicated, whatever the interleaving and cancellations ------------


@pytest.mark.parametrize("seed", range(12))
def test_selects_sends_and_receives_with_random_cancellations_lose_and_duplicate_nothing(
    seed: int,
) -> None:
    """Producers send (plainly or by select) into three channels of different capacities,
    consumers receive (plainly or by select, with timeouts), and every operation may be
    cancelled at a random moment. Every completed send is received exactly once."""
    rng = random.Random(seed)
    sent: list[int] = []
    received: list[int] = []

    async def main() -> None:
        chans: list[Channel[int]] = [channel(0), channel(1), channel(3)]

        async def producer(base: int) -> None:
            for n in range(base, base + 60):
                with trio.move_on_after(rng.choice([0.5, 1, 5, 100])):
                    await trio.sleep(rng.random())
                    if rng.random() < 0.5:
                        await rng.choice(chans).send(n)
                    else:
                        await select([c.case_send(n) for c in rng.sample(chans, 2)])
                    sent.append(n)

        async def consumer() -> None:
            while True:
                with trio.move_on_after(rng.choice([0.3, 1, 100])):
                    await trio.sleep(rng.random())
                    if rng.random() < 0.3:
                        with contextlib.suppress(trio.EndOfChannel):
                            received.append(await rng.choice(chans).receive())
                    else:
                        cases = [c.case_receive() for c in chans]
                        got = await select([*cases, after(rng.random() * 2).case_receive()])
                        if got.index < 3 and got.ok:
                            received.append(got.value)
                if all(c.closed and not len(c) for c in chans):
                    return

        async with trio.open_nursery() as consumers:
            for _ in range(3):
                consumers.start_soon(consumer)
            async with trio.open_nursery() as producers:
                for p in range(4):
                    producers.start_soon(producer, p * 1000)
            for c in chans:
                c.close()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(sent) > 100  # most sends completed
    assert sorted(received) == sorted(sent)
