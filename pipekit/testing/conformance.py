"""Conformance checks for anything that produces pipekit :class:`~pipekit.kernel.Pipe`\\ s.

An adapter under test is described by an ``open_pair`` callable: each call returns an
async context manager yielding ``(a, b)``, two trio-side pipe ends joined through the
adapter (what ``a`` sends, ``b`` receives, and the other way round). Every check opens
fresh pairs, runs under a deadline (``trio.fail_after``), bounds every loop, and uses no
sleep as synchronisation: "the sender is blocked" is established by waiting until the
trio run is idle (:func:`trio.testing.wait_all_tasks_blocked`) several times in a row
without the count of accepted sends changing.

``bound`` is the adapter's documented bound for the backpressure check: the most
messages ``send()`` may accept while the other end never receives (send buffer +
receive high-water + what may be in flight). The backpressure and cancellation checks
send messages of :data:`BACKPRESSURE_MESSAGE_SIZE` ASCII characters, so adapters whose
buffers are counted in bytes can state a bound in messages
(:func:`framed_bound` computes it for one pipekit/1 hop).

Use :func:`check_adapter` to run every check and get one :class:`AssertionError`
listing all failures, or :func:`run_check` with the names in :data:`CHECKS` to run one
check per test. Failures name the adapter, the check, the direction and what was seen.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import trio
import trio.testing

from ..kernel.framed import DEFAULT_SEND_BUFFER
from ..kernel.pipe import Pipe, PipeStats
from ..kernel.protocol import DEFAULT_COALESCE_BYTES, DEFAULT_HIGH_WATER, DEFAULT_PAUSE_SLACK

__all__ = [
    "BACKPRESSURE_MESSAGE_SIZE",
    "CHECKS",
    "DEFAULT_CLOSE_GRACE",
    "DEFAULT_LARGE",
    "DEFAULT_TIME_LIMIT",
    "AdapterUnderTest",
    "Check",
    "OpenPair",
    "backpressure_message",
    "check_adapter",
    "framed_bound",
    "run_check",
]

OpenPair = Callable[[], AbstractAsyncContextManager[tuple[Pipe, Pipe]]]
"""Returns an async context manager yielding two connected pipe ends ``(a, b)``."""

DEFAULT_LARGE = 4 * 1024 * 1024
DEFAULT_CLOSE_GRACE = 5.0
DEFAULT_TIME_LIMIT = 20.0
BACKPRESSURE_MESSAGE_SIZE = 1000
"""Characters in each message of the backpressure and cancellation checks."""

ORDER_COUNT = 10_000
BURST_COUNT = 20
BURST_SIZE = 256 * 1024
_RESUME_EXTRA = 64  # messages sent after the stall, to prove RESUME works
_IDLE_CUSHION = 0.01  # seconds of trio idleness that count as "everything is blocked"
_STALL_POLLS = 20  # consecutive idle polls without progress that mean "blocked"
_MAX_POLLS = 2000
_ALLOWED_CLOSE_ERRORS = (trio.ClosedResourceError, trio.BrokenResourceError)


@dataclass(frozen=True)
class AdapterUnderTest:
    """An adapter to check: its pair factory, its backpressure ``bound`` (messages),
    the size of the large message (bytes), the per-check deadline and how long a close
    or a cancellation may take to unblock another task (seconds)."""

    name: str
    open_pair: OpenPair
    bound: int
    large: int = DEFAULT_LARGE
    time_limit: float = DEFAULT_TIME_LIMIT
    close_grace: float = DEFAULT_CLOSE_GRACE

    def __post_init__(self) -> None:
        if self.bound < 1:
            raise ValueError("bound must be at least 1")
        if self.large < 1:
            raise ValueError("large must be at least 1")


Check = Callable[[AdapterUnderTest], Awaitable[None]]


def framed_bound(
    *,
    send_buffer: int = DEFAULT_SEND_BUFFER,
    high_water: int = DEFAULT_HIGH_WATER,
    pause_slack: int = DEFAULT_PAUSE_SLACK,
    coalesce_bytes: int = DEFAULT_COALESCE_BYTES,
    message_size: int = BACKPRESSURE_MESSAGE_SIZE,
) -> int:
    """The backpressure bound of one pipekit/1 hop, in messages of at least
    ``message_size`` encoded bytes: the sender's queue (``send_buffer`` bytes plus the
    message that crossed it), and on the receiver ``high_water`` messages plus the rest
    of the DATA frame that crossed it (frames coalesce up to ``coalesce_bytes``) plus
    what may still arrive after PAUSE (``pause_slack`` bytes, enforced by the
    protocol). ``send_buffer`` and ``coalesce_bytes`` are the sender's settings,
    ``high_water`` and ``pause_slack`` the receiver's."""
    return (
        send_buffer // message_size
        + 1
        + high_water
        + coalesce_bytes // message_size
        + 1
        + pause_slack // message_size
    )


def backpressure_message(i: int) -> str:
    """Message ``i`` of the backpressure and cancellation checks: a distinct ASCII
    string of :data:`BACKPRESSURE_MESSAGE_SIZE` characters."""
    head = f"bp{i:010d}:"
    return head + "." * (BACKPRESSURE_MESSAGE_SIZE - len(head))


# --- comparing messages ---------------------------------------------------------------


def _canon(x: Any) -> Any:
    """A comparable form that also tells types apart (True is not 1, 1.0 is not 1)."""
    t = type(x)
    if t is list:
        return ("list", tuple(_canon(v) for v in x))
    if t is dict:
        return ("dict", tuple(sorted(((repr(_canon(k)), _canon(v)) for k, v in x.items()))))
    if t is float and math.isnan(x):
        return ("float", "nan")
    return (t.__name__, x)


def _short(x: Any, limit: int = 70) -> str:
    if isinstance(x, bytes | str) and len(x) > limit:
        return f"<{type(x).__name__} of length {len(x)} starting {x[:24]!r}>"
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _difference(expected: Sequence[Any], got: Sequence[Any]) -> str | None:
    """None if equal (types included), else where and how they differ."""
    for i, (e, g) in enumerate(zip(expected, got, strict=False)):
        if e is g:
            continue
        if _canon(e) != _canon(g):
            detail = ""
            if isinstance(e, bytes | str) and isinstance(g, bytes | str) and type(e) is type(g):
                at = next((k for k, (x, y) in enumerate(zip(e, g, strict=False)) if x != y), None)
                where_diff = (
                    "one a prefix of the other" if at is None else f"first difference at {at}"
                )
                detail = f" (lengths {len(e)} and {len(g)}, {where_diff})"
            found = next((k for k, v in enumerate(got) if _canon(v) == _canon(e)), None)
            where = f"; the expected one came at {found}" if found is not None else ""
            return (
                f"message {i} of {len(expected)} differs: sent {_short(e)}, "
                f"received {_short(g)}{detail}{where}"
            )
    if len(expected) != len(got):
        return f"sent {len(expected)} messages, received {len(got)}"
    return None


def _expect_same(expected: Sequence[Any], got: Sequence[Any], what: str) -> None:
    diff = _difference(expected, got)
    if diff is not None:
        raise AssertionError(f"{what}: {diff}")


_MIXED: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    2**31,
    -(2**40),
    1.5,
    -0.25,
    "",
    "text",
    "ünïcødé ✓",
    b"",
    b"\x00\x01\xfe\xff",
    [],
    {},
    [1, "two", [3.0, None]],
    {"key": "value", "nested": {"list": [True, b"bytes", -7]}},
)


def _order_messages(n: int) -> list[Any]:
    """Unique ints at even positions (so any reordering shows), a mix of types between."""
    return [i if i % 2 == 0 else _MIXED[(i // 2) % len(_MIXED)] for i in range(n)]


def _chunked(
    values: Sequence[Any], sizes: Sequence[int] = (1, 10, 100, 1000, 37)
) -> Iterator[Sequence[Any]]:
    pos = 0
    k = 0
    while pos < len(values):
        size = sizes[k % len(sizes)]
        yield values[pos : pos + size]
        pos += size
        k += 1


def _directions(a: Pipe, b: Pipe) -> tuple[tuple[str, Pipe, Pipe], tuple[str, Pipe, Pipe]]:
    return (("a->b", a, b), ("b->a", b, a))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        found: list[BaseException] = []
        for inner in exc.exceptions:
            found.extend(_leaves(inner))
        return found
    return [exc]


def _explain(exc: BaseException) -> str:
    parts = []
    for leaf in _leaves(exc):
        if isinstance(leaf, AssertionError):
            parts.append(str(leaf))
        else:
            parts.append(f"unexpected {_describe(leaf)}")
    return "; ".join(parts)


# --- moving messages ------------------------------------------------------------------


async def _send(src: Pipe, messages: Sequence[Any], *, batch: bool) -> None:
    if batch:
        for chunk in _chunked(messages):
            await src.send_batch(list(chunk))
    else:
        for m in messages:
            await src.send(m)


async def _receive(dst: Pipe, n: int, *, batch: bool, what: str) -> list[Any]:
    """Receive exactly ``n`` messages (``receive_batch`` may overshoot: returned too)."""
    got: list[Any] = []
    limits: tuple[int | None, ...] = (None, 1, 64, 1000)
    k = 0
    try:
        while len(got) < n:
            if batch:
                limit = limits[k % len(limits)]
                k += 1
                items = await dst.receive_batch(limit)
                if not items or (limit is not None and len(items) > limit):
                    raise AssertionError(
                        f"{what}: receive_batch({limit}) returned {len(items)} messages"
                    )
                got.extend(items)
            else:
                got.append(await dst.receive())
    except trio.EndOfChannel:
        raise AssertionError(f"{what}: EndOfChannel after {len(got)} of {n} messages") from None
    return got


async def _transfer(
    src: Pipe, dst: Pipe, messages: Sequence[Any], *, batch: bool, what: str
) -> None:
    """Send ``messages`` while receiving them concurrently; compare."""
    got: list[Any] = []

    async def consume() -> None:
        got.extend(await _receive(dst, len(messages), batch=batch, what=what))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await _send(src, messages, batch=batch)
    _expect_same(messages, got, what)


async def _expect_raises(
    call: Callable[[], Awaitable[Any]], allowed: tuple[type[BaseException], ...], what: str
) -> BaseException:
    try:
        result = await call()
    except allowed as exc:
        return exc
    except Exception as exc:
        names = " or ".join(t.__name__ for t in allowed)
        raise AssertionError(f"{what}: expected {names}, got {_describe(exc)}") from exc
    names = " or ".join(t.__name__ for t in allowed)
    raise AssertionError(f"{what}: expected {names}, but it returned {_short(result)}")


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
                f"{what}: send() raised {_describe(producer.error)} after "
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


# --- the checks -----------------------------------------------------------------------


async def _order_one_way(label: str, src: Pipe, dst: Pipe, messages: list[Any]) -> None:
    await _transfer(src, dst, messages, batch=False, what=f"{label} send/receive")
    await _transfer(src, dst, messages, batch=True, what=f"{label} send_batch/receive_batch")
    got: list[Any] = []

    async def send_then_end() -> None:
        await _send(src, messages, batch=True)
        await src.end()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_then_end)
        async for batch in dst.batches(512):
            if not batch or len(batch) > 512:
                raise AssertionError(f"{label}: batches(512) yielded a batch of {len(batch)}")
            got.extend(batch)
    _expect_same(messages, got, f"{label} send_batch/batches()")


async def check_order(adapter: AdapterUnderTest) -> None:
    """10,000 messages of mixed types arrive complete, in order and with their types,
    each way, for every combination of ``send``/``send_batch`` and
    ``receive``/``receive_batch``/``batches()``."""
    messages = _order_messages(ORDER_COUNT)
    async with adapter.open_pair() as (a, b):
        for label, src, dst in _directions(a, b):
            await _order_one_way(label, src, dst, messages)


async def _end_one_way(label: str, src: Pipe, dst: Pipe) -> None:
    messages = list(range(200))

    async def sender() -> None:
        await src.send_batch(messages[:100])
        for m in messages[100:]:
            await src.send(m)
        await src.end()
        await src.end()
        await _expect_raises(
            lambda: src.send(-1), _ALLOWED_CLOSE_ERRORS, f"{label}: send() after end()"
        )
        await _expect_raises(
            lambda: src.send_batch([-1]),
            _ALLOWED_CLOSE_ERRORS,
            f"{label}: send_batch() after end()",
        )

    got: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        async for m in dst:
            got.append(m)
            if len(got) > len(messages):
                raise AssertionError(f"{label}: received more than was sent")
    _expect_same(messages, got, f"{label} before END")
    await _expect_raises(
        dst.receive, (trio.EndOfChannel,), f"{label}: receive() after EndOfChannel"
    )
    await _expect_raises(
        dst.receive_batch, (trio.EndOfChannel,), f"{label}: receive_batch() after EndOfChannel"
    )


async def check_end(adapter: AdapterUnderTest) -> None:
    """After ``end()`` the peer receives everything sent before, then
    :class:`trio.EndOfChannel` (``async for`` stops; further receives raise it again);
    ``end()`` twice is harmless; ``send``/``send_batch`` after ``end()`` raise
    :class:`trio.ClosedResourceError` (or :class:`trio.BrokenResourceError`)."""
    async with adapter.open_pair() as (a, b):
        for label, src, dst in _directions(a, b):
            await _end_one_way(label, src, dst)


async def _send_then_end_received(what: str, src: Pipe, dst: Pipe, messages: list[Any]) -> None:
    """``src`` sends ``messages`` and ENDs; ``dst`` must receive exactly those, then
    :class:`trio.EndOfChannel`."""
    got: list[Any] = []

    async def send_then_end() -> None:
        await _send(src, messages, batch=True)
        await src.end()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_then_end)
        try:
            while len(got) <= len(messages):
                got.append(await dst.receive())
        except trio.EndOfChannel:
            pass
        else:
            raise AssertionError(f"{what}: received more than was sent")
    _expect_same(messages, got, what)


async def check_half_close(adapter: AdapterUnderTest) -> None:
    """After one end ENDs, the other can still send and the ended end still receives
    everything; then the other ends too. Both orders, on fresh pairs."""
    first = [f"first-{i}" for i in range(300)]
    second = [f"second-{i}" for i in range(300)]
    for label, b_first in (("a ends first", False), ("b ends first", True)):
        async with adapter.open_pair() as (a, b):
            x, y = (b, a) if b_first else (a, b)
            await _send_then_end_received(f"{label}: first direction", x, y, first)
            await _send_then_end_received(
                f"{label}: second direction, after the first ended", y, x, second
            )


async def _error_one_way(label: str, src: Pipe, dst: Pipe) -> None:
    messages = [f"before-{i}" for i in range(100)]

    async def sender() -> None:
        await _send(src, messages, batch=True)
        await src.fail(ValueError("boom"))
        await _expect_raises(
            lambda: src.send(-1), _ALLOWED_CLOSE_ERRORS, f"{label}: send() after fail()"
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        got = await _receive(dst, len(messages), batch=False, what=f"{label} before ERROR")
    _expect_same(messages, got, f"{label} before ERROR")
    try:
        extra = await dst.receive()
    except trio.EndOfChannel:
        raise AssertionError(
            f"{label}: the failure was lost: receive() raised EndOfChannel"
        ) from None
    except Exception as exc:
        if "boom" not in str(exc):
            raise AssertionError(
                f"{label}: receive() raised {_describe(exc)}; the text 'boom' was lost"
            ) from exc
    else:
        raise AssertionError(f"{label}: receive() after the failure returned {_short(extra)}")


async def check_error(adapter: AdapterUnderTest) -> None:
    """``fail(ValueError("boom"))``: the peer receives everything sent before, then its
    ``receive()`` raises an exception whose text contains "boom" (a
    :class:`~pipekit.kernel.RemoteError` - a :class:`trio.BrokenResourceError` - across
    a wire; in process possibly the pipekit error itself), never
    :class:`trio.EndOfChannel`; ``send()`` after ``fail()`` raises. Each way."""
    async with adapter.open_pair() as (a, b):
        for label, src, dst in _directions(a, b):
            await _error_one_way(label, src, dst)


async def _backpressure_one_way(
    adapter: AdapterUnderTest, label: str, src: Pipe, dst: Pipe
) -> None:
    producer = _Producer(src, adapter.bound + _RESUME_EXTRA)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer.run)
        stalled = await _wait_stalled(producer, adapter.bound, label)
        producer.limit = stalled + _RESUME_EXTRA
        got = await _receive(dst, producer.limit, batch=True, what=f"{label} drain")
        with trio.move_on_after(adapter.close_grace):
            await producer.done.wait()
        if not producer.done.is_set():
            raise AssertionError(
                f"{label}: the sender stayed blocked after the peer drained everything "
                f"(no RESUME?) at {producer.accepted} messages"
            )
    if producer.error is not None:
        raise AssertionError(f"{label}: send() raised {_describe(producer.error)}") from (
            producer.error
        )
    expected = [backpressure_message(i) for i in range(producer.limit)]
    _expect_same(expected, got, f"{label} after RESUME (stalled at {stalled})")


async def check_backpressure(adapter: AdapterUnderTest) -> None:
    """While the peer does not receive, ``send()`` blocks after at most ``bound``
    messages; once the peer drains, the blocked sender resumes and everything arrives in
    order. Each way, on one pair."""
    async with adapter.open_pair() as (a, b):
        for label, src, dst in _directions(a, b):
            await _backpressure_one_way(adapter, label, src, dst)


def _large_bytes(size: int, seed: int) -> bytes:
    pattern = bytes((i * 7 + seed) % 256 for i in range(4096))
    return (pattern * (size // len(pattern) + 1))[:size]


def _large_str(size: int) -> str:
    unit = "0123456789abcdef" * 63 + "✓"  # 1011 UTF-8 bytes, one multi-byte character
    return (unit * (size // 1011 + 1))[: max(1, size * 1009 // 1011)]


async def check_large(adapter: AdapterUnderTest) -> None:
    """A ``large``-byte ``bytes`` message and a ``str`` of about that size (UTF-8)
    arrive intact, then a burst of 20 messages of 256 KiB arrives intact and in order.
    Each way."""
    big = [_large_bytes(adapter.large, 1), _large_str(adapter.large)]
    burst = [i.to_bytes(4, "big") + _large_bytes(BURST_SIZE - 4, i) for i in range(BURST_COUNT)]
    async with adapter.open_pair() as (a, b):
        for label, src, dst in _directions(a, b):
            await _transfer(src, dst, big, batch=False, what=f"{label} large messages")
            await _transfer(src, dst, burst, batch=False, what=f"{label} 256 KiB burst")


async def _force_close(*pipes: Pipe) -> None:
    """Close ``pipes`` at once (after a failure), to unblock whatever waits on them."""
    for pipe in pipes:
        with contextlib.suppress(Exception):
            await trio.aclose_forcefully(pipe)


async def _close_within(pipe: Pipe, name: str, grace: float, problems: list[str]) -> None:
    with trio.move_on_after(grace) as guard:
        try:
            await pipe.aclose()
        except _ALLOWED_CLOSE_ERRORS:
            pass
        except Exception as exc:
            problems.append(f"{name}.aclose() raised {_describe(exc)}")
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
        except _ALLOWED_CLOSE_ERRORS:
            pass
        except Exception as exc:
            problems.append(f"sender on {name} raised {_describe(exc)}")
        finally:
            stopped(f"sender {name}")

    async def receiver(pipe: Pipe, name: str) -> None:
        try:
            while True:
                received[name] += len(await pipe.receive_batch())
                if received["a"] >= 32 and received["b"] >= 32:
                    flowing.set()
        except (trio.EndOfChannel, *_ALLOWED_CLOSE_ERRORS):
            pass
        except Exception as exc:
            problems.append(f"receiver on {name} raised {_describe(exc)}")
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
            outcome.append(f"returned {_short(await waiting.receive())}")
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
        raise AssertionError(f"{label}: receive() raised {_describe(result)}")


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
                result.append(f"returned {_short(await dst.receive())}")
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
    await _transfer(
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
            f"{label}: the cancelled send() raised {_describe(producer.error)}"
        ) from producer.error
    if producer.accepted != accepted or not producer.cancelled:
        raise AssertionError(f"{label}: the blocked send() completed instead of being cancelled")
    after = [f"after a cancelled send {i}" for i in range(_RESUME_EXTRA)]
    expected = [backpressure_message(i) for i in range(accepted)] + after
    got: list[Any] = []

    async def drain() -> None:
        got.extend(await _receive(dst, len(expected), batch=True, what=f"{label} drain"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await _send(src, after, batch=False)
    if len(got) > accepted and got[accepted] == backpressure_message(accepted):
        raise AssertionError(
            f"{label}: the message of the cancelled send() ({accepted}) was delivered"
        )
    _expect_same(expected, got, f"{label} after a cancelled send()")


async def check_cancellation(adapter: AdapterUnderTest) -> None:
    """A ``receive()`` blocked on an empty pipe and a ``send()`` blocked by
    backpressure both return promptly when their cancel scope is cancelled; the
    cancelled send delivers nothing (trio's rule: a cancelled operation did not happen),
    and the pipe keeps working: what is sent afterwards arrives, in order after what was
    accepted before. Each way, on one pair."""
    async with adapter.open_pair() as (a, b):
        for label, src, dst in _directions(a, b):
            await _cancel_blocked_receive(adapter, label, src, dst)
            await _cancel_blocked_send(adapter, label, src, dst)


async def check_stats(adapter: AdapterUnderTest) -> None:
    """After traffic each way, ``stats`` (a :class:`~pipekit.kernel.PipeStats`) counts
    exactly the messages each end sent and received, and nothing is left queued."""
    counts = {"a->b": 300, "b->a": 170}
    async with adapter.open_pair() as (a, b):
        for label, src, dst in _directions(a, b):
            messages = list(range(counts[label]))
            half = len(messages) // 2
            await _transfer(src, dst, messages[:half], batch=True, what=f"{label} traffic")
            await _transfer(src, dst, messages[half:], batch=False, what=f"{label} traffic")
        for name, pipe, sent, received in (
            ("a", a, counts["a->b"], counts["b->a"]),
            ("b", b, counts["b->a"], counts["a->b"]),
        ):
            stats = pipe.stats
            if not isinstance(stats, PipeStats):
                raise AssertionError(f"{name}.stats is {type(stats).__name__}, not PipeStats")
            seen = (stats.messages_sent, stats.messages_received, stats.queue_depth)
            if seen != (sent, received, 0):
                raise AssertionError(
                    f"{name}.stats: messages_sent={stats.messages_sent}, "
                    f"messages_received={stats.messages_received}, "
                    f"queue_depth={stats.queue_depth}; expected {sent}, {received}, 0"
                )


CHECKS: tuple[tuple[str, Check], ...] = (
    ("order", check_order),
    ("end", check_end),
    ("half_close", check_half_close),
    ("error", check_error),
    ("backpressure", check_backpressure),
    ("large", check_large),
    ("concurrent_close", check_concurrent_close),
    ("close_unblocks_receiver", check_close_unblocks_receiver),
    ("cancellation", check_cancellation),
    ("stats", check_stats),
)
"""Every check, by name, in the order :func:`check_adapter` runs them."""


async def run_check(adapter: AdapterUnderTest, check: str | Check) -> None:
    """Run one check (a name from :data:`CHECKS`, or a check function) under the
    adapter's deadline. Raises :class:`AssertionError` naming the adapter, the check and
    what was observed (a hang is reported as such)."""
    if isinstance(check, str):
        found = dict(CHECKS).get(check)
        if found is None:
            raise ValueError(f"unknown check {check!r}; known: {', '.join(n for n, _ in CHECKS)}")
        name, fn = check, found
    else:
        fn = check
        name = next((n for n, c in CHECKS if c is check), getattr(check, "__name__", "check"))
    prefix = f"adapter {adapter.name!r}, check {name!r}"
    try:
        with trio.fail_after(adapter.time_limit):
            await fn(adapter)
    except trio.TooSlowError:
        raise AssertionError(
            f"{prefix}: did not finish within {adapter.time_limit:g} s (something hangs)"
        ) from None
    except Exception as exc:
        raise AssertionError(f"{prefix}: {_explain(exc)}") from exc


async def check_adapter(
    open_pair: OpenPair,
    *,
    bound: int,
    large: int = DEFAULT_LARGE,
    name: str = "",
    time_limit: float = DEFAULT_TIME_LIMIT,
    close_grace: float = DEFAULT_CLOSE_GRACE,
) -> None:
    """Run every check in :data:`CHECKS` against ``open_pair`` (see the module
    docstring); collect the failures and raise one :class:`AssertionError` listing
    them all."""
    adapter = AdapterUnderTest(
        name or getattr(open_pair, "__name__", "adapter"),
        open_pair,
        bound,
        large=large,
        time_limit=time_limit,
        close_grace=close_grace,
    )
    failures: list[str] = []
    for _, fn in CHECKS:
        try:
            await run_check(adapter, fn)
        except AssertionError as exc:
            failures.append(str(exc))
    if failures:
        raise AssertionError(
            f"adapter {adapter.name!r} failed {len(failures)} of {len(CHECKS)} checks:\n"
            + "\n".join(f"- {f}" for f in failures)
        )
