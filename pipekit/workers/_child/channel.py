"""The worker's channel to its parent, claimed before user code runs, and the rest of
the process's plumbing both child runtimes share: the runtime's own stderr lines,
flushing stdio before a hard exit, and the allocator's hold on freed memory.
Standard library only (the blocking runtime imports no trio)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys

from .._wire import FD_ENV
from .targets import TargetError

__all__ = ["claim_channel", "flush_stdio", "hold_freed_memory", "say"]


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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_HOLD = 64 << 20


def hold_freed_memory() -> None:
    """Let glibc keep up to 64 MiB of freed memory for reuse (and serve blocks below
    that from its heap, not from fresh mappings), where by default it gives back all
    but 128 KiB: a worker that receives and sends large messages otherwise page-faults
    every message's memory in anew (measured on a 64 KiB echo: 5.7 -> 1.1 faults and
    49 -> 39 us of the worker's CPU per message).
    Allocator settings of the user's own (``glibc.malloc.*`` in ``GLIBC_TUNABLES``, or
    ``MALLOC_*_`` variables) win: then nothing is changed."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc." in tunables or any(k.startswith("MALLOC_") for k in os.environ):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return  # not glibc
    mallopt(_M_TRIM_THRESHOLD, _HOLD)
    mallopt(_M_MMAP_THRESHOLD, _HOLD // 2)


def say(line: str) -> None:
    """Write ``pipekit worker: LINE`` to stderr (the runtime's own words, not user code's)."""
    print(f"pipekit worker: {line}", file=sys.stderr, flush=True)


def flush_stdio() -> None:
    """Flush stdout and stderr (before ``os._exit``), ignoring closed or broken ones."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
