"""The adapter under test: how a conformance check is given one, and its bound.

An adapter is described by an ``open_pair`` callable and the most messages its
``send()`` may accept while the other end never receives (its backpressure ``bound``);
:func:`framed_bound` computes that bound for one pipekit/1 hop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from ..kernel.framed import DEFAULT_SEND_BUFFER
from ..kernel.pipe import Pipe
from ..kernel.protocol import DEFAULT_COALESCE_BYTES, DEFAULT_HIGH_WATER, DEFAULT_PAUSE_SLACK

__all__ = [
    "BACKPRESSURE_MESSAGE_SIZE",
    "DEFAULT_CLOSE_GRACE",
    "DEFAULT_LARGE",
    "DEFAULT_TIME_LIMIT",
    "AdapterUnderTest",
    "Check",
    "OpenPair",
    "backpressure_message",
    "framed_bound",
]

OpenPair = Callable[[], AbstractAsyncContextManager[tuple[Pipe, Pipe]]]
"""Returns an async context manager yielding two connected pipe ends ``(a, b)``."""

DEFAULT_LARGE = 4 * 1024 * 1024
DEFAULT_CLOSE_GRACE = 5.0
DEFAULT_TIME_LIMIT = 20.0
BACKPRESSURE_MESSAGE_SIZE = 1000
"""Characters in each message of the backpressure and cancellation checks."""


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
