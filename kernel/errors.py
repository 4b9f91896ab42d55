"""The exception hierarchy shared by every layer of pipekit.

Every error pipekit raises on purpose is a :class:`PipekitError`. Errors that mean
"the other end broke the channel" also subclass :class:`trio.BrokenResourceError`, so
code written against plain trio channels keeps working.
"""

from __future__ import annotations

from typing import Any

import trio

__all__ = [
    "CodecError",
    "FlowControlError",
    "ModuleError",
    "PipekitError",
    "ProtocolError",
    "RemoteError",
    "WiringError",
]


class PipekitError(Exception):
    """Base class of every error pipekit raises on purpose."""


class ProtocolError(PipekitError):
    """The pipekit/1 byte stream broke a rule of the protocol.

    ``kind`` is the short machine-readable reason that also travels in the ERROR frame
    sent to the peer (``"malformed"``, ``"oversize"``, ``"flow_control"``, ...).
    """

    kind: str = "protocol_error"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class FlowControlError(ProtocolError):
    """The peer kept sending DATA past the hard cap after we sent PAUSE."""

    kind = "flow_control"


class RemoteError(PipekitError, trio.BrokenResourceError):
    """The peer ended its direction of the pipe with an ERROR frame.

    ``kind`` and ``message`` are the fields of the ERROR payload; ``details`` holds any
    other fields the peer sent.
    """

    def __init__(self, kind: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


class ModuleError(PipekitError):
    """A module of a kernel (or a stage of a pipeline) failed.

    ``module`` names the failing module; the original exception is ``__cause__``.
    """

    def __init__(self, module: str, message: str | None = None) -> None:
        self.module = module
        super().__init__(message or f"module {module!r} failed")


class WiringError(PipekitError):
    """A kernel's modules were connected in a way that cannot run (unknown module,
    port connected twice, port left unconnected)."""


class CodecError(PipekitError, TypeError):
    """A message could not be encoded with the pipe's codec (an unsupported type)."""
