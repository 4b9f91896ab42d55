"""Opening processes: one, or a chain joined stdout-to-stdin by OS pipes, as a
:class:`ProcessPipe` whose block owns their whole lifetime."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import trio

from ...kernel.errors import ProtocolError
from ...kernel.framed import FramedPipe, framed_pipe
from ...kernel.options import PipeOptions
from ...kernel.scopes import open_plain_nursery
from ._framedstdio import framed_stdio
from ._pipe import ProcessPipe
from ._processes import Processes
from ._raw import RawStdio
from ._spawn import Child, os_pipe, spawn
from ._spec import ProcessSpec, Redirect, StdioMode


@asynccontextmanager
async def open_process(
    spec: ProcessSpec | Sequence[str], **options: Any
) -> AsyncIterator[ProcessPipe]:
    """Start a process and yield a :class:`ProcessPipe` to it.

    ``spec`` is a :class:`ProcessSpec` or an argv list (then ``options`` are the spec's
    fields). On a normal exit the process's input is ENDed and the process is awaited
    (a failure raises :class:`ProcessError`); if the body raises or is cancelled, the
    process group is terminated (SIGTERM, then SIGKILL after ``kill_grace``). In every
    case the processes are reaped before this returns.
    """
    if not isinstance(spec, ProcessSpec):
        spec = ProcessSpec(tuple(str(a) for a in spec), **options)
    elif options:
        spec = replace(spec, **options)
    async with open_chain([spec]) as pipe:
        yield pipe


@asynccontextmanager
async def open_chain(specs: Sequence[ProcessSpec]) -> AsyncIterator[ProcessPipe]:
    """Start processes joined stdout-to-stdin by OS pipes and yield one
    :class:`ProcessPipe`: sending feeds the first, receiving reads the last.

    Every spec but a lone one must use a raw mode; the first one's mode encodes what
    is sent, the last one's decodes what is received. See :func:`open_process` for the
    lifetime rules."""
    if not specs:
        raise ValueError("open_chain needs at least one process")
    if len(specs) > 1 and any(s.mode == StdioMode.FRAMES for s in specs):
        raise ValueError("only raw-mode processes (lines, jsonl, bytes) can be chained")
    first, last = specs[0], specs[-1]
    name = " | ".join(s.label for s in specs)
    processes = Processes()
    ends = _Ends()
    pipe: ProcessPipe | None = None
    async with open_plain_nursery() as nursery:
        try:
            await _spawn_chain(specs, processes, ends, nursery)
            if first.mode != StdioMode.FRAMES and first.stdin != Redirect.PIPE:
                processes.input_ended.set()  # nothing of ours to end
            nursery.start_soon(processes.end_stragglers)
            if first.mode == StdioMode.FRAMES:
                try:
                    options: PipeOptions = {
                        **first.framed_options,
                        "codecs": first.codecs,
                        "name": name,
                    }
                    transport, processes.close_input = ends.take_framed_transport()
                    async with framed_pipe(transport, initiator=True, **options) as framed:
                        pipe = ProcessPipe(processes, name=name, framed=framed)
                        yield pipe
                        await _discard_rest(framed, processes.last)
                except (ProtocolError, trio.BrokenResourceError) as exc:
                    if pipe is None:  # the handshake failed: say why, with stderr
                        raise await processes.outcome(exc) from exc
                    raise
                # Both directions have ended (or the process was terminated): its
                # input is closed, and it has kill_grace seconds to exit.
                await processes.settle_ended()
            else:
                stdin, stdout = ends.take_stdio()
                raw = RawStdio(
                    stdin,
                    stdout,
                    encode=StdioMode(first.mode),
                    decode=StdioMode(last.mode),
                    max_line=last.max_line,
                    name=name,
                )
                pipe = ProcessPipe(processes, name=name, raw=raw)
                yield pipe
                await pipe.end()
                if raw.stdout is not None and not raw.eof:
                    await _discard_raw(raw, processes.last)
            await _wait_after_block(processes)
            await processes.raise_if_failed()
        except BaseException:
            ends.close()
            raise
        finally:
            await processes.terminate()
            if pipe is not None:
                await pipe.aclose()
            await ends.aclose()
            nursery.cancel_scope.cancel()


class _Ends:
    """The descriptors of a chain while it starts: the children's ends of its pipes
    (closed here once the children have them) and ours, until handed over."""

    def __init__(self) -> None:
        self.theirs: list[int] = []
        self.stdin: trio.lowlevel.FdStream | None = None
        """Ours of the first process's stdin."""
        self.stdout: trio.lowlevel.FdStream | None = None
        """Ours of the last process's stdout."""
        self.channel: socket.socket | None = None
        """Ours of the first process's channel."""

    def open_channel(self) -> int:
        """A socket pair for pipekit/1; returns the descriptor of the child's end."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for s in (ours, theirs):
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, opt, 1 << 20)
        self.channel = ours
        fd = theirs.detach()
        self.theirs.append(fd)
        return fd

    def take_framed_transport(self) -> tuple[trio.abc.Stream, Callable[[], None]]:
        """The byte stream to the child's pipekit/1 end, now owned by the caller, and
        the function that closes the child's input at once (see
        :attr:`Processes.close_input`)."""
        if self.channel is not None:
            # The socket stays known here, so that a failure closes it (twice is harmless).
            channel = self.channel

            def shut_channel() -> None:
                with contextlib.suppress(OSError):
                    channel.shutdown(socket.SHUT_WR)

            return trio.SocketStream(trio.socket.from_stdlib_socket(channel)), shut_channel
        stdin, stdout = self.take_stdio()
        assert stdin is not None and stdout is not None
        return framed_stdio(stdin, stdout)

    def take_stdio(self) -> tuple[trio.lowlevel.FdStream | None, trio.lowlevel.FdStream | None]:
        """Our ends of the first stdin and the last stdout, now owned by the caller."""
        stdio = self.stdin, self.stdout
        self.stdin = self.stdout = None
        return stdio

    def close_theirs(self) -> None:
        for fd in self.theirs:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.theirs = []

    def close(self) -> None:
        """After a failure: the children's ends and our channel socket."""
        self.close_theirs()
        if self.channel is not None:
            self.channel.close()

    async def aclose(self) -> None:
        """Our stdio streams that were never handed over."""
        for stream in self.take_stdio():
            if stream is not None:
                await trio.aclose_forcefully(stream)


async def _spawn_chain(
    specs: Sequence[ProcessSpec], processes: Processes, ends: _Ends, nursery: trio.Nursery
) -> None:
    """Start every process of the chain, each one's stdout the next one's stdin."""
    first = specs[0]
    channel_fd = -1
    if first.channel is not None:
        channel_fd = ends.open_channel()
    stdin_child: int | None
    if first.stdin == Redirect.PIPE and first.channel is None:
        r, w = os_pipe()
        ends.theirs.append(r)
        ends.stdin = trio.lowlevel.FdStream(w)
        stdin_child = r
    elif first.stdin == Redirect.INHERIT:
        stdin_child = None
    else:  # null, or a pipe left unused by a channel
        stdin_child = subprocess.DEVNULL
    prev_out: int | None = stdin_child
    for i, spec in enumerate(specs):
        is_last = i == len(specs) - 1
        stdout_child: int | None
        next_in: int | None = None
        if not is_last:
            r, w = os_pipe()
            ends.theirs += [r, w]
            stdout_child, next_in = w, r
        elif spec.stdout == Redirect.PIPE and spec.channel is None:
            r, w = os_pipe()
            ends.theirs.append(w)
            stdout_child = w
            ends.stdout = trio.lowlevel.FdStream(r)
        else:
            stdout_child = None if spec.stdout == Redirect.INHERIT else subprocess.DEVNULL
        fds: list[int] = []
        extra: dict[str, str] = {}
        if spec.channel is not None:
            fds = [channel_fd]
            extra[spec.channel] = str(channel_fd)
        child = await spawn(
            spec,
            nursery,
            stdin=prev_out,
            stdout=stdout_child,
            pass_fds=fds,
            extra_env=extra,
            feeds_next=not is_last,
        )
        processes.add(child)
        prev_out = next_in
    ends.close_theirs()


async def _wait_after_block(processes: Processes) -> None:
    """Normal exit: the processes finish what they were given. If we had to stop the
    last one, the ones before it get a bounded wait too, then are stopped."""
    last = processes.last
    abandoned = last.output_abandoned or last.killed_by_us
    for c in processes.children:
        if abandoned and c is not last:
            with trio.move_on_after(c.spec.kill_grace):
                await c.process.wait()
            if c.process.returncode is None:
                await c.terminate()
        else:
            await c.process.wait()


async def _discard_raw(raw: RawStdio, child: Child) -> None:
    """A raw block is left normally before the output ended: discard the output until
    the process exits, so a writer cannot block forever on a full pipe. After
    ``kill_grace`` seconds we stop reading (as a shell reader that exits): a process
    that then dies of SIGPIPE, or has to be terminated, has not failed."""
    with trio.move_on_after(child.spec.kill_grace):
        await raw.discard_output()
        return
    child.output_abandoned = True
    await raw.close_stdout()
    with trio.move_on_after(child.spec.kill_grace):
        await child.process.wait()
    await child.terminate()


async def _discard_rest(framed: FramedPipe, child: Child) -> None:
    """A framed block is left normally: END our side and discard what the worker still
    sends until its END (so it can finish instead of dying on a closed channel). A
    worker still sending after ``kill_grace`` seconds is terminated (not a failure: we
    stopped listening); how it ended otherwise is told by its exit status."""
    with trio.move_on_after(child.spec.kill_grace):
        try:
            await framed.end()
            async for _ in framed.batches():
                pass
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the channel broke: the exit status tells why
        return
    await child.terminate()
