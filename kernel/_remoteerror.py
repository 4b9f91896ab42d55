"""The peer's ERROR as an exception: :class:`RemoteError`, a :class:`PipekitError` that is
also a :class:`trio.BrokenResourceError` (the other end broke the channel), so code
written against plain trio channels keeps working.

It lives apart from ``errors.py`` because it needs trio: ``errors.py`` imports it on the
first use of the name, and everything else imports it from there. Its ``__module__`` is
``pipekit.kernel.errors``, where users find it (and where pickle looks it up).
"""

from __future__ import annotations

from typing import Any

import trio

from .errors import PipekitError

__all__ = ["RemoteError"]


class RemoteError(PipekitError, trio.BrokenResourceError):
    """The peer ended its direction of the pipe with an ERROR frame.

    ``kind`` and ``message`` are the fields of the ERROR payload; ``details`` holds any
    other fields the peer sent.

    Example::

        try:
            await pipe.receive()
        except pk.RemoteError as exc:               # the peer failed its direction
            print(exc.kind, exc.message, exc.details)
    """

    def __init__(self, kind: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def __reduce__(self) -> tuple[Any, ...]:
        # (args holds the formatted text only: pickle rebuilds it from the fields.)
        return (type(self), (self.kind, self.message, self.details), self.__dict__)


RemoteError.__module__ = "pipekit.kernel.errors"
