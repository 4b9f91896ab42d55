"""The exception hierarchy shared by every layer of pipekit.

Every error pipekit raises on purpose is a :class:`PipekitError`. Errors that mean
"the other end broke the channel" also subclass :class:`trio.BrokenResourceError`, so
code written against plain trio channels keeps working.

This module imports no trio, so the I/O-free protocol (and a worker that only speaks
it) starts without it: :class:`RemoteError`, the one error that is also trio's, is
defined in ``_remoteerror.py`` and imported from here on first use (``from
pipekit.kernel.errors import RemoteError`` works as for any other name).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._remoteerror import RemoteError

__all__ = [
    "CodecError",
    "ErrorKind",
    "FlowControlError",
    "LocalProtocolError",
    "ModuleError",
    "PipekitError",
    "ProtocolError",
    "RemoteError",
    "RemoteProtocolError",
    "WiringError",
]


class ErrorKind(StrEnum):
    """The ``kind`` of every error pipekit itself reports: the protocol's
    (``docs/protocol.md`` section 8) and those it sends on its own behalf (section 5).
    All snake_case. A ``StrEnum``: each member equals its string, as it travels in an
    ERROR frame, so ``exc.kind == "oversize"`` holds as well as ``exc.kind is
    ErrorKind.OVERSIZE``. Peers and applications may send kinds of their own (an
    exception without a ``kind`` travels as its class name): a received kind is a
    ``str``.

    Example::

        except pk.RemoteError as exc:
            if exc.kind == ErrorKind.AUTH_FAILED:    # or == "auth_failed"
                ...
    """

    PROTOCOL_ERROR = "protocol_error"
    """A :class:`ProtocolError` raised without a more precise kind."""
    MALFORMED = "malformed"
    OVERSIZE = "oversize"
    UNDECODABLE = "undecodable"
    FLOW_CONTROL = "flow_control"
    VERSION_MISMATCH = "version_mismatch"
    CODEC_MISMATCH = "codec_mismatch"
    AUTH_FAILED = "auth_failed"
    HANDSHAKE = "handshake"
    """The connection closed before the handshake completed."""
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    BUSY = "busy"
    """A server refused the peer: it already serves its maximum number of peers."""
    STATE = "state"
    """Local misuse of the API (sending before the handshake or after END); never sent."""
    CANCELLED = "cancelled"
    """The module talking to a peer was stopped."""
    MODULE_FAILED = "module_failed"
    """A module failed: the kind of :class:`ModuleError`, which a peer fed by the failed
    module's output receives in an ERROR frame."""


class PipekitError(Exception):
    """Base class of every error pipekit raises on purpose.

    Example::

        try:
            pipeline.run()
        except pk.PipekitError as exc:              # any of pipekit's own errors
            print("pipekit:", exc)
    """


class ProtocolError(PipekitError):
    """The pipekit/1 byte stream broke a rule of the protocol.

    ``kind`` is the short machine-readable reason that also travels in the ERROR frame
    sent to the peer (see :class:`ErrorKind`). :class:`RemoteProtocolError` says the peer
    broke the rule, :class:`LocalProtocolError` that this side misused the API; a message
    too large for the peer's max frame is refused on send with a plain ``ProtocolError``
    of kind ``oversize``.

    Example::

        try:
            async with framed_pipe(stream, initiator=False, expected_token="s3cret"):
                ...
        except pk.ProtocolError as exc:
            print(exc.kind)                         # auth_failed: a wrong token
    """

    kind: str = ErrorKind.PROTOCOL_ERROR

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class LocalProtocolError(ProtocolError):
    """This side misused the protocol: sending before the handshake or after END, or a
    payload too large to be framed at all.

    Example::

        conn = Connection(initiator=True)
        conn.send(1)                                # LocalProtocolError: before HELLO
    """


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol: malformed or oversize input, a bad HELLO, a wrong
    token, a handshake that never completed, silence past the idle timeout.

    Example::

        except pk.RemoteProtocolError as exc:       # the peer's fault, not ours
            print(exc.kind)                         # malformed, oversize, idle_timeout...
    """


class FlowControlError(RemoteProtocolError):
    """The peer kept sending past what flow control allows: DATA after our PAUSE beyond
    ``pause_slack``, or PINGs while it does not read the PONGs it is owed.

    Example::

        except pk.FlowControlError:                 # kind "flow_control": disconnected
            log.warning("a peer ignored PAUSE")
    """

    kind = ErrorKind.FLOW_CONTROL


class ModuleError(PipekitError):
    """A module of a kernel (or a stage of a pipeline) failed.

    ``module`` names the failing module; the original exception is ``__cause__``. Its
    ``kind`` is ``module_failed``: a peer downstream of the failed module (a remote
    stage, a frames-mode process) is failed with an ERROR of that kind, whose message
    names the module and its exception.

    Example::

        try:
            (pk.source([1, 0]) | pk.map(lambda n: 1 / n)).run()
        except pk.ModuleError as exc:
            print(exc.module, exc.item_index, repr(exc.__cause__))
            # map(<lambda>) 1 ZeroDivisionError('division by zero')
    """

    kind: str = ErrorKind.MODULE_FAILED
    item_index: int | None = None
    """The place, in the stage's input, of the message the stage failed on, when the
    stage knows it (set by pipelines: a source's is how many items it had emitted)."""
    item: str | None = None
    """A short ``repr`` of that message (``None`` if unknown, and for a source)."""

    def __init__(self, module: str, message: str | None = None) -> None:
        self.module = module
        super().__init__(message or f"module {module!r} failed")


class WiringError(PipekitError):
    """A kernel's modules were connected in a way that cannot run (unknown module,
    port connected twice, port left unconnected).

    Example::

        async with open_kernel() as k:
            k.add(consume)                          # async def consume(inp)
        # WiringError: cannot start: input consume.inp is not connected
    """


class CodecError(PipekitError, TypeError):
    """A message could not be encoded with the pipe's codec (an unsupported type).

    Example::

        (pk.source([b"raw"]) | pk.cmd("cat")).run()   # ModuleError, caused by CodecError:
        # bytes are not JSON (mode="bytes" passes them through)
    """


if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """``RemoteError`` on first use (it imports trio); see the module docstring."""
        if name == "RemoteError":
            from ._remoteerror import RemoteError

            globals()["RemoteError"] = RemoteError
            return RemoteError
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
