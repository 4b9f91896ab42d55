"""How a process failed: :class:`ProcessError` and its kinds."""

from __future__ import annotations

import signal as _signal
from enum import StrEnum
from typing import Literal

from ...kernel.errors import PipekitError


class ProcessErrorKind(StrEnum):
    """The ``kind`` of a :class:`ProcessError`; each kind equals its string."""

    SPAWN_FAILED = "spawn_failed"
    """The process could not be started."""
    TERMINATED = "terminated"
    """It exited with a non-zero code or was killed by a signal."""
    TIMEOUT = "timeout"
    """It ran past its ``timeout`` and was killed."""
    IO_ERROR = "io_error"
    """Its channel broke although the process itself did not fail."""


class ProcessError(PipekitError):
    """A process could not be started, died, timed out, or its I/O failed.

    ``kind`` is a :class:`ProcessErrorKind` (``spawn_failed``, ``terminated``,
    ``timeout`` or ``io_error``); ``pid``, ``exit_code`` (None if killed by a signal or
    never started), ``signal`` (the signal number that killed it, or None), ``stderr``
    (the tail of what it wrote to stderr, when captured) and ``program`` describe the
    process.

    Example::

        try:
            (pk.cmd("sh", "-c", "exit 3") | pk.collect()).run()
        except pk.ModuleError as exc:
            err = exc.__cause__                # ProcessError: sh (pid N) exited with code 3
            print(err.kind, err.exit_code)     # terminated 3
    """

    def __init__(
        self,
        kind: ProcessErrorKind | Literal["spawn_failed", "terminated", "timeout", "io_error"],
        message: str,
        *,
        program: str,
        pid: int | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
        stderr: str = "",
    ) -> None:
        self.kind = ProcessErrorKind(kind)
        self.program = program
        self.pid = pid
        self.exit_code = exit_code
        self.signal = signal
        self.stderr = stderr
        text = message
        if stderr.strip():
            text += "\n--- stderr (tail) ---\n" + stderr.rstrip()
        super().__init__(text)

    @property
    def signal_name(self) -> str | None:
        """The name of :attr:`signal` (``"SIGKILL"``), its number if it has no name, or
        None if no signal killed the process."""
        return None if self.signal is None else signal_name(self.signal)


def signal_name(number: int) -> str:
    """``"SIGTERM"`` for 15; the number itself for a signal without a name."""
    try:
        return _signal.Signals(number).name
    except ValueError:
        return str(number)
