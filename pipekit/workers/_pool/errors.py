"""Failed items as values: :class:`WorkerError` and the kinds the pool gives it."""

from __future__ import annotations

import enum
from typing import Any

from ...kernel import PipekitError
from .._wire import parse_error_entry


class WorkerErrorKind(enum.StrEnum):
    """The kinds of :class:`WorkerError` the pool gives an item itself (an item whose
    function raised has the exception's class name as its kind)."""

    TERMINATED = "terminated"
    """The item crashed its worker (or was lost with workers that died twice)."""
    TIMEOUT = "timeout"
    """The item ran longer than the pool's ``timeout``."""


class WorkerError(PipekitError):
    """A failed item, delivered as a value in place of its result.

    ``kind``: the exception's class name if the function raised (``"ValueError"``...),
    ``"terminated"`` if the item crashed its worker, ``"timeout"`` if it ran longer than
    the pool's ``timeout``, ``"CodecError"`` or ``"ProtocolError"`` if the item could not
    be sent (not encodable, or larger than a frame). ``message``: the exception's text or
    what happened to the process. ``index``: the item's position in the input of
    ``map``/``imap_unordered`` (None for ``submit``). ``traceback``: the remote traceback
    text when the function raised, else ``""``. ``remote``: True when the exception was
    raised in the worker. ``pid``, ``exit_code``, ``signal`` and ``stderr`` (its tail)
    describe the worker process for ``terminated``/``timeout``; the
    :class:`~pipekit.ProcessError` is then the ``__cause__``.

    ``str(error)`` is ``"kind: message"``.

    Example::

        results = await pool.map(["a b", ""])
        for r in results:
            if isinstance(r, pk.WorkerError):
                print(r.kind, r.index, r.message)   # ValueError 1 empty text
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        index: int | None = None,
        traceback: str = "",
        remote: bool = False,
        pid: int | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
        stderr: str = "",
    ) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.index = index
        self.traceback = traceback
        self.remote = remote
        self.pid = pid
        self.exit_code = exit_code
        self.signal = signal
        self.stderr = stderr

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_worker_error, (self.kind, self.message, dict(self.__dict__)))

    def __repr__(self) -> str:
        where = f", index={self.index}" if self.index is not None else ""
        pid = f", pid={self.pid}" if self.pid is not None else ""
        return f"WorkerError({str(self.kind)!r}, {self.message!r}{where}{pid})"


def _rebuild_worker_error(kind: str, message: str, state: dict[str, Any]) -> WorkerError:
    err = WorkerError(kind, message)
    err.__dict__.update(state)
    return err


def remote_error(info: Any, index: int | None, pid: int) -> WorkerError:
    """The error value of an item whose function raised in the worker (``info``: the
    reply's error entry)."""
    kind, message, traceback = parse_error_entry(info)
    return WorkerError(kind, message, index=index, traceback=traceback, remote=True, pid=pid)


def unsendable_error(exc: BaseException, index: int | None, pid: int) -> WorkerError:
    """The error value of an item that could not be encoded (``exc``) and was not sent."""
    err = WorkerError(type(exc).__name__, str(exc), index=index, pid=pid)
    err.__cause__ = exc
    return err
