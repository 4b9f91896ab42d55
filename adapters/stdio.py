"""The stdio adapter: executables as modules.

Any executable becomes a :class:`~pipekit.kernel.Pipe` (:func:`open_process`) or a kernel
module (:class:`ProcessModule`). What the pipe sends is written to the process's stdin,
what the process writes to stdout is received, according to a *mode*:

* ``frames``: pipekit/1 (:func:`~pipekit.kernel.framed_pipe`), over stdin/stdout or, for
  Python workers (``channel=True``), over a dedicated socket so ``print()`` in the child
  goes to its stdout harmlessly;
* ``lines``: one ``str`` per line (UTF-8; undecodable bytes survive as surrogates);
* ``jsonl``: one JSON value per line;
* ``bytes``: ``bytes`` chunks as they come.

Several raw-mode processes can run as one *chain* (:func:`open_chain`): each one's stdout
is joined to the next one's stdin by an OS pipe, as a shell does, so the bytes between
them never pass through Python.

Processes start in their own process group. When the scope that owns them exits, or is
cancelled, every process of the group gets SIGTERM, then SIGKILL after ``kill_grace``
seconds, and is reaped: no orphans, no zombies. Failures are :class:`ProcessError` with a
``kind`` (``spawn_failed``, ``terminated``, ``timeout``, ``io_error``), the pid, exit code
or signal, and the tail of the process's stderr.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import termios
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import trio

from ..kernel.codecs import (
    CODEC_NAMES,
    LineSplitter,
    StreamDecoder,
    decode_json_lines,
    get_codec,
)
from ..kernel.errors import PipekitError, ProtocolError, RemoteError
from ..kernel.framed import FramedPipe, framed_pipe
from ..kernel.pipe import Pipe, PipeStats
from ..kernel.scopes import open_plain_nursery

__all__ = [
    "DEFAULT_MAX_LINE",
    "ProcessError",
    "ProcessModule",
    "ProcessPipe",
    "ProcessSpec",
    "open_chain",
    "open_process",
    "worker_spec",
]

Mode = Literal["frames", "lines", "jsonl", "bytes"]
Stdio = Literal["pipe", "inherit", "null"]
ErrorKind = Literal["spawn_failed", "terminated", "timeout", "io_error"]

DEFAULT_MAX_LINE = 8 * 1024 * 1024
"""Longest line accepted from a ``lines`` or ``jsonl`` process (8 MiB, as ``max_frame``)."""
PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ for the pipes we create (capped by the system)
READ_SIZE = 1 << 20  # bytes asked for per read of a lines/jsonl stdout
BYTES_READ_SIZE = 256 * 1024
"""Bytes asked for per read of a ``bytes``-mode stdout (the largest chunk received).
Not 1 MiB: each read allocates a buffer of the size asked for, and glibc gives a freed
block of ~1 MiB straight back to the kernel (munmap, or a heap trim), so 1 MiB reads
page-faulted every buffer in afresh (~100 faults per MiB moved): 1 GiB through ``cat``
ran at 4.4 GB/s instead of 6.9 (``bench/processes.py``; same machine, interleaved)."""
STDERR_TAIL = 16 * 1024
STDERR_SETTLE = 0.5  # seconds an error waits for the stderr of an exited process
STDOUT_DRAIN = 1.0  # seconds a failed write to a framed child waits for its stdout's end
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class ProcessError(PipekitError):
    """A process could not be started, died, timed out, or its I/O failed.

    ``kind`` is ``spawn_failed``, ``terminated``, ``timeout`` or ``io_error``; ``pid``,
    ``exit_code`` (None if killed by a signal or never started), ``signal`` (the signal
    number that killed it, or None), ``stderr`` (the tail of what it wrote to stderr,
    when captured) and ``program`` describe the process.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        program: str,
        pid: int | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
        stderr: str = "",
    ) -> None:
        self.kind = kind
        self.program = program
        self.pid = pid
        self.exit_code = exit_code
        self.signal = signal
        self.stderr = stderr
        text = message
        if stderr.strip():
            text += "\n--- stderr (tail) ---\n" + stderr.rstrip()
        super().__init__(text)


@dataclass(frozen=True)
class ProcessSpec:
    """How to start one process. ``argv[0]`` is looked up on ``PATH``.

    ``stdin``/``stdout``/``stderr``: ``"pipe"`` (connected to the pipe; stderr is
    captured and its tail kept), ``"inherit"`` (shared with this process) or ``"null"``.
    ``channel``: run pipekit/1 on a dedicated socket whose descriptor number is passed
    in ``$PIPEKIT_FD`` (mode must be ``frames``); stdin and stdout are then free.
    ``timeout``: seconds the process may run before it is killed (kind ``timeout``).
    ``kill_grace``: seconds between SIGTERM and SIGKILL.
    ``max_line``: ``lines`` and ``jsonl`` modes, the longest line accepted from the
    process's stdout; a longer one fails the stream (kind ``oversize``).
    """

    argv: tuple[str, ...]
    mode: Mode = "lines"
    env: Mapping[str, str] | None = None
    cwd: str | os.PathLike[str] | None = None
    stdin: Stdio = "pipe"
    stdout: Stdio = "pipe"
    stderr: Stdio = "pipe"
    timeout: float | None = None
    kill_grace: float = 5.0
    max_line: int = DEFAULT_MAX_LINE
    channel: bool = False
    codecs: tuple[str, ...] = CODEC_NAMES
    name: str | None = None
    framed_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("argv must name a program")
        if self.mode not in ("frames", "lines", "jsonl", "bytes"):
            raise ValueError(f"mode must be frames, lines, jsonl or bytes, not {self.mode!r}")
        for which in ("stdin", "stdout", "stderr"):
            if getattr(self, which) not in ("pipe", "inherit", "null"):
                raise ValueError(f"{which} must be 'pipe', 'inherit' or 'null'")
        if self.channel and self.mode != "frames":
            raise ValueError("channel=True needs mode='frames'")
        if self.max_line < 1:
            raise ValueError("max_line must be at least 1")

    @property
    def label(self) -> str:
        return self.name or os.path.basename(self.argv[0])


def worker_spec(
    target: str,
    *,
    mode: Literal["stream", "item"] = "stream",
    init: str | None = None,
    python: str | None = None,
    **options: Any,
) -> ProcessSpec:
    """The spec of a Python worker process: ``python -m pipekit worker TARGET`` with its
    framed channel on a dedicated socket (stdout stays free for ``print``).

    ``target`` is ``"package.module:function"`` or a ``.py`` path (its ``main``);
    ``mode`` ``stream`` hands the function the whole stream, ``item`` calls it once per
    item. ``init`` names a function the worker calls once before any message."""
    argv = [python or sys.executable, "-m", "pipekit", "worker", target, "--mode", mode]
    if init is not None:
        argv += ["--init", init]
    options.setdefault("stdout", "inherit")
    options.setdefault("stdin", "null")
    options.setdefault("codecs", ("msgpack",))
    options.setdefault("name", target)
    return ProcessSpec(tuple(argv), mode="frames", channel=True, **options)


# --- one running process ------------------------------------------------------------


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
    return r, w


class _Child:
    """One spawned process: its stderr tail, timeout and termination."""

    def __init__(self, spec: ProcessSpec, process: trio.Process) -> None:
        self.spec = spec
        self.process = process
        self.pid = process.pid
        self.stderr_tail = bytearray()
        self.stderr_closed = trio.Event()
        self.timed_out = False
        self.killed_by_us = False
        self.feeds_next = False
        """True for a process whose stdout is the next one's stdin in a chain."""
        self.output_abandoned = False
        """True once we stopped reading its stdout before the end (a block left early)."""

    @property
    def stderr(self) -> str:
        return self.stderr_tail.decode("utf-8", "replace")

    async def capture_stderr(self, stream: trio.lowlevel.FdStream) -> None:
        try:
            async with stream:
                while True:
                    try:
                        chunk = await stream.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                    if not chunk:
                        return
                    self.stderr_tail += chunk
                    if len(self.stderr_tail) > 2 * STDERR_TAIL:
                        del self.stderr_tail[:-STDERR_TAIL]
        finally:
            self.stderr_closed.set()

    async def settle(self) -> None:
        """Once the process has exited, let the stderr capture read what is left in
        the pipe, so that an error built now carries the whole tail (bounded: a
        grandchild may hold the pipe open)."""
        if self.process.returncode is None:
            return
        with trio.move_on_after(STDERR_SETTLE):
            await self.stderr_closed.wait()

    async def enforce_timeout(self) -> None:
        assert self.spec.timeout is not None
        await trio.sleep(self.spec.timeout)
        if self.process.returncode is None:
            self.timed_out = True
            await self.terminate()

    async def watch(self) -> None:
        """When the process fails, the rest of its group goes with it: descendants
        that still hold its stdout would otherwise hide the failure until they exit."""
        await self.process.wait()
        if self.failed:
            self.signal_group(signal.SIGKILL)

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def terminate(self) -> None:
        """SIGTERM the group, SIGKILL it after the grace period, reap. Shielded."""
        with trio.CancelScope(shield=True):
            if self.process.returncode is None:
                self.killed_by_us = True
                self.signal_group(signal.SIGTERM)
                with trio.move_on_after(self.spec.kill_grace):
                    await self.process.wait()
            if self.process.returncode is None:
                self.signal_group(signal.SIGKILL)
                await self.process.wait()
            # Whatever the leader left behind in its group goes too: no orphans.
            self.signal_group(signal.SIGKILL)

    def error(self, message: str | None = None, *, kind: ErrorKind | None = None) -> ProcessError:
        """The error describing how this process ended (or ``kind``/``message``)."""
        code = self.process.returncode
        sig = -code if code is not None and code < 0 else None
        exit_code = code if code is not None and code >= 0 else None
        if kind is None:
            kind = "timeout" if self.timed_out else "terminated"
        if message is None:
            if kind == "timeout":
                message = (
                    f"{self.spec.label} (pid {self.pid}) timed out after {self.spec.timeout} s"
                )
            elif sig is not None:
                name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
                message = f"{self.spec.label} (pid {self.pid}) was killed by signal {name}"
            else:
                message = f"{self.spec.label} (pid {self.pid}) exited with code {exit_code}"
        return ProcessError(
            kind,
            message,
            program=self.spec.argv[0],
            pid=self.pid,
            exit_code=exit_code,
            signal=sig,
            stderr=self.stderr,
        )

    @property
    def failed(self) -> bool:
        code = self.process.returncode
        if code == -signal.SIGPIPE and (self.feeds_next or self.output_abandoned):
            # As in a shell: its reader stopped reading (``seq | head``).
            return self.timed_out
        return self.timed_out or (code is not None and code != 0 and not self.killed_by_us)


async def _spawn(
    spec: ProcessSpec,
    nursery: trio.Nursery,
    *,
    stdin: int | None,
    stdout: int | None,
    pass_fds: Sequence[int] = (),
    extra_env: Mapping[str, str] | None = None,
) -> tuple[_Child, trio.lowlevel.FdStream | None]:
    """Start one process; returns it and our end of its stderr pipe (if captured)."""
    err_r: int | None = None
    err_w: int | None
    if spec.stderr == "pipe":
        err_r, err_w = _pipe()
    else:
        err_w = None if spec.stderr == "inherit" else subprocess.DEVNULL
    env = dict(os.environ if spec.env is None else spec.env)
    if extra_env:
        env.update(extra_env)
    try:
        process = await trio.lowlevel.open_process(
            list(spec.argv),
            stdin=stdin,
            stdout=stdout,
            stderr=err_w,
            env=env,
            cwd=spec.cwd,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )
    except BaseException as exc:
        if err_r is not None:
            os.close(err_r)
        if not isinstance(exc, OSError | ValueError | TypeError):
            raise
        # OSError: no such program, no permission, bad cwd; ValueError/TypeError: a NUL
        # byte or a non-string in argv or env.
        reason = getattr(exc, "strerror", None) or str(exc)
        if (
            isinstance(exc, OSError)
            and spec.cwd is not None
            and exc.filename == os.fspath(spec.cwd)
        ):
            message = f"cannot start {spec.argv[0]!r} in {os.fspath(spec.cwd)!r}: {reason}"
        else:
            message = f"cannot start {spec.argv[0]!r}: {reason}"
        raise ProcessError("spawn_failed", message, program=spec.argv[0]) from exc
    finally:
        if err_r is not None and err_w is not None:
            os.close(err_w)
    child = _Child(spec, process)
    stream = trio.lowlevel.FdStream(err_r) if err_r is not None else None
    if stream is not None:
        nursery.start_soon(child.capture_stderr, stream)
    else:
        child.stderr_closed.set()
    if spec.timeout is not None:
        nursery.start_soon(child.enforce_timeout)
    nursery.start_soon(child.watch)
    return child, stream


# --- raw-mode encoding ------------------------------------------------------------------


def _encoder(mode: Mode) -> Any:
    if mode == "bytes":

        def encode_bytes(messages: Sequence[Any]) -> bytes:
            if len(messages) == 1 and type(messages[0]) is bytes:
                return messages[0]  # a bulk chunk: no copy
            return b"".join(
                m if isinstance(m, bytes | bytearray | memoryview) else bytes(m) for m in messages
            )

        return encode_bytes
    if mode == "jsonl":
        codec = get_codec("json")

        def encode_json(messages: Sequence[Any]) -> bytes:
            return codec.encode_many(messages) + b"\n"

        return encode_json

    def encode_lines(messages: Sequence[Any]) -> bytes:
        parts = []
        for m in messages:
            if isinstance(m, str):
                parts.append(m.encode("utf-8", "surrogateescape"))
            elif isinstance(m, bytes | bytearray):
                parts.append(bytes(m))
            else:
                parts.append(str(m).encode("utf-8", "surrogateescape"))
        return b"\n".join(parts) + b"\n"

    return encode_lines


class _RawDecoder(StreamDecoder, Protocol):
    """What a raw mode decodes stdout with. ``failure``: an error found after the
    messages before it were returned by :meth:`feed`, raised by the next call."""

    @property
    def failure(self) -> ProtocolError | None: ...


class _LineDecoder:
    """bytes -> str lines (without the newline)."""

    def __init__(self, max_line: int) -> None:
        self._lines = LineSplitter(max_line)

    @property
    def failure(self) -> ProtocolError | None:
        return self._lines.failure

    def feed(self, data: bytes) -> list[Any]:
        return [line.decode("utf-8", "surrogateescape") for line in self._lines.split(data)]

    def close(self) -> list[Any]:
        rest = self._lines.rest()
        return [rest.decode("utf-8", "surrogateescape")] if rest else []


class _JsonLinesDecoder:
    """bytes -> one JSON value per line (blank lines skipped)."""

    def __init__(self, max_line: int) -> None:
        self._lines = LineSplitter(max_line)

    @property
    def failure(self) -> ProtocolError | None:
        return self._lines.failure

    def feed(self, data: bytes) -> list[Any]:
        return decode_json_lines(self._lines.split(data))

    def close(self) -> list[Any]:
        # A last line without its newline is still a complete JSON value.
        return decode_json_lines([self._lines.rest()])


class _ChunkDecoder:
    failure: ProtocolError | None = None

    def feed(self, data: bytes) -> list[Any]:
        return [data]

    def close(self) -> list[Any]:
        return []


def _decoder(mode: Mode, max_line: int) -> _RawDecoder:
    if mode == "bytes":
        return _ChunkDecoder()
    if mode == "jsonl":
        return _JsonLinesDecoder(max_line)
    return _LineDecoder(max_line)


# --- pipekit/1 over stdin/stdout ------------------------------------------------------


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


# --- the pipe -----------------------------------------------------------------------


class ProcessPipe(Pipe):
    """A :class:`Pipe` to one process or a chain of processes. Made by
    :func:`open_process` / :func:`open_chain`.

    Sending writes to the (first) process's stdin; receiving reads the (last) one's
    stdout. The stream ends (:class:`trio.EndOfChannel`) when stdout closes and every
    process exited with 0; if one failed, ``receive`` raises its :class:`ProcessError`.
    """

    def __init__(self, children: list[_Child], *, name: str) -> None:
        self.name = name
        self._children = children
        self._stdin: trio.lowlevel.FdStream | None = None
        self._stdout: trio.lowlevel.FdStream | None = None
        self._framed: FramedPipe | None = None
        self._encode: Any = None
        self._decoder: _RawDecoder | None = None
        self._read_size = READ_SIZE
        self._inbox: deque[Any] = deque()
        self._eof = False
        self._ended = False
        self._closed = False
        self._sent = 0
        self._received = 0
        self._bytes_sent = 0
        self._bytes_received = 0
        self._paused = 0.0

    # -- process control ----------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The pid of the (first) process."""
        return self._children[0].pid

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self._children]

    @property
    def returncode(self) -> int | None:
        """The last process's return code (negative: killed by that signal), or None
        while it runs."""
        return self._children[-1].process.returncode

    @property
    def stderr(self) -> str:
        """The captured stderr tails, one process after the other."""
        return "".join(c.stderr for c in self._children)

    def is_alive(self) -> bool:
        return any(c.process.returncode is None for c in self._children)

    def kill(self) -> None:
        """SIGKILL every process now (they are reaped when the scope exits)."""
        for c in self._children:
            c.killed_by_us = True
            c.signal_group(signal.SIGKILL)

    async def wait(self) -> int:
        """Wait for every process to exit; return the last one's return code. Raises
        :class:`ProcessError` if one of them failed (non-zero exit, signal, timeout)."""
        await self._wait_all()
        await self._raise_if_failed()
        code = self._children[-1].process.returncode
        assert code is not None
        return code

    async def _wait_all(self) -> None:
        """Wait for every process to exit and for its stderr tail to be complete."""
        for c in self._children:
            await c.process.wait()
        for c in self._children:
            await c.settle()

    async def _raise_if_failed(self) -> None:
        for c in self._children:
            if c.failed:
                await c.settle()
                raise c.error()

    async def _describe(self, exc: BaseException) -> BaseException:
        """Turn a transport error into one that names the process (and its stderr)."""
        child = self._children[-1]
        if isinstance(exc, RemoteError):
            return exc
        await child.settle()
        if isinstance(exc, ProtocolError):
            err = ProtocolError(
                f"{child.spec.label} (pid {child.pid}): {exc.message}"
                + (
                    f"\n--- stderr (tail) ---\n{child.stderr.rstrip()}"
                    if child.stderr.strip()
                    else ""
                ),
                kind=exc.kind,
            )
            err.pid = child.pid  # type: ignore[attr-defined]
            err.stderr = child.stderr  # type: ignore[attr-defined]
            err.__cause__ = exc
            return err
        return exc

    async def _outcome(self, exc: BaseException) -> BaseException:
        """After the channel broke: wait (bounded) for the process to exit and return
        the error that explains the break best."""
        child = self._children[-1]
        if child.process.returncode is None:
            with trio.move_on_after(min(1.0, child.spec.kill_grace)):
                await child.process.wait()
        for c in self._children:
            if c.failed:
                await c.settle()
                err = c.error()
                err.__cause__ = exc
                return err
        if isinstance(exc, ProtocolError | RemoteError):
            return await self._describe(exc)
        await child.settle()
        err = child.error(
            f"{child.spec.label} (pid {child.pid}): connection broken: {exc}", kind="io_error"
        )
        err.__cause__ = exc
        return err

    # -- sending ----------------------------------------------------------------------

    async def send(self, value: Any) -> None:
        await self.send_batch((value,))

    async def send_batch(self, values: Sequence[Any]) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"{self.name}: pipe is closed")
        if self._framed is not None:
            try:
                await self._framed.send_batch(values)
            except (ProtocolError, trio.BrokenResourceError) as exc:
                if isinstance(exc, ProtocolError) and exc.kind == "oversize":
                    raise  # refused before anything was queued: the channel is intact
                raise await self._outcome(exc) from exc
            return
        if self._ended or self._stdin is None:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError(f"{self.name}: stdin is not open")
        data = self._encode(values)
        start = trio.current_time()
        try:
            await self._stdin.send_all(data)
        except trio.BrokenResourceError as exc:
            # The process closed its stdin: it stopped reading (or died).
            raise trio.BrokenResourceError(
                f"{self.name}: the process stopped reading its stdin"
            ) from exc
        finally:
            self._paused += trio.current_time() - start
        self._sent += len(values)
        self._bytes_sent += len(data)

    async def end(self) -> None:
        if self._framed is not None:
            await self._framed.end()
            return
        await trio.lowlevel.checkpoint()
        if not self._ended:
            self._ended = True
            if self._stdin is not None:
                await trio.aclose_forcefully(self._stdin)

    async def fail(self, exc: BaseException) -> None:
        if self._framed is not None:
            await self._framed.fail(exc)
            return
        await self.end()  # raw modes have no way to say "error": close stdin

    # -- receiving --------------------------------------------------------------------

    async def receive(self) -> Any:
        if not self._inbox:
            self._inbox.extend(await self.receive_batch())
        else:
            await trio.lowlevel.checkpoint()
        self._received += 1
        return self._inbox.popleft()

    async def receive_batch(self, max_items: int | None = None) -> list[Any]:
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
                raise await self._outcome(exc) from exc
        else:
            batch = await self._read_raw()
        if max_items is not None and len(batch) > max_items:
            self._inbox.extend(batch[max_items:])
            batch = batch[:max_items]
        self._received += len(batch)
        return batch

    async def _read_raw(self) -> list[Any]:
        if self._stdout is None or self._decoder is None:
            await trio.lowlevel.checkpoint()
            raise trio.EndOfChannel
        while True:
            if self._decoder.failure is not None:  # found after the lines before it
                await trio.lowlevel.checkpoint()
                raise await self._describe(self._decoder.failure)
            if self._eof:
                await self._finish_stream()
                raise trio.EndOfChannel
            try:
                data = await self._stdout.receive_some(self._read_size)
            except trio.BrokenResourceError as exc:
                raise await self._outcome(exc) from exc
            if not data:
                self._eof = True
                try:
                    tail = self._decoder.close()
                except ProtocolError as exc:
                    raise await self._describe(exc) from exc
                if tail:
                    return tail
                continue
            self._bytes_received += len(data)
            try:
                batch = self._decoder.feed(data)
            except ProtocolError as exc:
                raise await self._describe(exc) from exc
            if batch:
                return batch

    def _input_open(self) -> bool:
        if self._framed is not None:
            return self._framed.conn.send_state == "open"
        return not self._ended and self._stdin is not None

    async def _finish_stream(self) -> None:
        """The output ended: the stream ends cleanly only if every process succeeds.

        A process may close its output and still read its input until we END it, so
        while our input is open the wait is bounded; a failure after that is reported
        by :meth:`wait` and when the block exits."""
        if self._input_open():
            with trio.move_on_after(min(1.0, self._children[-1].spec.kill_grace)):
                await self._wait_all()
            if self.is_alive():
                return
        else:
            await self._wait_all()
        await self._raise_if_failed()

    async def aclose(self) -> None:
        self._closed = True
        if self._framed is not None:
            await self._framed.aclose()
        for stream in (self._stdin, self._stdout):
            if stream is not None:
                await trio.aclose_forcefully(stream)

    @property
    def stats(self) -> PipeStats:
        if self._framed is not None:
            return self._framed.stats
        return PipeStats(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            paused_seconds=self._paused,
            queue_depth=len(self._inbox),
        )

    def __repr__(self) -> str:
        return f"<ProcessPipe {self.name!r} pids={self.pids}>"


# --- opening processes ----------------------------------------------------------------


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
    if len(specs) > 1 and any(s.mode == "frames" for s in specs):
        raise ValueError("only raw-mode processes (lines, jsonl, bytes) can be chained")
    first, last = specs[0], specs[-1]
    name = " | ".join(s.label for s in specs)
    children: list[_Child] = []
    pipe = ProcessPipe(children, name=name)
    to_close: list[int] = []

    channel_ours: socket.socket | None = None
    async with open_plain_nursery() as nursery:
        try:
            channel_fd = -1
            if first.channel:
                channel_ours, channel_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                for s in (channel_ours, channel_theirs):
                    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                        with contextlib.suppress(OSError):
                            s.setsockopt(socket.SOL_SOCKET, opt, 1 << 20)
                channel_fd = channel_theirs.detach()
                to_close.append(channel_fd)
            # stdin of the first process
            stdin_child: int | None
            if first.stdin == "pipe" and not first.channel:
                r, w = _pipe()
                stdin_child, to_close = r, [*to_close, r]
                pipe._stdin = trio.lowlevel.FdStream(w)
            elif first.stdin == "null" or (first.channel and first.stdin == "pipe"):
                stdin_child = subprocess.DEVNULL
            else:
                stdin_child = None
            prev_out: int | None = stdin_child
            for i, spec in enumerate(specs):
                is_last = i == len(specs) - 1
                if not is_last:
                    r, w = _pipe()
                    to_close += [r, w]
                    stdout_child: int | None = w
                    next_in: int | None = r
                elif spec.stdout == "pipe" and not spec.channel:
                    r, w = _pipe()
                    to_close.append(w)
                    stdout_child = w
                    pipe._stdout = trio.lowlevel.FdStream(r)
                    next_in = None
                else:
                    stdout_child = None if spec.stdout == "inherit" else subprocess.DEVNULL
                    next_in = None
                fds: list[int] = []
                extra: dict[str, str] = {}
                if spec.channel:
                    fds = [channel_fd]
                    extra["PIPEKIT_FD"] = str(channel_fd)
                child, _ = await _spawn(
                    spec,
                    nursery,
                    stdin=prev_out,
                    stdout=stdout_child,
                    pass_fds=fds,
                    extra_env=extra,
                )
                child.feeds_next = not is_last
                children.append(child)
                prev_out = next_in
            for fd in to_close:
                with contextlib.suppress(OSError):
                    os.close(fd)
            to_close = []
            if first.mode == "frames":
                if first.channel:
                    assert channel_ours is not None
                    transport: trio.abc.Stream = trio.SocketStream(
                        trio.socket.from_stdlib_socket(channel_ours)
                    )
                else:
                    assert pipe._stdin is not None and pipe._stdout is not None
                    stdout = _FramedStdout(pipe._stdout)
                    transport = trio.StapledStream(_FramedStdin(pipe._stdin, stdout), stdout)
                    pipe._stdin = pipe._stdout = None
                try:
                    async with framed_pipe(
                        transport,
                        initiator=True,
                        codecs=first.codecs,
                        name=name,
                        **first.framed_options,
                    ) as framed:
                        pipe._framed = framed
                        yield pipe
                        await _discard_rest(framed, children[-1])
                except (ProtocolError, trio.BrokenResourceError) as exc:
                    if pipe._framed is None:  # the handshake failed: say why, with stderr
                        raise await pipe._outcome(exc) from exc
                    raise
            else:
                pipe._encode = _encoder(first.mode)
                pipe._decoder = _decoder(last.mode, last.max_line)
                if last.mode == "bytes":
                    pipe._read_size = BYTES_READ_SIZE
                yield pipe
                await pipe.end()
                if pipe._stdout is not None and not pipe._eof:
                    await _discard_raw(pipe, children[-1])
            # Normal exit: the processes finish what they were given. If we had to stop
            # the last one, the ones before it get a bounded wait too, then are stopped.
            abandoned = children[-1].output_abandoned or children[-1].killed_by_us
            for c in children:
                if abandoned and c is not children[-1]:
                    with trio.move_on_after(c.spec.kill_grace):
                        await c.process.wait()
                    if c.process.returncode is None:
                        await c.terminate()
                else:
                    await c.process.wait()
            await pipe._raise_if_failed()
        except BaseException:
            for fd in to_close:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if channel_ours is not None:
                channel_ours.close()  # closing it twice (after the framed pipe) is harmless
            raise
        finally:
            await _terminate_all(children)
            await pipe.aclose()
            nursery.cancel_scope.cancel()


async def _terminate_all(children: Sequence[_Child]) -> None:
    """:meth:`_Child.terminate` for several processes at once: SIGTERM to every group,
    one grace period, SIGKILL to what is left, reap. Shielded."""
    with trio.CancelScope(shield=True):
        alive = [c for c in children if c.process.returncode is None]
        for c in alive:
            c.killed_by_us = True
            c.signal_group(signal.SIGTERM)
        if alive:
            with trio.move_on_after(max(c.spec.kill_grace for c in alive)):
                for c in alive:
                    await c.process.wait()
        for c in children:
            if c.process.returncode is None:
                c.signal_group(signal.SIGKILL)
            await c.process.wait()
            c.signal_group(signal.SIGKILL)  # whatever the leader left in its group


async def _discard_raw(pipe: ProcessPipe, child: _Child) -> None:
    """A raw block is left normally before the output ended: discard the output until
    the process exits, so a writer cannot block forever on a full pipe. After
    ``kill_grace`` seconds we stop reading (as a shell reader that exits): a process
    that then dies of SIGPIPE, or has to be terminated, has not failed."""
    stdout = pipe._stdout
    assert stdout is not None
    with trio.move_on_after(child.spec.kill_grace):
        try:
            while await stdout.receive_some(pipe._read_size):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        return
    child.output_abandoned = True
    await trio.aclose_forcefully(stdout)
    pipe._stdout = None
    with trio.move_on_after(child.spec.kill_grace):
        await child.process.wait()
    await child.terminate()


async def _discard_rest(framed: FramedPipe, child: _Child) -> None:
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


# --- as a kernel module -----------------------------------------------------------------


class ProcessModule:
    """One process (or a chain of raw-mode processes) as a kernel module.

    Messages from input ``inp`` are written to the process, what it outputs goes to
    ``out``. With ``source=True`` the module has no input (the process's stdin is not
    connected); with ``sink=True`` no output. A process that stops reading its stdin
    and exits with 0 (like ``head``) ends the module normally; a failing process fails
    it with :class:`ProcessError`.
    """

    def __init__(
        self,
        specs: ProcessSpec | Sequence[ProcessSpec],
        *,
        source: bool = False,
        sink: bool = False,
        name: str | None = None,
        batch: int = 1024,
    ) -> None:
        self.specs = [specs] if isinstance(specs, ProcessSpec) else list(specs)
        if source:
            self.specs[0] = replace(self.specs[0], stdin="null")
        self.inputs: tuple[str, ...] = () if source else ("inp",)
        self.outputs: tuple[str, ...] = () if sink else ("out",)
        self.name = name or " | ".join(s.label for s in self.specs)
        self.batch = batch

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp = ports.get("inp")
        out = ports.get("out")
        async with open_chain(self.specs) as proc, open_plain_nursery() as nursery:
            if inp is not None:
                nursery.start_soon(self._feed, inp, proc)
            else:
                await proc.end()
            if out is not None:
                async for batch in proc.batches(self.batch):
                    await out.send_batch(batch)
            else:
                await proc.wait()

    async def _feed(self, inp: Pipe, proc: ProcessPipe) -> None:
        try:
            async for batch in inp.batches(self.batch):
                await proc.send_batch(batch)
        except trio.BrokenResourceError:
            # The process stopped reading. Whether that is a failure is for the output
            # side to tell (a dead process raises there, and the input stays open for a
            # restarted process to go on with); if it exits cleanly (like head),
            # upstream learns, as with SIGPIPE, that nobody reads any more.
            try:
                await proc.wait()
            except ProcessError:
                return
            await inp.aclose()
            return
        except ProcessError:
            return  # the process failed (a framed send says so): the output side raises it
        await proc.end()
