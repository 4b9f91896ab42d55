"""The settings of a pipekit/1 pipe: the keywords a caller may pass, and their checks.

:class:`PipeOptions` lists every keyword :func:`~pipekit.kernel.framed_pipe` (and every
adapter built on it) accepts, :class:`ConnectionOptions` the part of them that
:class:`~pipekit.kernel.protocol.Connection` takes; :class:`PipeSettings` is the one
place that fills in their defaults and refuses bad values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

from ._frames import (
    DEFAULT_HIGH_WATER,
    DEFAULT_HIGH_WATER_BYTES,
    DEFAULT_MAX_FRAME,
    DEFAULT_PAUSE_SLACK,
    MAX_PAYLOAD,
)
from ._receivebuffer import DEFAULT_READ_SIZE
from .codecs import CODEC_NAMES

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_READ_SIZE",
    "DEFAULT_SEND_BUFFER",
    "ConnectionOptions",
    "PipeOptions",
    "PipeSettings",
]

DEFAULT_SEND_BUFFER = 1024 * 1024
"""Encoded bytes a sender may queue before ``send`` waits for the writer."""
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
"""Seconds the handshake may take."""
DEFAULT_CLOSE_TIMEOUT = 5.0
"""Seconds a close waits for the peer to END (or fail) its own direction after ours, and
then for the transport's EOF. Long enough for a healthy peer to take what it holds
(at most its high-water marks plus what is in flight) and answer with END; short enough
that a peer which keeps its direction open on purpose delays a close only briefly: past
it, a peer that has answered a PING sent after our END has provably received everything
we sent, and the close succeeds; one that has not is reported."""


class ConnectionOptions(TypedDict, total=False):
    """The pipekit/1 settings of one connection (see :class:`PipeSettings`)."""

    name: str | None
    codecs: Sequence[str]
    max_frame: int
    high_water: int
    low_water: int | None
    high_water_bytes: int
    low_water_bytes: int | None
    pause_slack: int


class PipeOptions(ConnectionOptions, total=False):
    """Every setting of a framed pipe: its connection's and its own (see
    :class:`PipeSettings`)."""

    send_buffer: int
    read_size: int
    handshake_timeout: float | None
    idle_timeout: float | None
    close_timeout: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PipeSettings:
    """Checked pipe settings with their defaults: ``PipeSettings(**options)`` raises
    :class:`ValueError` for a value that cannot work."""

    name: str | None = None
    """This side's name, sent in HELLO (default: ``initiator`` or ``acceptor``)."""
    codecs: Sequence[str] = CODEC_NAMES
    """Codecs an initiator offers, or an acceptor accepts, in preference order."""
    max_frame: int = DEFAULT_MAX_FRAME
    """The largest payload this side accepts."""
    high_water: int = DEFAULT_HIGH_WATER
    """Received messages waiting to be taken at which the peer is PAUSEd."""
    low_water: int | None = None
    """...and at which it is RESUMEd (default: half of ``high_water``)."""
    high_water_bytes: int = DEFAULT_HIGH_WATER_BYTES
    """Like ``high_water``, in DATA payload bytes (local, not announced)."""
    low_water_bytes: int | None = None
    """Like ``low_water``, in DATA payload bytes (default: half of ``high_water_bytes``)."""
    pause_slack: int = DEFAULT_PAUSE_SLACK
    """DATA bytes the peer may still deliver after our PAUSE."""
    send_buffer: int = DEFAULT_SEND_BUFFER
    """Encoded bytes a sender may queue before ``send`` waits for the writer."""
    read_size: int = DEFAULT_READ_SIZE
    """Bytes asked of the transport per read."""
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT
    """Seconds the handshake may take (None: no limit)."""
    idle_timeout: float | None = None
    """Seconds without input after which the pipe fails (None: no limit)."""
    close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT
    """Seconds a close waits for the peer's END or ERROR after ours (None: no limit; 0:
    no wait, only what has arrived is reported)."""

    def __post_init__(self) -> None:
        codecs = self.codecs
        unknown = [c for c in codecs if c not in CODEC_NAMES]
        if not codecs or unknown:
            raise ValueError(f"codecs must be a non-empty subset of {CODEC_NAMES}, got {codecs!r}")
        if not 1024 <= self.max_frame <= MAX_PAYLOAD:
            raise ValueError("max_frame must be between 1024 and 2**32-1")
        if self.high_water < 1:
            raise ValueError("high_water must be at least 1")
        if not 0 <= self.low_mark < self.high_water:
            raise ValueError("low_water must be in [0, high_water)")
        if self.high_water_bytes < 1:
            raise ValueError("high_water_bytes must be at least 1")
        if not 0 <= self.low_mark_bytes < self.high_water_bytes:
            raise ValueError("low_water_bytes must be in [0, high_water_bytes)")
        if self.handshake_timeout is not None and self.handshake_timeout <= 0:
            raise ValueError("handshake_timeout must be positive or None")
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive or None")
        if self.close_timeout is not None and self.close_timeout < 0:
            raise ValueError("close_timeout must be at least 0, or None")
        object.__setattr__(self, "codecs", tuple(codecs))

    @property
    def low_mark(self) -> int:
        """``low_water``, or its default."""
        return self.high_water // 2 if self.low_water is None else self.low_water

    @property
    def low_mark_bytes(self) -> int:
        """``low_water_bytes``, or its default."""
        return self.high_water_bytes // 2 if self.low_water_bytes is None else self.low_water_bytes
