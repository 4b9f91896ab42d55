"""The checks that what is sent arrives: order, END, half-close, ERROR, large messages
and the statistics that count them."""

from __future__ import annotations

from typing import Any

import trio

from ..kernel.pipe import Pipe, PipeStats
from ._adapter import AdapterUnderTest
from ._compare import describe, expect_same, short
from ._traffic import (
    ALLOWED_CLOSE_ERRORS,
    directions,
    expect_raises,
    receive_messages,
    send_messages,
    transfer,
)

__all__ = [
    "check_end",
    "check_error",
    "check_half_close",
    "check_large",
    "check_order",
    "check_stats",
]

ORDER_COUNT = 10_000
BURST_COUNT = 20
BURST_SIZE = 256 * 1024


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


async def _send_then_end(src: Pipe, messages: list[Any]) -> None:
    await send_messages(src, messages, batch=True)
    await src.end()


async def _order_one_way(label: str, src: Pipe, dst: Pipe, messages: list[Any]) -> None:
    await transfer(src, dst, messages, batch=False, what=f"{label} send/receive")
    await transfer(src, dst, messages, batch=True, what=f"{label} send_batch/receive_batch")
    got: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_send_then_end, src, messages)
        async for batch in dst.batches(512):
            if not batch or len(batch) > 512:
                raise AssertionError(f"{label}: batches(512) yielded a batch of {len(batch)}")
            got.extend(batch)
    expect_same(messages, got, f"{label} send_batch/batches()")


async def check_order(adapter: AdapterUnderTest) -> None:
    """10,000 messages of mixed types arrive complete, in order and with their types,
    each way, for every combination of ``send``/``send_batch`` and
    ``receive``/``receive_batch``/``batches()``."""
    messages = _order_messages(ORDER_COUNT)
    async with adapter.open_pair() as (a, b):
        for label, src, dst in directions(a, b):
            await _order_one_way(label, src, dst, messages)


async def _end_one_way(label: str, src: Pipe, dst: Pipe) -> None:
    messages = list(range(200))

    async def sender() -> None:
        await src.send_batch(messages[:100])
        for m in messages[100:]:
            await src.send(m)
        await src.end()
        await src.end()
        await expect_raises(
            lambda: src.send(-1), ALLOWED_CLOSE_ERRORS, f"{label}: send() after end()"
        )
        await expect_raises(
            lambda: src.send_batch([-1]),
            ALLOWED_CLOSE_ERRORS,
            f"{label}: send_batch() after end()",
        )

    got: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        async for m in dst:
            got.append(m)
            if len(got) > len(messages):
                raise AssertionError(f"{label}: received more than was sent")
    expect_same(messages, got, f"{label} before END")
    await expect_raises(dst.receive, (trio.EndOfChannel,), f"{label}: receive() after EndOfChannel")
    await expect_raises(
        dst.receive_batch, (trio.EndOfChannel,), f"{label}: receive_batch() after EndOfChannel"
    )


async def check_end(adapter: AdapterUnderTest) -> None:
    """After ``end()`` the peer receives everything sent before, then
    :class:`trio.EndOfChannel` (``async for`` stops; further receives raise it again);
    ``end()`` twice is harmless; ``send``/``send_batch`` after ``end()`` raise
    :class:`trio.ClosedResourceError` (or :class:`trio.BrokenResourceError`)."""
    async with adapter.open_pair() as (a, b):
        for label, src, dst in directions(a, b):
            await _end_one_way(label, src, dst)


async def _send_then_end_received(what: str, src: Pipe, dst: Pipe, messages: list[Any]) -> None:
    """``src`` sends ``messages`` and ENDs; ``dst`` must receive exactly those, then
    :class:`trio.EndOfChannel`."""
    got: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_send_then_end, src, messages)
        try:
            while len(got) <= len(messages):
                got.append(await dst.receive())
        except trio.EndOfChannel:
            pass
        else:
            raise AssertionError(f"{what}: received more than was sent")
    expect_same(messages, got, what)


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
        await send_messages(src, messages, batch=True)
        await src.fail(ValueError("boom"))
        await expect_raises(
            lambda: src.send(-1), ALLOWED_CLOSE_ERRORS, f"{label}: send() after fail()"
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        got = await receive_messages(dst, len(messages), batch=False, what=f"{label} before ERROR")
    expect_same(messages, got, f"{label} before ERROR")
    try:
        extra = await dst.receive()
    except trio.EndOfChannel:
        raise AssertionError(
            f"{label}: the failure was lost: receive() raised EndOfChannel"
        ) from None
    except Exception as exc:
        if "boom" not in str(exc):
            raise AssertionError(
                f"{label}: receive() raised {describe(exc)}; the text 'boom' was lost"
            ) from exc
    else:
        raise AssertionError(f"{label}: receive() after the failure returned {short(extra)}")


async def check_error(adapter: AdapterUnderTest) -> None:
    """``fail(ValueError("boom"))``: the peer receives everything sent before, then its
    ``receive()`` raises an exception whose text contains "boom" (a
    :class:`~pipekit.kernel.RemoteError` - a :class:`trio.BrokenResourceError` - across
    a wire; in process possibly the pipekit error itself), never
    :class:`trio.EndOfChannel`; ``send()`` after ``fail()`` raises. Each way."""
    async with adapter.open_pair() as (a, b):
        for label, src, dst in directions(a, b):
            await _error_one_way(label, src, dst)


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
        for label, src, dst in directions(a, b):
            await transfer(src, dst, big, batch=False, what=f"{label} large messages")
            await transfer(src, dst, burst, batch=False, what=f"{label} 256 KiB burst")


async def check_stats(adapter: AdapterUnderTest) -> None:
    """After traffic each way, ``stats`` (a :class:`~pipekit.kernel.PipeStats`) counts
    exactly the messages each end sent and received, and nothing is left queued."""
    counts = {"a->b": 300, "b->a": 170}
    async with adapter.open_pair() as (a, b):
        for label, src, dst in directions(a, b):
            messages = list(range(counts[label]))
            half = len(messages) // 2
            await transfer(src, dst, messages[:half], batch=True, what=f"{label} traffic")
            await transfer(src, dst, messages[half:], batch=False, what=f"{label} traffic")
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
