"""The :class:`Worker` handle - a process you drive from trio that is also a pipeline
stage - and shell-style composition of workers (``&&``, ``||``, ``&``)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import trio

from ..adapters.stdio import (
    ProcessError,
    ProcessErrorKind,
    ProcessModule,
    ProcessPipe,
    ProcessSpec,
    Redirect,
    StdioMode,
    open_process,
)
from ..kernel import ErrorKind, Module, Pipe, ProtocolError
from ..kernel.codecs import get_codec
from ..pipeline import ItemErrors, OutputWrapper, Stage, StageSettings
from ._pool import WorkerError, WorkerPool
from ._stages import ChainStage, FanOutModule, ItemModule

OUTPUT_MESSAGES = 100_000
"""Messages :attr:`Worker.output` keeps (the most recent)."""
OUTPUT_BYTES = 16 * 1024 * 1024
"""Bytes of ``bytes``/``str`` messages :attr:`Worker.output` keeps (the most recent)."""


class Worker(Stage):
    """A process: a handle and a pipeline stage. Make one with :func:`run` or :func:`cmd`.

    Example::

        (pk.source(["b", "a"]) | pk.cmd("sort", mode="lines")).run()   # -> ['a', 'b']

        async with pk.cmd("cat", mode="lines") as w:                   # a handle
            print(await w.call("hello", timeout=5))                    # hello
    """

    bulk_output = True

    def __init__(
        self,
        spec: ProcessSpec,
        *,
        label: str,
        options: StageSettings,
        detach: bool,
    ) -> None:
        super().__init__(label, options)
        self.spec = spec
        self.detach = detach
        self.workers = options.workers
        self.ordered = options.ordered
        self.errors = ItemErrors(options.on_error, options.retry)
        """Per-item error handling (``on_error``, ``retry``): on an item-mode worker's
        pool, or on the JSON lines of a ``jsonl`` command."""
        self.pool_args: dict[str, Any] | None = None
        """Set for an item-mode Python worker: as a stage it runs on a WorkerPool."""
        self._stack: AsyncExitStack | None = None
        self._pipe: ProcessPipe | None = None
        self._done = trio.Event() if _in_trio() else None
        self._returncode: int | None = None
        self.output: list[Any] = []
        """What :meth:`complete` (or a :meth:`background` run) collected from the
        process's output: the most recent :data:`OUTPUT_MESSAGES` messages, at most
        :data:`OUTPUT_BYTES` of bytes/text."""
        self.output_truncated = False
        """True if older output was dropped to keep :attr:`output` bounded."""
        self._output_bytes = 0

    # -- as a stage ------------------------------------------------------------------

    @property
    def raw(self) -> bool:
        """True for a command in a raw mode (it can be joined to its neighbours by an OS
        pipe)."""
        return self.spec.mode != StdioMode.FRAMES

    can_lead = True

    def module(self, *, first: bool = False) -> Module:
        if self.pool_args is not None:
            if first:
                raise ValueError(f"{self.label}: an item-mode worker cannot lead a pipeline")
            if self.options.on_error != "raise" or self.options.retry is not None:
                return _ItemsOnPool(self.pool_args, self.workers, self.errors, name=self.label)
            return ItemModule(self.pool_args, self.workers, name=self.label)
        if not first and self.spec.stdin != Redirect.PIPE and self.spec.channel is None:
            raise ValueError(
                f"{self.label} has stdin={str(self.spec.stdin)!r} and cannot take the messages of "
                "the stage before it: only a pipeline's first stage may leave stdin unconnected"
            )
        per_line = self._json_per_line
        spec = dataclasses.replace(self.spec, mode=StdioMode.LINES) if per_line else self.spec
        mod: Module
        if self.workers > 1:
            if first:
                raise ValueError(f"{self.label}: a stage with workers > 1 cannot lead a pipeline")
            mod = FanOutModule(spec, self.workers, name=self.label)
        else:
            mod = ProcessModule(spec, name=self.label, source=first)
        if per_line:
            return _JsonPerLine(mod, self.errors)
        return _JsonHint(mod) if self.spec.mode == StdioMode.JSONL else mod

    @property
    def _json_per_line(self) -> bool:
        """A ``jsonl`` command with ``on_error``: its JSON is encoded and decoded here, a
        message and a line at a time, so that one bad line is one failed item."""
        return self.spec.mode == StdioMode.JSONL and self.options.on_error != "raise"

    def branches(self) -> list[tuple[str, list[Stage]]]:
        return self.errors.branches()

    @property
    def joinable(self) -> bool:  # type: ignore[override]
        return (
            self.raw
            and self.workers == 1
            and self.spec.stdin == Redirect.PIPE
            and self.spec.stdout == Redirect.PIPE
            and not self._json_per_line
        )

    def joined(self, following: Sequence[Stage]) -> Stage:
        return _Chain([self, *(w for w in following if isinstance(w, Worker))])

    # -- as a handle -----------------------------------------------------------------

    async def start(self) -> Worker:
        """Start the process (``async with`` does this for you; without it, call
        :meth:`aclose` from the same task when done)."""
        if self._pipe is not None:
            raise RuntimeError(f"{self.label} is already started")
        if self.detach:
            await self._start_in_background()
            return self
        stack = AsyncExitStack()
        self._pipe = await stack.enter_async_context(open_process(self.spec))
        self._stack = stack
        return self

    async def _start_in_background(self) -> None:
        started = trio.Event()
        failure: list[BaseException] = []

        async def hold() -> None:
            try:
                async with open_process(self.spec) as pipe:
                    self._pipe = pipe
                    started.set()
                    await pipe.end()
                    if self.spec.stdout == Redirect.PIPE:  # read it, or a chatty job blocks
                        async for batch in _batches_quietly(pipe):
                            self._keep_output(batch)
                    await _wait_quietly(pipe)
            except BaseException as exc:  # reported to start() or kept for wait()
                failure.append(exc)
                if not isinstance(exc, Exception):
                    raise
            finally:
                started.set()
                self._finish()

        trio.lowlevel.spawn_system_task(hold, name=f"pipekit:background:{self.label}")
        await started.wait()
        if self._pipe is None and failure:
            raise failure[0]

    async def __aenter__(self) -> Worker:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self.detach or self._stack is None:
            return None
        stack, self._stack = self._stack, None
        try:
            # open_process ENDs the input and waits on a normal exit, and terminates
            # the process group (TERM, then KILL after kill_grace) otherwise.
            return await stack.__aexit__(exc_type, exc, tb)
        finally:
            self._finish()

    async def aclose(self) -> None:
        """Leave a worker started with :meth:`start` (what ``async with`` does on exit):
        END its input, wait for it, reap it. Call it from the task that started it."""
        await self.__aexit__(None, None, None)

    def _keep_output(self, batch: Sequence[Any]) -> None:
        """Append to :attr:`output`, dropping the oldest messages past the bounds."""
        self.output.extend(batch)
        self._output_bytes += sum(len(m) for m in batch if isinstance(m, bytes | str))
        drop = 0
        while len(self.output) - drop > OUTPUT_MESSAGES or (
            self._output_bytes > OUTPUT_BYTES and len(self.output) - drop > 1
        ):
            m = self.output[drop]
            if isinstance(m, bytes | str):
                self._output_bytes -= len(m)
            drop += 1
        if drop:
            del self.output[:drop]
            self.output_truncated = True

    def _finish(self) -> None:
        if self._pipe is not None:
            self._returncode = self._pipe.returncode
        if self._done is not None:
            self._done.set()

    def _pipe_or_raise(self) -> ProcessPipe:
        if self._pipe is None:
            raise RuntimeError(f"{self.label} is not started: use 'async with' or 'await start()'")
        return self._pipe

    async def send(self, message: Any) -> None:
        """Send one message to the process (blocks while it is not reading)."""
        await self._pipe_or_raise().send(message)

    async def send_batch(self, messages: Sequence[Any]) -> None:
        await self._pipe_or_raise().send_batch(messages)

    async def receive(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """The next message from the process. Raises :class:`trio.EndOfChannel` when its
        output ended, :class:`trio.TooSlowError` after ``timeout`` seconds, and
        :class:`ProcessError` if it died."""
        pipe = self._pipe_or_raise()
        if timeout is None:
            return await pipe.receive()
        with trio.fail_after(timeout):
            return await pipe.receive()

    async def call(self, message: Any, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Send ``message`` and return the next message the process outputs."""
        pipe = self._pipe_or_raise()  # (the pipe's own calls: two coroutines less a call)
        await pipe.send(message)
        if timeout is None:
            return await pipe.receive()
        with trio.fail_after(timeout):
            return await pipe.receive()

    async def close(self) -> int:
        """END the process's input, wait for it to exit and return its return code
        (negative: the signal that killed it)."""
        pipe = self._pipe_or_raise()
        await pipe.end()
        return await self.wait()

    async def wait(self) -> int:
        """Wait for the process to exit; return its return code (negative: killed by
        that signal). A non-zero code is returned, not raised."""
        pipe = self._pipe_or_raise()
        if self.detach and self._done is not None:
            await self._done.wait()  # the job has exited and its output is read
        code = await _wait_quietly(pipe)
        self._returncode = code
        return code

    def kill(self) -> None:
        """SIGKILL the process (and its process group) now."""
        if self._pipe is not None:
            self._pipe.kill()

    def is_alive(self) -> bool:
        return self._pipe is not None and self._pipe.is_alive()

    @property
    def pid(self) -> int | None:
        return self._pipe.pid if self._pipe is not None else None

    @property
    def exit_code(self) -> int | None:
        """The return code once the process exited, else None."""
        if self._pipe is not None and self._pipe.returncode is not None:
            return self._pipe.returncode
        return self._returncode

    @property
    def stderr(self) -> str:
        """The tail of what the process wrote to stderr (when captured)."""
        return self._pipe.stderr if self._pipe is not None else ""

    async def complete(self) -> int:
        """Run to completion with no input; collect the output in :attr:`output` and
        return the return code (what ``then``/``otherwise`` look at)."""
        try:
            async with open_process(self.spec) as pipe:
                self._pipe = pipe
                await pipe.end()
                if self.spec.stdout == Redirect.PIPE:
                    async for batch in _batches_quietly(pipe):
                        self._keep_output(batch)
                return await _wait_quietly(pipe)
        except ProcessError as exc:
            if exc.kind == ProcessErrorKind.SPAWN_FAILED:
                raise
            code = self._pipe.returncode if self._pipe is not None else None
            return code if code is not None else 1

    # -- shell-style composition -------------------------------------------------------

    def then(self, other: Worker | ProcessChain) -> ProcessChain:
        """``self && other``: run ``other`` only if this succeeds."""
        return ProcessChain([("first", self)]).then(other)

    def otherwise(self, other: Worker | ProcessChain) -> ProcessChain:
        """``self || other``: run ``other`` only if this fails."""
        return ProcessChain([("first", self)]).otherwise(other)

    def background(self) -> Worker:
        """``self &``: a copy that starts without tying the caller's scope to it; the
        process is still terminated when the trio run ends."""
        options = dataclasses.replace(self.options, workers=1, ordered=True)
        return Worker(self.spec, label=self.label, options=options, detach=True)


class _Chain(ChainStage):
    """Adjacent raw-mode commands joined by OS pipes, with the hint of :class:`_JsonHint`
    when the last one's output is JSON lines."""

    def module(self, *, first: bool = False) -> Module:
        mod = super().module(first=first)
        return _JsonHint(mod) if self.workers[-1].spec.mode == StdioMode.JSONL else mod


NOT_JSON_HINT = (
    "the command's output is not JSON lines (mode='jsonl', the default): "
    "if it writes text, pass mode='lines' (or mode='bytes' for raw chunks)"
)


class _JsonHint:
    """A ``jsonl`` command's module whose undecodable output says what was probably
    meant (``pk.cmd("ls")`` writes text, not JSON)."""

    def __init__(self, inner: Module) -> None:
        self.inner = inner
        self.inputs = inner.inputs
        self.outputs = inner.outputs

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        try:
            await self.inner.run(ports)
        except ProtocolError as exc:
            if exc.kind != ErrorKind.UNDECODABLE:
                raise
            raise type(exc)(f"{exc.message}; {NOT_JSON_HINT}", kind=exc.kind) from exc


class _JsonPerLine:
    """A ``jsonl`` command run in ``lines`` mode, its JSON encoded and decoded here one
    message and one line at a time: a message that cannot be encoded, or an output line
    that is not JSON, is one failed item for ``on_error`` (``(message, CodecError)`` or
    ``(line, ValueError)``); blank output lines are skipped, as in ``jsonl`` mode."""

    def __init__(self, inner: Module, errors: ItemErrors) -> None:
        self.inner = inner
        self.errors = errors
        self.inputs = inner.inputs
        self.outputs = errors.outputs

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inner: dict[str, Pipe] = {"out": _DecodeJson(ports["out"], self.errors, ports)}
        if "inp" in ports:
            inner["inp"] = _EncodeJson(ports["inp"], self.errors, ports)
        await self.inner.run(inner)


class _EncodeJson(OutputWrapper):
    """An input pipe whose batches come out as JSON text (``bytes``, one per message)."""

    def __init__(self, inner: Pipe, errors: ItemErrors, ports: Mapping[str, Pipe]) -> None:
        super().__init__(inner)
        self.errors = errors
        self.ports = ports
        self.encode = get_codec("json").encode

    async def receive(self) -> Any:
        return (await self.receive_batch(1))[0]

    async def receive_batch(self, max_items: int | None = None) -> list[Any]:
        encode = self.encode
        while True:
            got = await self.inner.receive_batch(max_items)
            encoded: list[Any] = []
            failed: list[tuple[Any, Exception]] = []
            for m in got:
                try:
                    encoded.append(encode(m))
                except Exception as exc:
                    failed.append((m, exc))
            await self.errors.deliver(failed, self.ports)
            if encoded:
                return encoded


class _DecodeJson(OutputWrapper):
    """An output pipe that decodes the lines sent to it as JSON."""

    def __init__(self, inner: Pipe, errors: ItemErrors, ports: Mapping[str, Pipe]) -> None:
        super().__init__(inner)
        self.errors = errors
        self.ports = ports

    async def send_batch(self, values: Sequence[Any]) -> None:
        loads = json.loads
        decoded: list[Any] = []
        failed: list[tuple[Any, Exception]] = []
        for line in values:
            try:
                decoded.append(loads(line))
            except ValueError as exc:
                if line.strip():
                    failed.append((line, exc))
        if decoded:
            await self.inner.send_batch(decoded)
        await self.errors.deliver(failed, self.ports)
        if not decoded and not failed:
            await trio.lowlevel.checkpoint()


class _ItemsOnPool:
    """An item-mode worker on a :class:`WorkerPool`, with per-item ``retry`` (the
    failed items of a batch are sent again together, after the backoff) and
    ``on_error`` (the :class:`WorkerError` is the exception). The results of a batch go
    on in order, then its failures are handled."""

    inputs: tuple[str, ...] = ("inp",)

    def __init__(
        self, pool_args: Mapping[str, Any], size: int, errors: ItemErrors, *, name: str
    ) -> None:
        self.pool_args = dict(pool_args)
        self.size = size
        self.errors = errors
        self.name = name
        self.outputs: tuple[str, ...] = errors.outputs

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        retry = self.errors.retry
        position = 0  # of the batch's first message in this stage's input
        async with WorkerPool(size=self.size, **self.pool_args) as pool:
            async for batch in inp.batches():
                results: list[Any] = await pool.map(batch)
                failed = [i for i, r in enumerate(results) if isinstance(r, WorkerError)]
                attempt = 0
                while failed and retry is not None:
                    again = [i for i in failed if retry.wants(results[i], attempt)]
                    if not again:
                        break
                    attempt += 1
                    await trio.sleep(retry.delay(attempt))
                    for i, r in zip(again, await pool.map([batch[i] for i in again]), strict=True):
                        results[i] = r
                    failed = [i for i in failed if isinstance(results[i], WorkerError)]
                for i in failed:
                    results[i].index = position + i  # the message's place in the stream
                good = [r for r in results if not isinstance(r, WorkerError)] if failed else results
                if good:
                    await out.send_batch(good)
                await self.errors.deliver([(batch[i], results[i]) for i in failed], ports)
                position += len(batch)


async def _wait_quietly(pipe: ProcessPipe) -> int:
    with contextlib.suppress(ProcessError):
        await pipe.wait()
    code = pipe.returncode
    return code if code is not None else 1


async def _batches_quietly(pipe: ProcessPipe) -> AsyncIterator[list[Any]]:
    try:
        async for batch in pipe.batches():
            yield batch
    except ProcessError as exc:
        if exc.kind == ProcessErrorKind.SPAWN_FAILED:
            raise


class ProcessChain:
    """Processes run one after the other with shell ``&&`` / ``||`` logic.

    ``await chain.run()`` returns the return code of the last process that ran.

    Example::

        # test -d /tmp && echo yes || echo no
        code = await pk.cmd("test", "-d", "/tmp").then(pk.cmd("echo", "yes")).otherwise(
            pk.cmd("echo", "no")
        ).run()
    """

    def __init__(self, steps: list[tuple[str, Worker | ProcessChain]]) -> None:
        self.steps = steps

    def then(self, other: Worker | ProcessChain) -> ProcessChain:
        return ProcessChain([*self.steps, ("and", other)])

    def otherwise(self, other: Worker | ProcessChain) -> ProcessChain:
        return ProcessChain([*self.steps, ("or", other)])

    async def run(self) -> int:
        code = 0
        for op, step in self.steps:
            if (op == "and" and code != 0) or (op == "or" and code == 0):
                continue
            code = await step.run() if isinstance(step, ProcessChain) else await step.complete()
        return code

    def background(self) -> _BackgroundChain:
        """Start the chain in the background; ``await handle.wait()`` for its code."""
        return _BackgroundChain(self)


class _BackgroundChain:
    def __init__(self, chain: ProcessChain) -> None:
        self._chain = chain
        self._done = trio.Event()
        self._result: int | None = None
        self._error: BaseException | None = None
        trio.lowlevel.spawn_system_task(self._run, name="pipekit:background-chain")

    async def _run(self) -> None:
        try:
            self._result = await self._chain.run()
        except Exception as exc:
            self._error = exc
        finally:
            self._done.set()

    async def wait(self) -> int:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
