"""The checks of blocked operations: backpressure bounds and RESUME, closing while
others wait, and cancelling a blocked ``send``/``receive``.

"Blocked" is established without sleeping: by waiting until the trio run is idle
(:func:`trio.testing.wait_all_tasks_blocked`) several times in a row without the count
of accepted sends changing.
"""

from __future__ import annotations

import contextlib
from typing import Any

import trio
import trio.testing

from ..kernel.pipe import Pipe
from ._adapter import AdapterUnderTest, backpressure_message
from ._compare import describe, expect_same, short
from ._traffic import ALLOWED_CLOSE_ERRORS, directions, receive_messages, send_messages, transfer

__all__ = [
    "check_backpressure",
    "check_cancellation",
    "check_close_unblocks_receiver",
    "check_concurrent_close",
]

_RESUME_EXTRA = 64  # messages sent after the stall, to prove RESUME works
_IDLE_CUSHION = 0.01  # seconds of trio idleness that count as "everything is blocked"
_STALL_POLLS = 20  # consecutive idle polls without progress that mean "blocked"
_MAX_POLLS = 2000


async def _idle() -> None:
    """Wait until every trio task is blocked (threads and processes may still work)."""
    await trio.testing.wait_all_tasks_blocked(_IDLE_CUSHION)


class _Producer:
    """Sends :func:`backpressure_message` ``i`` for ``i`` in ``[0, limit)``, one
    ``send()`` each, counting those accepted. ``scope`` can cancel it."""

    def __init__(self, src: Pipe, limit: int) -> None:
        self.src = src
        self.limit = limit
        self.accepted = 0
        self.finished = False
        self.cancelled = False
        self.error: BaseException | None = None
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    async def run(self) -> None:
        try:
            with self.scope:
                while self.accepted < self.limit:
                    await self.src.send(backpressure_message(self.accepted))
                    self.accepted += 1
                self.finished = True
            self.cancelled = self.scope.cancelled_caught
        except Exception as exc:
            self.error = exc
        finally:
            self.done.set()


async def _wait_stalled(producer: _Producer, bound: int, what: str) -> int:
    """Wait until the producer stops making progress; check it stayed within ``bound``.
    Returns the number of messages accepted."""
    last = -1
    still = 0
    for _ in range(_MAX_POLLS):
        if producer.error is not None:
            raise AssertionError(
                f"{what}: send() raised {describe(producer.error)} after "
                f"{producer.accepted} messages while the peer was not receiving"
            ) from producer.error
        if producer.accepted > bound:
            raise AssertionError(
                f"{what}: send() accepted {producer.accepted} messages while the peer "
                f"received none; the bound is {bound}"
                + (" (and it never blocked)" if producer.finished else "")
            )
        if producer.accepted == last:
            still += 1
            if still >= _STALL_POLLS:
                if producer.accepted == 0:
                    raise AssertionError(f"{what}: send() blocked before accepting anything")
                return producer.accepted
        else:
            still = 0
            last = producer.accepted
        await _idle()
    raise AssertionError(
        f"{what}: send() kept accepting messages slowly ({producer.accepted} so far) "
        "without blocking"
    )


async def _backpressure_one_way(
    adapter: AdapterUnderTest, label: str, src: Pipe, dst: Pipe
) -> None:
    producer = _Producer(src, adapter.bound + _RESUME_EXTRA)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer.run)
        stalled = await _wait_stalled(producer, adapter.bound, label)
        producer.limit = stalled + _RESUME_EXTRA
        got = await receive_messages(dst, producer.limit, batch=True, what=f"{label} drain")
        with trio.move_on_after(adapter.close_grace):
            await producer.done.wait()
        if not producer.done.is_set():
            raise AssertionError(
                f"{label}: the sender stayed blocked after the peer drained everything "
                f"(no RESUME?) at {producer.accepted} messages"
            )
    if producer.error is not None:
        raise AssertionError(f"{label}: send() raised {describe(producer.error)}") from (
            producer.error
        )
    expected = [backpressure_message(i) for i in range(producer.limit)]
    expect_same(expected, got, f"{label} after RESUME (stalled at {stalled})")


async def check_backpressure(adapter: AdapterUnderTest) -> None:
    """While the peer does not receive, ``send()`` blocks after at most ``bound``
    messages; once the peer drains, the blocked sender resumes and everything arrives in
    order. Each way, on one pair."""
    async with adapter.open_pair() as (a, b):
        for label, src, dst in directions(a, b):
            await _backpressure_one_way(adapter, label, src, dst)


async def _force_close(*pipes: Pipe) -> None:
    """Close ``pipes`` at once (after a failure), to unblock whatever waits on them."""
    for pipe in pipes:
        with contextlib.suppress(Exception):
            await trio.aclose_forcefully(pipe)


async def _close_within(pipe: Pipe, name: str, grace: float, problems: list[str]) -> None:
    with trio.move_on_after(grace) as guard:
        try:
            await pipe.aclose()
        except ALLOWED_CLOSE_ERRORS:
            pass
        except Exception as exc:
            problems.append(f"{name}.aclose() raised {describe(exc)}")
    if guard.cancelled_caught:
        problems.append(f"{name}.aclose() did not return within {grace:g} s")


async def check_concurrent_close(adapter: AdapterUnderTest) -> None:
    """Both ends ``aclose()`` at the same time while messages flow both ways: both
    closes return, every sender and receiver stops, and nothing but
    :class:`trio.ClosedResourceError`, :class:`trio.BrokenResourceError` (and
    :class:`trio.EndOfChannel` for receivers) is raised."""
    grace = adapter.close_grace
    problems: list[str] = []
    received = {"a": 0, "b": 0}
    flowing = trio.Event()
    running = {"sender a", "sender b", "receiver a", "receiver b"}
    all_stopped = trio.Event()

    def stopped(task: str) -> None:
        running.discard(task)
        if not running:
            all_stopped.set()

    async def sender(pipe: Pipe, name: str) -> None:
        try:
            for i in range(10_000_000):
                if i % 16:
                    await pipe.send(i)
                else:
                    await pipe.send_batch([i] * 16)
        except ALLOWED_CLOSE_ERRORS:
            pass
        except Exception as exc:
            problems.append(f"sender on {name} raised {describe(exc)}")
        finally:
            stopped(f"sender {name}")

    async def receiver(pipe: Pipe, name: str) -> None:
        try:
            while True:
                received[name] += len(await pipe.receive_batch())
                if received["a"] >= 32 and received["b"] >= 32:
                    flowing.set()
        except (trio.EndOfChannel, *ALLOWED_CLOSE_ERRORS):
            pass
        except Exception as exc:
            problems.append(f"receiver on {name} raised {describe(exc)}")
        finally:
            stopped(f"receiver {name}")

    async with adapter.open_pair() as (a, b), trio.open_nursery() as nursery:
        nursery.start_soon(sender, a, "a")
        nursery.start_soon(sender, b, "b")
        nursery.start_soon(receiver, a, "a")
        nursery.start_soon(receiver, b, "b")
        await flowing.wait()
        async with trio.open_nursery() as closers:
            closers.start_soon(_close_within, a, "a", grace, problems)
            closers.start_soon(_close_within, b, "b", grace, problems)
        with trio.move_on_after(grace):
            await all_stopped.wait()
        if running:
            problems.append(
                f"still blocked {grace:g} s after both ends closed: " + ", ".join(sorted(running))
            )
            await _force_close(a, b)
            nursery.cancel_scope.cancel()
    if problems:
        raise AssertionError("; ".join(sorted(problems)))


async def _receiver_woken_by_close(
    adapter: AdapterUnderTest, label: str, closing: Pipe, waiting: Pipe
) -> None:
    outcome: list[BaseException | str] = []
    woke = trio.Event()

    async def wait_for_message() -> None:
        try:
            outcome.append(f"returned {short(await waiting.receive())}")
        except Exception as exc:
            outcome.append(exc)
        finally:
            woke.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_message)
        await _idle()
        await closing.aclose()
        with trio.move_on_after(adapter.close_grace):
            await woke.wait()
        if not woke.is_set():
            await _force_close(waiting)
            nursery.cancel_scope.cancel()
            raise AssertionError(
                f"{label}: receive() still blocked {adapter.close_grace:g} s after the close"
            )
    result = outcome[0]
    if isinstance(result, str):
        raise AssertionError(f"{label}: receive() {result}")
    if not isinstance(
        result, trio.EndOfChannel | trio.ClosedResourceError | trio.BrokenResourceError
    ):
        raise AssertionError(f"{label}: receive() raised {describe(result)}")


async def check_close_unblocks_receiver(adapter: AdapterUnderTest) -> None:
    """A task blocked in ``receive()`` on an empty pipe wakes with
    :class:`trio.EndOfChannel`, :class:`trio.ClosedResourceError` or
    :class:`trio.BrokenResourceError` when the other end closes. Each way, on fresh
    pairs."""
    for label, a_closes in (
        ("a closes, b was receiving", True),
        ("b closes, a was receiving", False),
    ):
        async with adapter.open_pair() as (a, b):
            closing, waiting = (a, b) if a_closes else (b, a)
            await _receiver_woken_by_close(adapter, label, closing, waiting)


async def _cancel_blocked_receive(
    adapter: AdapterUnderTest, label: str, src: Pipe, dst: Pipe
) -> None:
    grace = adapter.close_grace
    scope = trio.CancelScope()
    result: list[str] = []
    returned = trio.Event()

    async def blocked_receive() -> None:
        try:
            with scope:
                result.append(f"returned {short(await dst.receive())}")
            if scope.cancelled_caught:
                result.append("cancelled")
        finally:
            returned.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked_receive)
        await _idle()
        scope.cancel()
        with trio.move_on_after(grace):
            await returned.wait()
        if not returned.is_set():
            await _force_close(src, dst)  # the only way left to unblock it
            nursery.cancel_scope.cancel()
            raise AssertionError(
                f"{label}: a cancelled receive() did not return within {grace:g} s"
            )
    if result != ["cancelled"]:
        raise AssertionError(f"{label}: the blocked receive() {result[0]}")
    await transfer(
        src,
        dst,
        ["after a cancelled receive"],
        batch=False,
        what=f"{label} after a cancelled receive()",
    )


async def _cancel_blocked_send(adapter: AdapterUnderTest, label: str, src: Pipe, dst: Pipe) -> None:
    grace = adapter.close_grace
    producer = _Producer(src, adapter.bound + _RESUME_EXTRA)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer.run)
        accepted = await _wait_stalled(producer, adapter.bound, label)
        producer.scope.cancel()
        with trio.move_on_after(grace):
            await producer.done.wait()
        if not producer.done.is_set():
            await _force_close(src, dst)  # the only way left to unblock it
            nursery.cancel_scope.cancel()
            raise AssertionError(f"{label}: a cancelled send() did not return within {grace:g} s")
    if producer.error is not None:
        raise AssertionError(
            f"{label}: the cancelled send() raised {describe(producer.error)}"
        ) from producer.error
    if producer.accepted != accepted or not producer.cancelled:
        raise AssertionError(f"{label}: the blocked send() completed instead of being cancelled")
    after = [f"after a cancelled send {i}" for i in range(_RESUME_EXTRA)]
    expected = [backpressure_message(i) for i in range(accepted)] + after
    got: list[Any] = []

    async def drain() -> None:
        got.extend(await receive_messages(dst, len(expected), batch=True, what=f"{label} drain"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await send_messages(src, after, batch=False)
    if len(got) > accepted and got[accepted] == backpressure_message(accepted):
        raise AssertionError(
            f"{label}: the message of the cancelled send() ({accepted}) was delivered"
        )
    expect_same(expected, got, f"{label} after a cancelled send()")


async def check_cancellation(adapter: AdapterUnderTest) -> None:
    """A ``receive()`` blocked on an empty pipe and a ``send()`` blocked by
    backpressure both return promptly when their cancel scope is cancelled; the
    cancelled send delivers nothing (trio's rule: a cancelled operation did not happen),
    and the pipe keeps working: what is sent afterwards arrives, in order after what was
    accepted before. Each way, on one pair."""
    async with adapter.open_pair() as (a, b):
        for label, src, dst in directions(a, b):
            await _cancel_blocked_receive(adapter, label, src, dst)
            await _cancel_blocked_send(adapter, label, src, dst)
