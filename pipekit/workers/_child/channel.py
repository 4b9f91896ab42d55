"""The worker's channel to its parent, claimed before user code runs."""

from __future__ import annotations

import os
import socket
import sys

from .._wire import FD_ENV
from .targets import TargetError

__all__ = ["claim_channel"]


def claim_channel() -> socket.socket | tuple[int, int]:
    """The channel: the stream socket named in ``FD_ENV`` (made non-inheritable), or,
    without one, duplicates of stdin and stdout as ``(read_fd, write_fd)``; then 0 is
    pointed at ``/dev/null`` and 1 (and ``sys.stdout``) at stderr, so user code's
    prints cannot corrupt frames. :class:`TargetError` if ``FD_ENV`` names no usable
    stream socket."""
    text = os.environ.pop(FD_ENV, None)
    if text is not None:
        try:
            sock = socket.socket(fileno=int(text))
        except (ValueError, OSError) as exc:
            raise TargetError(f"{FD_ENV}={text!r} is not a usable socket: {exc}") from None
        if sock.type != socket.SOCK_STREAM:
            raise TargetError(f"{FD_ENV}={text!r} is not a stream socket")
        sock.set_inheritable(False)
        return sock
    sys.stdout.flush()
    rfd, wfd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    return rfd, wfd
