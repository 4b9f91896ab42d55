"""The events a :class:`~pipekit.kernel.protocol.Connection` reports for received bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError

__all__ = [
    "EndReceived",
    "ErrorReceived",
    "Event",
    "HandshakeComplete",
    "MessagesReceived",
    "PauseReceived",
    "PingReceived",
    "PongReceived",
    "ProtocolViolation",
    "ResumeReceived",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of everything :meth:`Connection.receive_data` reports."""


@dataclass(frozen=True, slots=True)
class HandshakeComplete(Event):
    """Both HELLOs are exchanged; DATA may flow. ``peer`` is the peer's HELLO."""

    peer: dict[str, Any]
    codec: str


@dataclass(frozen=True, slots=True)
class MessagesReceived(Event):
    """One or more messages, in order, from one or more DATA frames."""

    messages: list[Any]


@dataclass(frozen=True, slots=True)
class EndReceived(Event):
    """The peer sent END: no more DATA will arrive."""


@dataclass(frozen=True, slots=True)
class ErrorReceived(Event):
    """The peer sent ERROR: its direction ended with a failure."""

    kind: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PingReceived(Event):
    """The peer sent PING; the PONG echo is already queued."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class PongReceived(Event):
    payload: bytes


@dataclass(frozen=True, slots=True)
class PauseReceived(Event):
    """The peer asked us to stop sending DATA until it sends RESUME."""


@dataclass(frozen=True, slots=True)
class ResumeReceived(Event):
    """The peer lifted its PAUSE."""


@dataclass(frozen=True, slots=True)
class ProtocolViolation(Event):
    """The received bytes broke the protocol. Always the last event: an ERROR frame with
    the reason is queued, both directions are failed, and the transport should be closed
    once :meth:`Connection.data_to_send` is written."""

    error: ProtocolError
