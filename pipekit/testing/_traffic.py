"""Moving messages through a pair: sending, receiving and both at once, each way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import trio

from ..kernel.pipe import Pipe
from ._compare import describe, expect_same, short

__all__ = [
    "ALLOWED_CLOSE_ERRORS",
    "directions",
    "expect_raises",
    "receive_messages",
    "send_messages",
    "transfer",
]

ALLOWED_CLOSE_ERRORS = (trio.ClosedResourceError, trio.BrokenResourceError)


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


def directions(a: Pipe, b: Pipe) -> tuple[tuple[str, Pipe, Pipe], tuple[str, Pipe, Pipe]]:
    return (("a->b", a, b), ("b->a", b, a))


async def send_messages(src: Pipe, messages: Sequence[Any], *, batch: bool) -> None:
    if batch:
        for chunk in _chunked(messages):
            await src.send_batch(list(chunk))
    else:
        for m in messages:
            await src.send(m)


async def receive_messages(dst: Pipe, n: int, *, batch: bool, what: str) -> list[Any]:
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


async def transfer(
    src: Pipe, dst: Pipe, messages: Sequence[Any], *, batch: bool, what: str
) -> None:
    """Send ``messages`` while receiving them concurrently; compare."""
    got: list[Any] = []

    async def consume() -> None:
        got.extend(await receive_messages(dst, len(messages), batch=batch, what=what))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await send_messages(src, messages, batch=batch)
    expect_same(messages, got, what)


async def expect_raises(
    call: Callable[[], Awaitable[Any]], allowed: tuple[type[BaseException], ...], what: str
) -> BaseException:
    try:
        result = await call()
    except allowed as exc:
        return exc
    except Exception as exc:
        names = " or ".join(t.__name__ for t in allowed)
        raise AssertionError(f"{what}: expected {names}, got {describe(exc)}") from exc
    names = " or ".join(t.__name__ for t in allowed)
    raise AssertionError(f"{what}: expected {names}, but it returned {short(result)}")
