"""The node layer's messages: what two nodes say to each other over one pipekit/1 pipe.

I/O-free: values in, values out. Every node message is an array whose first element
names it (see ``docs/protocol.md``, section "Nodes"); positions that hold a pid carry
its string form. A :class:`Pid` inside a payload (or a result) travels as the one-key
map ``{"$pid": "<pid string>"}``; a map of the application's whose only key is
``"$pid"`` or ``"$map"`` is escaped as ``{"$map": <the map>}``. Scalars (the common
payload) are passed through after one type check; arrays and maps are looked through
once, and copied only if they hold a Pid or a nested array or map.
"""

from __future__ import annotations

from typing import Any

from ._errors import (
    ActorError,
    LinkedFailure,
    MailboxFull,
    NoConnection,
    NoSuchProcess,
    RemoteFailure,
    SpawnError,
    Terminated,
)
from ._pid import Pid

__all__ = [
    "CANCEL",
    "DOWN",
    "EXIT",
    "HELLO",
    "LINK",
    "MONITOR",
    "PLAIN",
    "REGISTER",
    "SEND",
    "SEND_WAIT",
    "SPAWN",
    "TERMINATE",
    "UNDELIVERED",
    "UNLINK",
    "UNMONITOR",
    "UNREGISTER",
    "VERSION",
    "decode_error",
    "decode_value",
    "encode_error",
    "encode_value",
    "hello",
    "parse_hello",
]

VERSION = 1
"""The node layer's version, sent in HELLO."""

HELLO = "hello"
SEND = "s"
SEND_WAIT = "sw"
LINK = "link"
UNLINK = "unlink"
MONITOR = "mon"
UNMONITOR = "unmon"
EXIT = "exit"
DOWN = "down"
TERMINATE = "term"
CANCEL = "cancel"
SPAWN = "spawn"
UNDELIVERED = "undelivered"
REGISTER = "reg"
UNREGISTER = "unreg"

_PLAIN = frozenset({str, int, float, bool, type(None), bytes})
PLAIN = _PLAIN
"""The types :func:`encode_value` passes through as they are."""
_PID_KEY = "$pid"
_MAP_KEY = "$map"


# -- values ----------------------------------------------------------------------------


def encode_value(value: Any) -> Any:
    """``value`` as the wire carries it: Pids as ``{"$pid": str}``, maps that look like
    that escaped. Scalars, and arrays and maps holding only scalars, come back as they
    are (no copy)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is Pid:
        return {_PID_KEY: str(value)}
    if kind is list or kind is tuple:
        for v in value:
            if type(v) not in _PLAIN:
                return [encode_value(v) for v in value]
        return value
    if kind is dict:
        if len(value) == 1 and (_PID_KEY in value or _MAP_KEY in value):
            return {_MAP_KEY: {k: encode_value(v) for k, v in value.items()}}
        for v in value.values():
            if type(v) not in _PLAIN:
                return {k: encode_value(v) for k, v in value.items()}
        return value
    return value  # the codec says whether it can carry it


def decode_value(value: Any) -> Any:
    """The inverse of :func:`encode_value` (``ValueError`` for a malformed pid).
    Arrays and maps holding no array or map come back as they are."""
    kind = type(value)
    if kind is list:
        for v in value:
            t = type(v)
            if t is list or t is dict:
                return [decode_value(v) for v in value]
        return value
    if kind is dict:
        if len(value) == 1:
            text = value.get(_PID_KEY)
            if text is not None:
                return Pid.parse(text)
            inner = value.get(_MAP_KEY)
            if type(inner) is dict:
                return {k: decode_value(v) for k, v in inner.items()}
        for v in value.values():
            t = type(v)
            if t is list or t is dict:
                return {k: decode_value(v) for k, v in value.items()}
        return value
    return value


# -- errors ----------------------------------------------------------------------------

_KNOWN: dict[str, type[ActorError]] = {
    "NoSuchProcess": NoSuchProcess,
    "MailboxFull": MailboxFull,
    "SpawnError": SpawnError,
}


def encode_error(error: BaseException | None) -> dict[str, Any] | None:
    """An exception as a map: ``type`` (its class name), ``message`` (``str``), and
    ``reason`` for the runtime's errors that have one."""
    if error is None:
        return None
    out: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, Terminated | NoConnection):
        out["reason"] = error.reason
    elif isinstance(error, LinkedFailure):
        out["pid"] = str(error.pid)
        out["reason"] = encode_error(error.reason)
    elif isinstance(error, RemoteFailure):
        out["type"] = error.type
    return out


def decode_error(data: Any) -> BaseException | None:
    """The exception :func:`encode_error` describes: the runtime's own come back as
    their class; any other as :class:`RemoteFailure` (``type``, ``message``)."""
    if data is None:
        return None
    if type(data) is not dict:
        return RemoteFailure("?", repr(data))
    kind = str(data.get("type", "?"))
    message = str(data.get("message", ""))
    if kind == "Terminated":
        return Terminated(str(data.get("reason", message)))
    if kind == "NoConnection":
        return NoConnection(message)
    if kind == "LinkedFailure":
        try:
            pid = Pid.parse(str(data.get("pid")))
        except (TypeError, ValueError):
            return RemoteFailure(kind, message)
        reason = decode_error(data.get("reason")) or RemoteFailure("?", "")
        return LinkedFailure(pid, reason)
    known = _KNOWN.get(kind)
    if known is not None:
        return known(message)
    return RemoteFailure(kind, message)


# -- the hello -------------------------------------------------------------------------


def hello(node: str, names: dict[str, str]) -> list[Any]:
    """This node's HELLO: ``["hello", VERSION, node, {name: pid string}]``."""
    return [HELLO, VERSION, node, names]


def parse_hello(message: Any) -> tuple[str, dict[str, Pid]]:
    """The peer's node name and names from its HELLO; ``ValueError`` if it is not one."""
    if (
        type(message) is not list
        or len(message) < 4
        or message[0] != HELLO
        or type(message[2]) is not str
        or type(message[3]) is not dict
    ):
        raise ValueError(f"expected a node HELLO, got {message!r:.200}")
    if message[1] != VERSION:
        raise ValueError(f"node layer version {message[1]!r} is not supported (this: 1)")
    names = {str(k): Pid.parse(v) for k, v in message[3].items()}
    return message[2], names
