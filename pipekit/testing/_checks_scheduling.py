"""The checks of how pipe calls meet trio's scheduler: every call is a cancel point, and a
busy loop of calls yields at least every :data:`~pipekit.kernel.pipe.YIELD_EVERY` calls.

The Pipe contract (``pipekit.kernel.pipe``): ``send``, ``send_batch``, ``receive``,
``receive_batch`` and ``async for`` raise :class:`trio.Cancelled` at once in a cancelled
scope, having done nothing (nothing sent, nothing taken); a call that has to wait
blocks (the blocking checks prove that); a call that does not have to wait need not
yield to the scheduler, but no task makes more than ``YIELD_EVERY`` consecutive
``send``/``receive`` calls on one pipe end without a schedule point. "Without a schedule
point" is measured exactly, with a trio instrument: the calls that complete within one
step of the calling task (from when the scheduler runs it to when it yields).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

from ..kernel.pipe import YIELD_EVERY, Pipe
from ._adapter import AdapterUnderTest
from ._compare import describe, expect_same, short
from ._traffic import directions, receive_messages, send_messages

__all__ = ["check_cancel_points", "check_fairness"]

_BUSY_CALLS = 8 * YIELD_EVERY  # calls in each busy loop of the fairness check
_IDLE_CUSHION = 0.01  # seconds of trio idleness that count as "everything is blocked"


async def _cancelled_call(call: Callable[[], Awaitable[Any]], what: str) -> None:
    """Run ``call`` in a scope cancelled beforehand: it must raise Cancelled."""
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            result = await call()
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise AssertionError(
                f"{what} in a cancelled scope raised {describe(exc)}, not Cancelled"
            ) from exc
        raise AssertionError(f"{what} in a cancelled scope returned {short(result)}")
    if not scope.cancelled_caught:  # pragma: no cover - Cancelled escaped the scope?
        raise AssertionError(f"{what} in a cancelled scope did not raise Cancelled")


async def _next(pipe: Pipe) -> Any:
    return await pipe.__anext__()


async def _cancel_points_one_way(label: str, src: Pipe, dst: Pipe) -> None:
    # Sending: nothing a cancelled call was given may arrive.
    await _cancelled_call(lambda: src.send("cancelled send"), f"{label}: send()")
    await _cancelled_call(
        lambda: src.send_batch(["cancelled batch", "cancelled batch"]), f"{label}: send_batch()"
    )
    # Receiving, with messages waiting (the first one received normally, so that the
    # rest have arrived on most transports): a cancelled call takes none of them.
    sent = [f"{label} {i}" for i in range(4)]
    await send_messages(src, sent, batch=True)
    got = await receive_messages(dst, 1, batch=False, what=f"{label} first")
    await _cancelled_call(dst.receive, f"{label}: receive()")
    await _cancelled_call(dst.receive_batch, f"{label}: receive_batch()")
    await _cancelled_call(lambda: _next(dst), f"{label}: async for (__anext__)")
    got += await receive_messages(dst, len(sent) - 1, batch=False, what=f"{label} rest")
    expect_same(sent, got, f"{label}: after calls in cancelled scopes")


async def check_cancel_points(adapter: AdapterUnderTest) -> None:
    """In a scope cancelled beforehand, ``send``, ``send_batch``, ``receive``,
    ``receive_batch`` and ``async for`` raise :class:`trio.Cancelled` at the first call,
    even when they would not have to wait, and do nothing: what a cancelled send was
    given never arrives, and a cancelled receive takes no message (the next receive
    gets it, in order). Each way, on one pair."""
    async with adapter.open_pair() as (a, b):
        for label, src, dst in directions(a, b):
            await _cancel_points_one_way(label, src, dst)


class _StepCounter(trio.abc.Instrument):
    """Counts, for one task, the calls that complete within each of its steps (from
    the scheduler running it to its next schedule point), and keeps the most."""

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.calls = 0
        self._at_step_start = 0
        self.most = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self._at_step_start = self.calls

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.most = max(self.most, self.calls - self._at_step_start)


async def _busy(
    counter: _StepCounter,
    loop: Callable[[_StepCounter], Awaitable[None]],
    other: Callable[[], Awaitable[None]],
    *,
    other_first: bool = False,
) -> None:
    """Run ``loop`` (counted) and ``other`` (the peer's side) concurrently; with
    ``other_first``, start ``loop`` only once every task is blocked (so that a receiving
    loop finds as much waiting as the pipe holds, and the longest streak it could make
    without a schedule point is there to be seen)."""

    async def counted() -> None:
        counter.task = trio.lowlevel.current_task()
        await loop(counter)

    trio.lowlevel.add_instrument(counter)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            if other_first:
                await trio.testing.wait_all_tasks_blocked(_IDLE_CUSHION)
            nursery.start_soon(counted)
    finally:
        trio.lowlevel.remove_instrument(counter)


def _judge(counter: _StepCounter, what: str) -> None:
    if counter.most > YIELD_EVERY:
        raise AssertionError(
            f"{what}: {counter.most} calls completed without a schedule point; the "
            f"contract allows at most {YIELD_EVERY} (YIELD_EVERY)"
        )


async def _fair_sender(label: str, src: Pipe, dst: Pipe) -> None:
    counter = _StepCounter()

    async def send_loop(counter: _StepCounter) -> None:
        for i in range(_BUSY_CALLS):
            await src.send(i)
            counter.calls += 1

    got: list[Any] = []

    async def drain() -> None:
        got.extend(await receive_messages(dst, _BUSY_CALLS, batch=True, what=f"{label} drain"))

    await _busy(counter, send_loop, drain)
    expect_same(list(range(_BUSY_CALLS)), got, f"{label}: busy send()")
    _judge(counter, f"{label}: a loop of send()")


async def _fair_receiver(label: str, src: Pipe, dst: Pipe, *, iterate: bool) -> None:
    counter = _StepCounter()
    got: list[Any] = []

    async def receive_loop(counter: _StepCounter) -> None:
        if iterate:
            async for msg in dst:
                got.append(msg)
                counter.calls += 1
                if len(got) == _BUSY_CALLS:
                    break
        else:
            for _ in range(_BUSY_CALLS):
                got.append(await dst.receive())
                counter.calls += 1

    async def feed() -> None:
        await send_messages(src, list(range(_BUSY_CALLS)), batch=True)

    await _busy(counter, receive_loop, feed, other_first=True)
    call = "async for" if iterate else "receive()"
    expect_same(list(range(_BUSY_CALLS)), got, f"{label}: busy {call}")
    _judge(counter, f"{label}: a loop of {call}")


async def check_fairness(adapter: AdapterUnderTest) -> None:
    """A task that calls ``send()``, ``receive()`` or iterates with ``async for`` in a
    loop, finding room or messages, reaches a schedule point at least every
    :data:`~pipekit.kernel.pipe.YIELD_EVERY` calls (measured per step of that task with
    a trio instrument), so other tasks run. Each way, on one pair; the peer drains or
    feeds with the batch calls meanwhile."""
    async with adapter.open_pair() as (a, b):
        for label, src, dst in directions(a, b):
            await _fair_sender(label, src, dst)
            await _fair_receiver(label, src, dst, iterate=False)
            await _fair_receiver(label, src, dst, iterate=True)
