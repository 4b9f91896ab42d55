"""Item mode without an event loop: the worker's main thread reads its channel, runs the
function and writes the replies itself, driving the I/O-free pipekit/1
:class:`~pipekit.kernel.protocol.Connection` with blocking reads and writes.

The trio item runtime (``runtime`` + ``bridge`` + ``items``) hands every request from
a reader task through a thread lane to the function's thread and every reply back the
same way: two cross-thread wake-ups and several task switches per call. Here there is
one thread: a request is decoded, run and answered, and everything answered before
the next read that would block goes out in one write. The item loop itself is
``items.item_body`` (the same slicing, progress record, error entries and reply
batching as the trio runtime); this module only gives it a blocking port.

What the trio runtime guarantees holds here too: the handshake and codec choice are
the Connection's; PAUSE from the parent stops DATA (the Connection holds it, and past
:attr:`~pipekit.kernel.PipeSettings.send_buffer` bytes held the loop stops calling the
function and only reads, for RESUME, END or ERROR); requests the loop has not taken
count as unconsumed, so the Connection PAUSEs the parent at its high-water marks;
replies that cannot be encoded (or exceed the parent's max frame) become error
replies (``items.send_item_replies``); a failure of the function, of ``init`` or an
ERROR from the parent is reported as the trio runtime reports it (``outcome.Failure``);
SIGTERM and the parent's death stop the process (``signals``: with no run going, the
handler raises :class:`SystemExit` in this thread, which interrupts a blocking read).
The one difference: while the function runs, nothing reads the channel, so a PAUSE
takes effect at the next reply (the replies of one request, at most one chunk, go out
in any case) and a parent's ERROR is seen after the current request.

This runtime imports no trio (a third of a worker's start-up): the item loop is told
the end of input by :class:`InputEnded`, and ``items``, ``outcome`` and ``signals``
import trio only inside what the trio runtime calls. The one exception is the
parent's ERROR, raised as :class:`~pipekit.kernel.RemoteError` (a
``trio.BrokenResourceError``): the last thing such a worker does.

:func:`run_blocking_items` is chosen by ``boot.main`` for every item-mode worker unless
``$PIPEKIT_ITEM_RUNTIME`` is ``trio`` (:data:`RUNTIME_ENV`).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, cast

from ...kernel import errors
from ...kernel.errors import CodecError, ErrorKind, ProtocolError
from ...kernel.options import PipeSettings
from ...kernel.protocol import (
    Connection,
    EndReceived,
    ErrorReceived,
    Event,
    MessagesReceived,
    ProtocolViolation,
)
from .channel import claim_channel, flush_stdio, hold_freed_memory, say
from .items import item_body, progress_marker, send_item_replies
from .outcome import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ChannelLost, Failure
from .signals import install_signal_handlers, state
from .targets import TargetError, check_callable_with, load_target

__all__ = ["RUNTIME_ENV", "BlockingPort", "InputEnded", "run_blocking_items"]

RUNTIME_ENV = "PIPEKIT_ITEM_RUNTIME"
"""Set to ``trio`` to run item-mode workers on the trio runtime instead of this one."""


def use_blocking(mode: str) -> bool:
    """Whether a worker of ``mode`` runs on this runtime (item mode, unless
    :data:`RUNTIME_ENV` says ``trio``)."""
    return mode == "item" and os.environ.get(RUNTIME_ENV, "") != "trio"


class InputEnded(Exception):
    """The parent ENDed its direction: :meth:`BlockingPort.receive_batch` raises it once
    the requests before the END are taken (the item loop's ``end``; the trio runtime's
    port raises :class:`trio.EndOfChannel`, this runtime imports no trio)."""


class BlockingPort:
    """The channel to the parent as the item loop's port: ``receive_batch`` blocks on
    the channel's descriptor, ``send_batch`` queues and writes. Also the pipe that
    :class:`~.outcome.Failure` reports to (``fail_nowait``)."""

    def __init__(self, rfd: int, wfd: int, settings: PipeSettings, name: str) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.name = name
        self.settings = settings
        self.conn = Connection(initiator=False, settings=settings)
        self._inbox: list[Any] = []
        self._final: BaseException | None = None  # raised once the inbox is empty
        self._eof = False

    # -- reading ----------------------------------------------------------------------

    def _read(self, timeout: float | None = None) -> bool:
        """Read what the channel has (blocking; at most ``timeout`` seconds) and take
        its events; False if the timeout passed first. Raises :class:`ChannelLost` at
        EOF or on a protocol violation (after writing the ERROR it queued)."""
        if timeout is not None:
            ready, _, _ = select.select([self.rfd], [], [], max(0.0, timeout))
            if not ready:
                return False
        conn = self.conn
        count = os.readv(self.rfd, [conn.receive_buffer(self.settings.read_size)])
        if count == 0:
            self._eof = True
            self._take(conn.receive_eof())
            raise ChannelLost("the parent closed the channel without END")
        self._take(conn.receive_filled(count))
        return True

    def _take(self, events: list[Event]) -> None:
        for event in events:
            kind = type(event)
            if kind is MessagesReceived:
                self._inbox.extend(cast(MessagesReceived, event).messages)
            elif kind is EndReceived:
                self._final = InputEnded()
            elif kind is ErrorReceived:
                err = cast(ErrorReceived, event)
                # RemoteError is also trio's BrokenResourceError: the parent's ERROR
                # (this worker's last message) is the one path that imports trio.
                self._final = errors.RemoteError(err.kind, err.message, err.details)
            elif kind is ProtocolViolation:
                with contextlib.suppress(OSError):
                    self.flush()  # the ERROR the Connection queued for the parent
                raise ChannelLost(str(cast(ProtocolViolation, event).error))
            # HandshakeComplete, PAUSE/RESUME (the Connection keeps the state), PING
            # (its PONG is queued), PONG: nothing to do here.

    def handshake(self) -> None:
        """Wait for the parent's HELLO and answer it (within ``handshake_timeout``)."""
        limit = self.settings.handshake_timeout
        deadline = None if limit is None else time.monotonic() + limit
        while self.conn.codec is None:
            left = None if deadline is None else deadline - time.monotonic()
            if (left is not None and left <= 0) or not self._read(left):
                raise ChannelLost("no HELLO from the parent in time")
            self.flush()

    def receive_batch(self, max_count: int = 512) -> list[Any]:
        """Up to ``max_count`` requests; first writes everything queued, then blocks
        while there is none. Raises :class:`InputEnded` after the parent's END,
        :class:`~pipekit.kernel.RemoteError` after its ERROR."""
        self.flush()
        inbox = self._inbox
        while not inbox:
            if self._final is not None:
                raise self._final
            self._read()
            self.flush()  # RESUME, PONG, ...
        batch = inbox[:max_count]
        del inbox[:max_count]
        if self.conn.consumed(len(batch)):
            self.flush()  # the RESUME it queued
        return batch

    # -- writing ----------------------------------------------------------------------

    def send_batch(self, values: Sequence[Any]) -> None:
        """Queue ``values`` (replies that cannot be encoded become error replies) and
        write; while the parent has paused us and more than ``send_buffer`` bytes are
        held, only read (for RESUME)."""
        conn = self.conn
        try:
            conn.send_many(values)
        except (CodecError, ProtocolError) as exc:
            if isinstance(exc, ProtocolError) and exc.kind != ErrorKind.OVERSIZE:
                raise
            _run_sync(send_item_replies(cast(Any, _SendShim(conn)), list(values)))
        self.flush()
        while conn.peer_paused and conn.buffered_bytes > self.settings.send_buffer:
            if self._eof:
                raise ChannelLost("the parent closed the channel while pausing it")
            self._read()
            self.flush()

    def flush(self) -> None:
        """Write everything the Connection has ready (blocking until it is written)."""
        pieces = self.conn.data_to_send_pieces()
        while pieces:
            written = os.writev(self.wfd, pieces)
            while pieces and written >= len(pieces[0]):
                written -= len(pieces[0])
                del pieces[0]
            if written:
                pieces[0] = memoryview(pieces[0])[written:]

    def fail_nowait(self, kind: str, message: str, **details: Any) -> None:
        """Queue ERROR ``{kind, message, **details}`` (as ``FramedPipe.fail_nowait``)."""
        self.conn.fail(kind, message, **details)

    def end(self) -> None:
        """Queue END and write it."""
        self.conn.end()
        self.flush()

    def close(self) -> None:
        """Write what is queued, close our direction and give the parent
        ``close_timeout`` seconds to close its own (so an ERROR is not lost to a reset)."""
        self.flush()
        with contextlib.suppress(OSError):
            if self.rfd == self.wfd:
                socket.socket(fileno=os.dup(self.wfd)).shutdown(socket.SHUT_WR)
            else:
                os.close(self.wfd)
        limit = self.settings.close_timeout
        deadline = None if limit is None else time.monotonic() + limit
        with contextlib.suppress(ChannelLost, OSError):
            while self._final is None and not self._eof:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or not self._read(left):
                    break
                self._inbox.clear()


class _SendShim:
    """``items.send_item_replies`` sends through ``await pipe.send(reply)``: here that
    queues on the Connection and never suspends."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def send(self, value: Any) -> None:
        self.conn.send(value)


def _run_sync(coro: Any) -> None:
    """Run a coroutine that never suspends to its end."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("a coroutine meant to run synchronously suspended")


def _claim_channel() -> tuple[int, int]:
    """The channel's descriptors (read, write), blocking (see :func:`claim_channel`)."""
    channel = claim_channel()
    if isinstance(channel, tuple):
        return channel
    channel.setblocking(True)
    fd = channel.detach()
    return fd, fd


def run_blocking_items(target: str, init: str | None = None) -> int:
    """Serve ``target`` in item mode on this runtime and return the exit code (the same
    codes, frames and stderr lines as the trio runtime's ``run_worker``); after SIGTERM
    or a lost channel the process exits at once (``os._exit``). Call it in a fresh
    process only: it claims the channel and installs signal handlers."""
    install_signal_handlers()
    loading = target
    try:
        rfd, wfd = _claim_channel()
        mark = progress_marker()
        fn = load_target(target)
        loading = init or target
        init_fn = load_target(init) if init is not None else None
        if init_fn is not None:
            check_callable_with(init_fn, 0, init or "", "INIT must take no arguments")
        check_callable_with(fn, 1, target, "an item-mode target takes one argument")
    except TargetError as exc:
        say(str(exc))
        return EXIT_USAGE
    except SystemExit:
        raise
    except Exception as exc:
        traceback.print_exc()
        say(f"importing {loading} failed: {type(exc).__name__}: {exc}")
        return EXIT_USAGE
    hold_freed_memory()
    failures: list[Failure] = []
    body: Callable[[Any], None] = item_body(fn, init_fn, failures, mark, end=InputEnded)
    code = EXIT_FAILED
    try:
        port = BlockingPort(rfd, wfd, PipeSettings(), target)
        port.handshake()
        try:
            body(port)
        except ChannelLost:
            raise
        except BaseException as exc:
            if state.stopping:
                raise
            code = (failures[0] if failures else Failure(exc)).report(cast(Any, port))
        else:
            port.end()
            code = EXIT_OK
        port.close()
    except ChannelLost as exc:
        state.lost = True
        say(f"channel to the parent lost: {exc}")
        code = EXIT_FAILED
    except OSError as exc:  # the channel's descriptor failed (reset, ...)
        state.lost = True
        say(f"channel failed: {exc}")
        code = EXIT_FAILED
    except BaseException:
        if not state.stopping:
            raise
        code = state.exit_code
    if state.stopping or state.lost:
        flush_stdio()
        os._exit(state.exit_code if state.stopping else code)
    return code
