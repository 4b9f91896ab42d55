"""Sending on a framed pipe from a worker thread, straight to the transport (a socket,
or the OS pipe of a child's stdout).

A thread that hands each message to the pipe's trio loop pays a wake-up of that loop
and two scheduler passes per message (in a port-shape worker's round trip, the loop
sleeps in ``epoll`` while the thread works, and must wake to write the reply). A
:class:`ThreadSender` frames a thread's messages itself, with its own copy of the
sending half of the protocol (DATA frames only: the pipe's own queue keeps every other
frame), and writes them to the socket from the thread - when nothing else is under
way: its calls write now or return False, and the caller then takes its usual path.

The socket is shared with the pipe's writer task frame by frame: whoever writes owns
the *wire* (:class:`Wire`) until what it took is written whole, so frames never
interleave; the writer takes the machine's queue only while it owns the wire, and the
thread writes only when that queue is empty and the writer idle, so nothing the pipe
queued before is overtaken. A thread's call returns once its frames are written, so
what the pipe sends after it (END, say) follows them.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable, Sequence
from typing import Any

import trio

from ._sendqueue import SendQueue
from ._transport import IOV_MAX
from .protocol import Connection

__all__ = ["ThreadSender", "Wire"]

_SLICE = 0.05
"""Seconds a thread waiting for room in the socket sleeps before it looks again at
whether the pipe is still open."""
_NOBODY, _TRIO, _THREAD = 0, 1, 2


class Wire:
    """Who is writing to the socket now; shared by a pipe's writer and one thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner = _NOBODY
        self.cut = False  # a write of the thread's was abandoned in the middle of a frame
        # The writer task waits for the thread to let go (set from the thread).
        self._trio_waiter: trio.Event | None = None
        self._token = trio.lowlevel.current_trio_token()

    async def take(self) -> None:
        """The writer task's turn: wait until the thread has let go, then own the wire."""
        while True:
            with self.lock:
                if self.owner == _NOBODY:
                    self.owner = _TRIO
                    return
                waiter = self._trio_waiter = trio.Event()
            await waiter.wait()

    def release(self) -> None:
        """Let go (either side) and wake whoever waits."""
        with self.lock:
            self.owner = _NOBODY
            waiter = self._trio_waiter
            self._trio_waiter = None
        if waiter is not None:  # (only ever while the thread owned the wire)
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(waiter.set)


class ThreadSender:
    """Direct writes of a framed pipe's messages from one thread (see the module). Made
    by :meth:`FramedPipe.thread_sender <pipekit.kernel.FramedPipe.thread_sender>`.

    :meth:`send` and :meth:`send_batch` write now or not at all: they return False, with
    nothing sent, unless the pipe is open, the peer has not paused it, its own queue is
    empty, its writer idle, ``ready()`` (the caller's own condition, read under the
    wire's lock) is true and the messages can be encoded into at most one take of the
    queue (``TAKE_MAX`` bytes, or one frame: a write from here cannot stop for a PAUSE
    that arrives meanwhile, the pipe's writer can); then they write the frames
    whole, waiting for room in the socket if they must, and return True. A write the
    socket refuses breaks the stream for the pipe's writer, which reports it."""

    def __init__(
        self,
        conn: Connection,
        sock: trio.socket.SocketType,
        wire: Wire,
        open_: Callable[[], bool],
        ready: Callable[[], bool],
    ) -> None:
        self._conn = conn
        self._sock = sock
        self._wire = wire
        self._open = open_
        self._ready = ready
        queue = SendQueue(coalesce_bytes=conn.coalesce_bytes, answer_first=False)
        queue.codec = conn.codec
        queue.peer_max_frame = conn.peer_max_frame
        self._queue = queue

    def send(self, value: Any) -> bool:
        """Write one message now, if it can be (see the class); True if it was."""
        return self._write(lambda queue: queue.send_and_take(value), 1)

    def send_batch(self, values: Sequence[Any]) -> bool:
        """Write ``values`` now, all or none (see the class); True if they were."""
        return self._write(lambda queue: _take_batch(queue, values), len(values))

    def _write(self, frame: Callable[[SendQueue], list[bytes | memoryview]], count: int) -> bool:
        wire = self._wire
        conn = self._conn
        with wire.lock:
            if (
                wire.owner != _NOBODY
                or wire.cut
                or conn.peer_paused
                or conn.has_data_to_send
                or not self._open()
                or not self._ready()
            ):
                return False
            queue = self._queue
            try:
                pieces = frame(queue)
            except Exception:  # unencodable, oversize: the caller's other path says so
                return False
            if queue.has_data_to_send:
                # More than one take (TAKE_MAX): written whole from here, it could not
                # stop for a PAUSE. The caller's other path queues it on the pipe.
                queue.data_to_send()  # forget them
                return False
            wire.owner = _THREAD
            conn.messages_sent += count
        try:
            self._write_all(pieces)
        except BaseException:
            wire.cut = True  # half a frame may be on the wire: nothing may follow it
        finally:
            wire.release()
        return True

    def _write_all(self, pieces: list[bytes | memoryview]) -> None:
        sock = self._sock
        writev = os.writev
        while pieces:
            try:
                written = writev(sock.fileno(), pieces[:IOV_MAX])
            except BlockingIOError:
                written = 0
            self._conn.bytes_sent += written
            while written:
                size = len(pieces[0])
                if written < size:
                    pieces[0] = memoryview(pieces[0])[written:]
                    break
                written -= size
                del pieces[0]
            if pieces:
                poller = select.poll()
                poller.register(sock.fileno(), select.POLLOUT)
                while not poller.poll(_SLICE * 1000):
                    if not self._open() or not self._ready():
                        raise trio.ClosedResourceError("the pipe closed under a write")


def _take_batch(queue: SendQueue, values: Sequence[Any]) -> list[bytes | memoryview]:
    """The frames of ``values`` (all or none are queued)."""
    if bytes in map(type, values):  # (a scan in C: ~15 ns a message)
        # One at a time, so that a large bytes message goes by reference, not copied by
        # its encoding (in a worker thread that copy also page-faults fresh memory in
        # each time: measured 14.6 -> 5.7 faults and 78 -> 49 us of the worker's CPU per
        # 64 KiB message echoed).
        try:
            for value in values:
                queue.send(value)
        except BaseException:
            queue.data_to_send()  # forget the messages queued before it
            raise
    else:
        queue.send_many(values)
    return queue.data_to_send_pieces()
