"""Processes for people: ``pk.run`` (Python workers), ``pk.cmd`` (any executable).

Both return a :class:`Worker`. A worker is two things:

* a **handle** you drive from trio::

      async with pk.run("myapp.enrich:main") as w:
          await w.send(record)
          enriched = await w.receive(timeout=5)
          reply = await w.call(other)          # send, then receive

  leaving the block ENDs the worker's input and waits for it (or kills it if the block
  raised); ``kill``, ``wait``, ``is_alive``, ``pid``, ``exit_code`` and ``stderr``
  are there as for a shell job;

* a **pipeline stage**: ``pk.source(items) | pk.run(a) | pk.cmd("jq", "-c", ".x") |
  pk.sink(f)``. Adjacent commands in raw modes are joined by an OS pipe, as a shell does.

Shell-style composition: ``a.then(b)`` runs ``b`` if ``a`` succeeded (``&&``),
``a.otherwise(b)`` if it failed (``||``), ``a.background()`` starts it without waiting
(``&``). Python workers talk msgpack frames on a dedicated descriptor (so ``print`` in
the worker is harmless); commands get JSON lines (``mode="jsonl"``, the default),
``"lines"`` of text, ``"bytes"``, or pipekit/1 ``"frames"``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Literal

import trio

from .adapters.stdio import (
    DEFAULT_MAX_LINE,
    ProcessError,
    ProcessModule,
    ProcessPipe,
    ProcessSpec,
    open_process,
    worker_spec,
)
from .kernel import Module, Pipe, RestartPolicy, batch_failure
from .kernel.scopes import open_plain_nursery
from .pipeline import Stage, _Options, _options

__all__ = ["ProcessChain", "Worker", "cmd", "run"]

Mode = Literal["frames", "lines", "jsonl", "bytes"]
OUTPUT_MESSAGES = 100_000
"""Messages :attr:`Worker.output` keeps (the most recent)."""
OUTPUT_BYTES = 16 * 1024 * 1024
"""Bytes of ``bytes``/``str`` messages :attr:`Worker.output` keeps (the most recent)."""
Stdio = Literal["pipe", "inherit", "null"]


class Worker(Stage):
    """A process: a handle and a pipeline stage. Make one with :func:`run` or :func:`cmd`."""

    bulk_output = True

    def __init__(
        self,
        spec: ProcessSpec,
        *,
        label: str,
        options: _Options,
        detach: bool,
        workers: int = 1,
        ordered: bool = True,
    ) -> None:
        super().__init__(label, options)
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.spec = spec
        self.detach = detach
        self.workers = workers
        self.ordered = ordered
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
        return self.spec.mode != "frames"

    can_lead = True

    def module(self, *, first: bool = False) -> Module:
        if self.pool_args is not None:
            if first:
                raise ValueError(f"{self.label}: an item-mode worker cannot lead a pipeline")
            return _ItemModule(self.pool_args, self.workers, name=self.label)
        if not first and self.spec.stdin != "pipe" and not self.spec.channel:
            raise ValueError(
                f"{self.label} has stdin={self.spec.stdin!r} and cannot take the messages of "
                "the stage before it: only a pipeline's first stage may leave stdin unconnected"
            )
        if self.workers > 1:
            if first:
                raise ValueError(f"{self.label}: a stage with workers > 1 cannot lead a pipeline")
            return _FanOutModule(self.spec, self.workers, name=self.label)
        return ProcessModule(self.spec, name=self.label, source=first)

    @property
    def joinable(self) -> bool:  # type: ignore[override]
        return (
            self.raw
            and self.workers == 1
            and self.spec.stdin == "pipe"
            and self.spec.stdout == "pipe"
        )

    def joined(self, following: Sequence[Stage]) -> Stage:
        return _ChainStage([self, *(w for w in following if isinstance(w, Worker))])

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
                    if self.spec.stdout == "pipe":  # read it, or a chatty job blocks
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
        await self.send(message)
        return await self.receive(timeout)

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
                if self.spec.stdout == "pipe":
                    async for batch in _batches_quietly(pipe):
                        self._keep_output(batch)
                return await _wait_quietly(pipe)
        except ProcessError as exc:
            if exc.kind == "spawn_failed":
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
        return Worker(self.spec, label=self.label, options=self.options, detach=True)


async def _wait_quietly(pipe: ProcessPipe) -> int:
    with contextlib.suppress(ProcessError):
        await pipe.wait()
    code = pipe.returncode
    return code if code is not None else 1


async def _batches_quietly(pipe: ProcessPipe) -> Any:
    try:
        async for batch in pipe.batches():
            yield batch
    except ProcessError as exc:
        if exc.kind == "spawn_failed":
            raise


class ProcessChain:
    """Processes run one after the other with shell ``&&`` / ``||`` logic.

    ``await chain.run()`` returns the return code of the last process that ran."""

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


def run(
    target: str | os.PathLike[str],
    *,
    mode: Literal["stream", "item"] = "stream",
    init: str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: Stdio = "null",
    stdout: Stdio = "inherit",
    stderr: Stdio = "pipe",
    kill_grace: float = 5.0,
    detach: bool = False,
    workers: int = 1,
    ordered: bool = True,
    buffer: int | None = None,
    buffer_bytes: int | None = None,
    restart: str | RestartPolicy = "never",
    max_restarts: int = 3,
    backoff: float = 0.1,
) -> Worker:
    """A Python worker process running ``target``: ``"package.module:function"`` or a
    ``.py`` path (its ``main``). The worker reads its input stream and writes results
    (``mode="stream"``), or is called once per item (``mode="item"``); ``init`` names a
    function it calls once first. Its framed channel is a dedicated descriptor, so its
    stdout (inherited by default) is free for ``print``.

    As a pipeline stage, ``workers=N`` runs N processes. An item-mode worker gives one
    result per message, in order (it runs on a :class:`~pipekit.WorkerPool`); a
    stream-mode worker may emit any number of messages per input, so N of them cannot
    keep order: pass ``ordered=False``."""
    if stdout == "pipe":
        raise ValueError(
            "a Python worker's stdout carries its print() output, not messages: "
            "use stdout='inherit' (the default) or 'null'"
        )
    if workers > 1 and ordered and mode == "stream":
        raise ValueError(
            "a stream-mode worker may emit any number of messages per input, so the order "
            "of N processes' output cannot be kept: pass ordered=False"
        )
    spec = worker_spec(
        os.fspath(target),
        mode=mode,
        init=init,
        timeout=timeout,
        env=env,
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        kill_grace=kill_grace,
    )
    label = f"run({os.path.basename(os.fspath(target))})"
    worker = Worker(
        spec,
        label=label,
        options=_options(buffer, restart, max_restarts, backoff, buffer_bytes),
        detach=detach,
        workers=workers,
        ordered=ordered,
    )
    if mode == "item":
        worker.pool_args = {
            "target": os.fspath(target),
            "init": init,
            "env": env,
            "cwd": cwd,
            "stdout": stdout,
            "stderr": stderr,
            "kill_grace": kill_grace,
        }
    return worker


def cmd(
    program: str | os.PathLike[str],
    *args: str | os.PathLike[str],
    mode: Mode = "jsonl",
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: Stdio = "pipe",
    stdout: Stdio = "pipe",
    stderr: Stdio = "pipe",
    kill_grace: float = 5.0,
    max_line: int = DEFAULT_MAX_LINE,
    detach: bool = False,
    workers: int = 1,
    ordered: bool = True,
    buffer: int | None = None,
    buffer_bytes: int | None = None,
    restart: str | RestartPolicy = "never",
    max_restarts: int = 3,
    backoff: float = 0.1,
) -> Worker:
    """Any executable as a worker. Messages travel as JSON lines by default
    (``mode="jsonl"``); ``"lines"`` sends and receives text lines, ``"bytes"`` raw
    chunks, ``"frames"`` pipekit/1 on stdin/stdout. ``workers=N`` (with
    ``ordered=False``) runs N copies in a pipeline, least-loaded first."""
    if workers > 1 and ordered:
        raise ValueError(
            "a command may emit any number of messages per input, so the order of N "
            "copies' output cannot be kept: pass ordered=False"
        )
    argv = (os.fspath(program), *(os.fspath(a) for a in args))
    spec = ProcessSpec(
        argv,
        mode=mode,
        timeout=timeout,
        env=env,
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        kill_grace=kill_grace,
        max_line=max_line,
    )
    label = f"cmd({os.path.basename(argv[0])})"
    return Worker(
        spec,
        label=label,
        options=_options(buffer, restart, max_restarts, backoff, buffer_bytes),
        detach=detach,
        workers=workers,
        ordered=ordered,
    )


class _ItemModule:
    """An item-mode worker as a stage: ``size`` processes of a :class:`WorkerPool`
    call the function once per message. Each input batch is mapped in order; a message
    whose call failed fails the module (with the :class:`WorkerError`) after the other
    results of its batch are delivered, as with :func:`pipekit.map`."""

    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, pool_args: Mapping[str, Any], size: int, *, name: str) -> None:
        self.pool_args = dict(pool_args)
        self.size = size
        self.name = name

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        from .pool import WorkerError, WorkerPool  # the pool builds on this module

        inp, out = ports["inp"], ports["out"]
        position = 0  # of the batch's first message in this stage's input
        async with WorkerPool(size=self.size, **self.pool_args) as pool:
            async for batch in inp.batches():
                results = await pool.map(batch)
                good = [r for r in results if not isinstance(r, WorkerError)]
                if good:
                    await out.send_batch(good)
                errors = [r for r in results if isinstance(r, WorkerError)]
                for err in errors:
                    if err.index is not None:
                        err.index += position  # the message's place in the stream
                if errors:
                    raise batch_failure(errors)
                position += len(batch)


class _FanOutModule:
    """``workers`` copies of one process; each input batch goes to the copy with the
    fewest messages in flight (sent minus received), outputs are merged as they come.
    Any copy failing fails the module with its :class:`ProcessError`; a copy that stops
    reading and exits cleanly ends the module's input (like ``head`` in a shell)."""

    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, spec: ProcessSpec, workers: int, *, name: str, batch: int = 256) -> None:
        self.spec = spec
        self.workers = workers
        self.name = name
        self.batch = batch

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        async with AsyncExitStack() as stack:
            pipes = [
                await stack.enter_async_context(open_process(self.spec))
                for _ in range(self.workers)
            ]
            async with open_plain_nursery() as nursery:
                for pipe in pipes:
                    nursery.start_soon(self._drain, pipe, out)

                def in_flight(p: ProcessPipe) -> int:
                    s = p.stats
                    return s.messages_sent - s.messages_received

                async for batch in inp.batches(self.batch):
                    target = min(pipes, key=in_flight)
                    try:
                        await target.send_batch(batch)
                    except trio.BrokenResourceError:
                        # That copy stopped reading: a failure surfaces as its
                        # ProcessError; a clean exit ends our input, as SIGPIPE would.
                        await target.wait()
                        await inp.aclose()
                        break
                for pipe in pipes:
                    await pipe.end()

    @staticmethod
    async def _drain(pipe: ProcessPipe, out: Pipe) -> None:
        async for batch in pipe.batches():
            await out.send_batch(batch)


class _ChainStage(Stage):
    """Adjacent raw-mode commands as one stage: their processes are joined by OS pipes,
    so the bytes between them never pass through Python."""

    can_lead = True
    joinable = True
    bulk_output = True

    def __init__(self, workers: list[Worker]) -> None:
        super().__init__(" | ".join(w.label for w in workers), workers[0].options)
        self.workers = workers

    def joined(self, following: Sequence[Stage]) -> Stage:
        return _ChainStage([*self.workers, *(w for w in following if isinstance(w, Worker))])

    def module(self, *, first: bool = False) -> Module:
        return ProcessModule([w.spec for w in self.workers], name=self.label, source=first)
