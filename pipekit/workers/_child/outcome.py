"""How a worker run ends: its exit codes, what the target raised (captured where it was
raised and reported to the parent as an ERROR frame), and the exceptions that leave
the run early."""

from __future__ import annotations

import signal
import sys
import traceback
from typing import TYPE_CHECKING

from ...kernel.errors import ProtocolError

if TYPE_CHECKING:  # the blocking runtime imports this module without trio
    from ...kernel.framed import FramedPipe

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TERMINATED = 128 + signal.SIGTERM


def format_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` without its first frame (the runtime's own call)."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


class Failure:
    """What a worker raised, captured where it was raised: ``kind`` is the exception's
    string ``kind`` attribute if it has one, else its class name (as
    :meth:`~pipekit.kernel.Pipe.fail`); ``sys.exit(n)`` exits with ``n``."""

    def __init__(self, exc: BaseException) -> None:
        kind = getattr(exc, "kind", None)
        self.kind = kind if isinstance(kind, str) else type(exc).__name__
        self.message = str(exc) or type(exc).__name__
        self.traceback = format_traceback(exc)
        self.exit_code = EXIT_FAILED
        if isinstance(exc, SystemExit):
            self.message = str(exc.code)
            if isinstance(exc.code, int):
                self.exit_code = exc.code

    def report(self, pipe: FramedPipe) -> int:
        """Print the traceback to stderr and queue the ERROR frame (it goes out, after
        everything sent before, when the framed pipe is closed)."""
        sys.stderr.write(self.traceback)
        sys.stderr.flush()
        pipe.fail_nowait(self.kind, self.message, traceback=self.traceback)
        return self.exit_code


class ChannelLost(Exception):
    """The channel to the parent broke (closed without END, transport or protocol error)."""


class Stop(Exception):
    """Leave the run with the exit code ``code``, interrupting the worker thread."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def is_channel_loss(exc: BaseException, pipe: FramedPipe) -> bool:
    """True if ``exc`` (raised by user code) means the channel itself broke: EOF or a
    transport failure, or a protocol violation (not a message too large to send)."""
    import trio  # the trio runtime's question: loaded already

    from ...kernel.errors import RemoteError

    if isinstance(exc, RemoteError):
        return False
    if isinstance(exc, ProtocolError):
        return pipe.violation is not None
    return isinstance(exc, trio.BrokenResourceError)
