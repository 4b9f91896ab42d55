"""The pipe to a process or a chain of processes: the pipe contract over their stdio,
framed or raw, with their failures told as theirs."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import trio

from ...kernel.errors import ErrorKind, ProtocolError
from ...kernel.framed import FramedPipe
from ...kernel.pipe import Pipe, PipeStats
from ._processes import Processes
from ._raw import RawStdio


class ProcessPipe(Pipe):
    """A :class:`Pipe` to one process or a chain of processes. Made by
    :func:`open_process` / :func:`open_chain`.

    Sending writes to the (first) process's stdin; receiving reads the (last) one's
    stdout. The stream ends (:class:`trio.EndOfChannel`) when stdout closes and every
    process exited with 0; if one failed, ``receive`` raises its :class:`ProcessError`.
    """

    def __init__(
        self,
        processes: Processes,
        *,
        name: str,
        framed: FramedPipe | None = None,
        raw: RawStdio | None = None,
    ) -> None:
        assert (framed is None) != (raw is None), "a process pipe is framed or raw"
        self.name = name
        self._processes = processes
        self._framed = framed
        self._raw = raw
        self._inbox: deque[Any] = deque()
        self._closed = False
        self._sent = 0
        self._received = 0

    # -- process control ----------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The pid of the (first) process."""
        return self._processes.first.pid

    @property
    def pids(self) -> list[int]:
        return self._processes.pids

    @property
    def returncode(self) -> int | None:
        """The last process's return code (negative: killed by that signal), or None
        while it runs."""
        return self._processes.last.process.returncode

    @property
    def stderr(self) -> str:
        """The captured stderr tails, one process after the other."""
        return self._processes.stderr

    def is_alive(self) -> bool:
        return self._processes.is_alive()

    def kill(self) -> None:
        """SIGKILL every process now (they are reaped when the scope exits)."""
        self._processes.kill()

    async def wait(self) -> int:
        """Wait for every process to exit; return the last one's return code. Raises
        :class:`ProcessError` if one of them failed (non-zero exit, signal, timeout)."""
        return await self._processes.wait()

    # -- sending ----------------------------------------------------------------------

    async def send(self, value: Any) -> None:
        framed = self._framed
        if framed is None or self._closed:
            await self.send_batch((value,))
            return
        # Straight to the framed pipe's send: one message, with its amortised yield and
        # its direct write, not a batch of one (which yields and wakes the writer on
        # every call: measured 13-19 us of parent CPU per message).
        try:
            await framed.send(value)
        except (ProtocolError, trio.BrokenResourceError) as exc:
            if isinstance(exc, ProtocolError) and exc.kind == ErrorKind.OVERSIZE:
                raise  # refused before anything was queued: the channel is intact
            raise await self._processes.outcome(exc) from exc

    async def send_batch(self, values: Sequence[Any]) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"{self.name}: pipe is closed")
        if self._framed is not None:
            try:
                await self._framed.send_batch(values)
            except (ProtocolError, trio.BrokenResourceError) as exc:
                if isinstance(exc, ProtocolError) and exc.kind == ErrorKind.OVERSIZE:
                    raise  # refused before anything was queued: the channel is intact
                raise await self._processes.outcome(exc) from exc
            return
        assert self._raw is not None
        try:
            await self._raw.send_batch(values)
        except trio.BrokenResourceError:
            self._processes.input_ended.set()  # the process closed its stdin
            raise
        self._sent += len(values)

    def send_batch_nowait(self, values: Sequence[Any]) -> bool:
        """:meth:`FramedPipe.send_batch_nowait <pipekit.kernel.FramedPipe.send_batch_nowait>`
        on a framed channel: queue ``values`` now if that needs no wait, else return
        False with nothing queued (always False on a raw channel or a closed pipe).

        Example::

            if not pipe.send_batch_nowait([request]):
                await pipe.send_batch([request])
        """
        if self._closed or self._framed is None:
            return False
        return self._framed.send_batch_nowait(values)

    def send_nowait(self, value: Any) -> bool:
        """:meth:`FramedPipe.send_nowait <pipekit.kernel.FramedPipe.send_nowait>` on a
        framed channel: queue ``value`` now (written at once if the pipe's writer is
        idle) and return True, or return False with nothing queued if ``send`` would
        wait (always False on a raw channel). Raises :class:`trio.ClosedResourceError`
        on a closed pipe and what the framed pipe raises otherwise: a broken one's
        :class:`trio.BrokenResourceError` as it is (the next ``send`` reports the
        process's outcome), a value the codec cannot carry.

        Example::

            if not pipe.send_nowait(message):
                await pipe.send(message)
        """
        if self._closed:
            raise trio.ClosedResourceError(f"{self.name}: pipe is closed")
        framed = self._framed
        return False if framed is None else framed.send_nowait(value)

    async def end(self) -> None:
        try:
            if self._framed is not None:
                await self._framed.end()
                return
            assert self._raw is not None
            await self._raw.end()
        finally:
            self._processes.input_ended.set()

    async def fail(self, exc: BaseException) -> None:
        if self._framed is not None:
            try:
                await self._framed.fail(exc)
            finally:
                self._processes.input_ended.set()
            return
        await self.end()  # raw modes have no way to say "error": close stdin

    # -- receiving --------------------------------------------------------------------

    async def receive(self) -> Any:
        framed = self._framed
        if framed is not None and not self._inbox and not self._closed:
            # Straight from the framed pipe: no batch list, and its yield is amortised.
            try:
                item = await framed.receive()
            except trio.EndOfChannel:
                await self._finish_stream()
                raise
            except (ProtocolError, trio.BrokenResourceError) as exc:
                raise await self._processes.outcome(exc) from exc
            self._received += 1
            return item
        if not self._inbox:
            self._inbox.extend(await self._next_batch(None))
        else:
            await trio.lowlevel.checkpoint()
        self._received += 1
        return self._inbox.popleft()

    async def receive_batch(self, max_items: int | None = None) -> list[Any]:
        batch = await self._next_batch(max_items)
        self._received += len(batch)
        return batch

    async def receive_with(self, handler: Callable[[list[Any]], int]) -> list[Any]:
        """:meth:`FramedPipe.receive_with <pipekit.kernel.FramedPipe.receive_with>` on
        a framed channel: while this call waits, the pipe's reader hands each batch it
        decodes to ``handler`` (which returns how many it took, from the front); what it
        leaves is returned. On a raw channel, or with messages already queued here,
        :meth:`receive_batch` (``handler`` is not called). Raises what ``receive_batch``
        raises (a failed process's :class:`ProcessError`), and what ``handler`` raised.

        Example::

            def take(messages: list[Any]) -> int:
                for i, m in enumerate(messages):
                    if not handled_now(m):
                        return i              # this one and the rest: returned below
                return len(messages)

            for m in await pipe.receive_with(take):
                await handle_later(m)
        """
        framed = self._framed
        if framed is None or self._inbox or self._closed:
            return await self.receive_batch()
        raised: list[BaseException] = []

        def take(messages: list[Any]) -> int:
            try:
                return handler(messages)
            except BaseException as exc:  # raised to our caller as it is, not mapped
                raised.append(exc)
                raise

        try:
            batch = await framed.receive_with(take)
        except trio.EndOfChannel:
            await self._finish_stream()
            raise
        except (ProtocolError, trio.BrokenResourceError) as exc:
            if raised and exc is raised[0]:
                raise
            raise await self._processes.outcome(exc) from exc
        self._received += len(batch)
        return batch

    async def _next_batch(self, max_items: int | None) -> list[Any]:
        """The next messages, at most ``max_items`` (the rest stay in the inbox); not
        yet counted as received."""
        if self._closed:
            raise trio.ClosedResourceError(f"{self.name}: pipe is closed")
        if self._inbox:
            await trio.lowlevel.checkpoint()
            batch = list(self._inbox)
            self._inbox.clear()
        elif self._framed is not None:
            try:
                batch = await self._framed.receive_batch(max_items)
            except trio.EndOfChannel:
                await self._finish_stream()
                raise
            except (ProtocolError, trio.BrokenResourceError) as exc:
                raise await self._processes.outcome(exc) from exc
        else:
            batch = await self._read_raw()
        if max_items is not None and len(batch) > max_items:
            self._inbox.extend(batch[max_items:])
            batch = batch[:max_items]
        return batch

    async def _read_raw(self) -> list[Any]:
        raw = self._raw
        assert raw is not None
        if raw.stdout is None:
            await trio.lowlevel.checkpoint()
            raise trio.EndOfChannel
        while True:
            if raw.failure is not None:  # found after the lines before it
                await trio.lowlevel.checkpoint()
                raise await self._processes.describe(raw.failure)
            if raw.eof:
                await self._finish_stream()
                raise trio.EndOfChannel
            try:
                data = await raw.receive_some()
            except trio.BrokenResourceError as exc:
                raise await self._processes.outcome(exc) from exc
            try:
                batch = raw.decode(data)
            except ProtocolError as exc:
                raise await self._processes.describe(exc) from exc
            if batch:
                return batch

    def _input_open(self) -> bool:
        if self._framed is not None:
            return self._framed.sending
        assert self._raw is not None
        return self._raw.input_open

    async def _finish_stream(self) -> None:
        """The output ended: the stream ends cleanly only if every process succeeds.

        A process may close its output and still read its input until we END it, so
        while our input is open the wait is bounded; a failure after that is reported
        by :meth:`wait` and when the block exits. A framed process whose both
        directions have ended gets its input closed and ``kill_grace`` seconds to exit
        (:meth:`Processes.settle_ended`)."""
        processes = self._processes
        if self._input_open():
            with trio.move_on_after(min(1.0, processes.last.spec.kill_grace)):
                await processes.wait_all()
            if processes.is_alive():
                return
        else:
            if self._framed is not None:
                await processes.settle_ended()
            await processes.wait_all()
        await processes.raise_if_failed()

    async def aclose(self) -> None:
        self._closed = True
        if self._framed is not None:
            await self._framed.aclose()
        if self._raw is not None:
            await self._raw.aclose()

    @property
    def stats(self) -> PipeStats:
        if self._framed is not None:
            return self._framed.stats
        assert self._raw is not None
        return PipeStats(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._raw.bytes_sent,
            bytes_received=self._raw.bytes_received,
            paused_seconds=self._raw.paused,
            queue_depth=len(self._inbox),
        )

    def __repr__(self) -> str:
        return f"<ProcessPipe {self.name!r} pids={self.pids}>"
