"""pipekit/1 over a child's stdin and stdout: the two pipes as one byte stream whose
write errors wait until the reader has seen what the child wrote last."""

from __future__ import annotations

import fcntl
import struct
import termios
from collections.abc import Callable

import trio

STDOUT_DRAIN = 1.0  # seconds a failed write to a framed child waits for its stdout's end


def framed_stdio(
    stdin: trio.lowlevel.FdStream, stdout: trio.lowlevel.FdStream
) -> tuple[trio.abc.HalfCloseableStream, Callable[[], None]]:
    """The byte stream to run pipekit/1 on, from our ends of a child's stdin and stdout,
    and the function that closes the child's stdin at once (once both directions have
    ended: a peer may wait for its stdin to close before it exits)."""
    framed_stdout = _FramedStdout(stdout)
    framed_stdin = _FramedStdin(stdin, framed_stdout)
    return trio.StapledStream(framed_stdin, framed_stdout), stdin.close


def _readable_bytes(fd: int) -> int:
    """Bytes waiting to be read in the pipe ``fd`` (FIONREAD)."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    except OSError:
        return 0


class _FramedStdout(trio.abc.ReceiveStream):
    """A framed child's stdout that knows whether its reader has seen everything the
    child wrote so far (see :class:`_FramedStdin`)."""

    def __init__(self, stream: trio.lowlevel.FdStream) -> None:
        self.stream = stream
        self._eof = False
        self._started = False
        self._reading = False
        self._changed = trio.Event()

    def _change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self._started = self._reading = True
        self._change()
        try:
            data = await self.stream.receive_some(max_bytes)
            if not data:
                self._eof = True
            return bytes(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._eof = True
            raise
        finally:
            self._reading = False
            self._change()

    def _settled(self) -> bool:
        if self._eof:
            return True
        if not self._started:
            return False
        if not self._reading:
            return True  # the reader stopped: it found what it needed (an error)
        return _readable_bytes(self.stream.fileno()) == 0

    async def wait_settled(self) -> None:
        """Wait until the reader has been handed all that is readable now, or saw EOF."""
        while not self._settled():
            await self._changed.wait()

    async def aclose(self) -> None:
        self._eof = True
        self._change()
        await self.stream.aclose()


class _FramedStdin(trio.abc.SendStream):
    """A framed child's stdin. Unlike a socket's, the two pipes of a child are
    independent: when a write fails because the child closed its stdin (it exited or
    stopped reading), what it wrote last - garbage, or an ERROR frame saying why - may
    still wait in its stdout. The failure is raised only once the reader has been
    handed that (bounded by ``STDOUT_DRAIN``), so that the error names the real cause
    rather than a broken pipe."""

    def __init__(self, stream: trio.lowlevel.FdStream, stdout: _FramedStdout) -> None:
        self.stream = stream
        self.stdout = stdout

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.stream.send_all(data)
        except trio.BrokenResourceError:
            with trio.move_on_after(STDOUT_DRAIN):
                await self.stdout.wait_settled()
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()
