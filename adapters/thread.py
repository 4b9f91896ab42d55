"""The thread adapter: modules that run in worker threads, joined by thread ports.

A *thread port* is the thread-side end of a pipe: blocking ``send``/``receive`` and
iteration on the same bounded lanes the kernel uses, so no message is serialized or
copied, a message costs a lock and a deque operation (never a trio call), and a waiting
side is woken once per batch. END, ERROR and backpressure behave as on every pipe.

:class:`ThreadModule` runs user code in threads in one of four shapes:

* ``map``: ``fn(msg) -> result`` per message, in ``workers`` threads that take chunks
  sized from the measured time per message from one queue, order preserved (or not,
  with ``ordered=False``); a failure names the message it failed on (its ``tally``);
* ``iter``: ``fn(messages) -> iterable``, a generator-style transform of the whole stream;
* ``port``: ``fn(port)`` with a :class:`ThreadPort` (``receive``, ``send``, iteration);
* an ``async def fn(inp, out)``: run under its own trio event loop in the thread.

Threads are plain ``threading.Thread`` objects owned by the module: when the module is
cancelled the ports are interrupted (blocked calls raise
:class:`trio.ClosedResourceError`) and the threads are joined, for at most ``grace``
seconds, so none outlives its kernel.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import trio

from ..kernel.errors import PipekitError
from ..kernel.lane import DEFAULT_CAPACITY, Lane
from ..kernel.modules import is_input_name, is_output_name
from ..kernel.pipe import LocalPipe, Pipe
from ._threadmap import MapTally, Tally, run_map
from ._threadport import ThreadPort
from ._threadrunner import ThreadRunner

__all__ = ["ThreadModule", "ThreadPort", "open_thread_port"]

Mode = Literal["map", "iter", "port", "async"]
"""The ``mode=`` a :class:`ThreadModule` accepts."""
DEFAULT_BATCH = 512


class ThreadMode(enum.StrEnum):
    """The shape a :class:`ThreadModule` runs its function in (see the module docstring);
    equal to the ``mode=`` string it was given as."""

    MAP = "map"
    ITER = "iter"
    PORT = "port"
    ASYNC = "async"


class ThreadModule:
    """A module whose code runs in worker threads. See the module docstring.

    ``inputs``/``outputs`` default to ``("inp",)``/``("out",)``; a ``port``-mode source
    passes ``inputs=()``, a sink ``outputs=()``. ``batch`` bounds how many messages a
    worker takes at once (``map`` mode: chunks hold about 2 ms of work, at most
    ``batch`` messages); ``grace`` is how long a cancelled module waits for its
    threads. ``tally`` (``map`` mode) counts the messages taken over every run and is
    told the message a failure was on (``tally.fail(index, message)``, its place in the
    input from 0, the first in input order); by default a :class:`MapTally`.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        mode: Mode | None = None,
        workers: int = 1,
        ordered: bool = True,
        batch: int = DEFAULT_BATCH,
        inputs: tuple[str, ...] = ("inp",),
        outputs: tuple[str, ...] = ("out",),
        name: str | None = None,
        grace: float = 5.0,
        tally: Tally | None = None,
    ) -> None:
        if inspect.iscoroutinefunction(fn):
            mode = "async"
        mode = mode or "map"
        if mode not in tuple(ThreadMode):
            raise ValueError(f"mode must be map, iter, port or async, not {mode!r}")
        kind = ThreadMode(mode)
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if workers > 1 and kind is not ThreadMode.MAP:
            raise ValueError("workers > 1 needs mode='map' (per-message functions)")
        if kind in (ThreadMode.MAP, ThreadMode.ITER) and (len(inputs) != 1 or len(outputs) != 1):
            raise ValueError(f"mode {mode!r} needs exactly one input and one output port")
        if kind is ThreadMode.ASYNC:
            params = list(inspect.signature(fn).parameters)
            inputs = tuple(p for p in params if is_input_name(p))
            outputs = tuple(p for p in params if is_output_name(p))
        self.fn = fn
        self.mode = kind
        self.workers = workers
        self.ordered = ordered
        self.batch = max(1, batch)
        self.inputs = inputs
        self.outputs = outputs
        self.name: str = str(name or getattr(fn, "__name__", "thread"))
        self.grace = grace
        self.tally: Tally = tally if tally is not None else MapTally()

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        runner = ThreadRunner(str(self.name), self.grace)
        try:
            if self.mode is ThreadMode.MAP:
                await run_map(
                    self.fn,
                    ports[self.inputs[0]],
                    ports[self.outputs[0]],
                    runner,
                    workers=self.workers,
                    ordered=self.ordered,
                    batch_size=self.batch,
                    tally=self.tally,
                )
            else:
                await self._run_single(ports, runner)
        finally:
            await runner.shutdown()

    # -- one thread on the kernel's own lanes ------------------------------------------

    def _lanes(
        self, ports: Mapping[str, Pipe]
    ) -> tuple[dict[str, Lane], dict[str, tuple[Lane, ...]]]:
        ins: dict[str, Lane] = {}
        outs: dict[str, tuple[Lane, ...]] = {}
        for name in self.inputs:
            pipe = ports[name]
            if not isinstance(pipe, LocalPipe) or pipe.receive_lane is None:
                raise PipekitError(
                    f"thread module {self.name!r}: port {name!r} is not an in-process pipe"
                )
            ins[name] = pipe.receive_lane
        for name in self.outputs:
            pipe = ports[name]
            if not isinstance(pipe, LocalPipe):
                raise PipekitError(
                    f"thread module {self.name!r}: port {name!r} is not an in-process pipe"
                )
            outs[name] = pipe.send_lanes
        # The kernel's lanes are local to the trio thread until shared; share them
        # before any thread of ours touches them.
        for lane in [*ins.values(), *(lane for lanes in outs.values() for lane in lanes)]:
            lane.share()
        return ins, outs

    async def _run_single(self, ports: Mapping[str, Pipe], runner: ThreadRunner) -> None:
        ins, outs = self._lanes(ports)
        runner.watch(*ins.values(), *(lane for lanes in outs.values() for lane in lanes))
        tports = {
            n: ThreadPort(lane, (), runner.abort, name=f"{self.name}.{n}")
            for n, lane in ins.items()
        }
        tports.update(
            {
                n: ThreadPort(
                    None, lanes, runner.abort, name=f"{self.name}.{n}", writer_key=_key(ports[n])
                )
                for n, lanes in outs.items()
            }
        )
        fn = self.fn
        mode = self.mode
        # A one-in/one-out port function gets one duplex port: that object counts the
        # traffic and may hold unread messages, so account and requeue through it.
        duplex: ThreadPort | None = None
        if mode is ThreadMode.PORT and len(ins) == 1 and len(outs) == 1:
            i, o = self.inputs[0], self.outputs[0]
            duplex = ThreadPort(
                ins[i], outs[o], runner.abort, name=self.name, writer_key=_key(ports[o])
            )

        def body() -> None:
            try:
                if mode is ThreadMode.ITER:
                    inp, out = tports[self.inputs[0]], tports[self.outputs[0]]
                    for result in fn(iter(inp)):
                        out.send(result)
                elif mode is ThreadMode.PORT:
                    if duplex is not None:
                        fn(duplex)
                    elif len(tports) == 1:  # a source or a sink: its one port
                        fn(*tports.values())
                    else:
                        fn(**tports)
                else:  # async: its own trio loop on the same lanes
                    trio.run(self._async_body, ins, outs, runner, tports)
            except BaseException:
                for p in [duplex] if duplex is not None else tports.values():
                    p.requeue_unread()
                raise
            # The kernel ENDs the outputs when the module returns; nothing to do here.

        runner.start(body, "0")
        try:
            await runner.wait()
        finally:
            for n, tport in tports.items():
                pipe = ports[n]
                sent, received = tport.messages_sent, tport.messages_received
                if duplex is not None:
                    sent = duplex.messages_sent if n in outs else 0
                    received = duplex.messages_received if n in ins else 0
                if isinstance(pipe, LocalPipe):
                    pipe.add_counts(sent=sent, received=received)

    async def _async_body(
        self,
        ins: dict[str, Lane],
        outs: dict[str, tuple[Lane, ...]],
        runner: ThreadRunner,
        tports: dict[str, ThreadPort],
    ) -> None:
        pipes: dict[str, LocalPipe] = {
            n: LocalPipe(lane, (), name=f"{self.name}.{n}") for n, lane in ins.items()
        }
        pipes.update(
            {
                n: LocalPipe(None, lanes, name=f"{self.name}.{n}", writer_key=tports[n].writer_key)
                for n, lanes in outs.items()
            }
        )
        token = trio.lowlevel.current_trio_token()
        try:
            with trio.CancelScope() as scope:

                def cancel_from_kernel() -> None:
                    with contextlib.suppress(trio.RunFinishedError):
                        token.run_sync_soon(scope.cancel)

                runner.on_interrupt(cancel_from_kernel)
                await self.fn(**pipes)
        finally:
            for n, p in pipes.items():  # credit this loop's traffic to the kernel's ports
                tports[n].messages_sent += p.stats.messages_sent
                tports[n].messages_received += p.stats.messages_received
        for pipe in pipes.values():
            pipe.detach()
        if scope.cancelled_caught:
            raise trio.ClosedResourceError("interrupted: the module is being stopped")


def _key(pipe: Pipe) -> object:
    """The writer key of a kernel port, so that ending it here and in the kernel
    counts once."""
    return pipe.writer_key if isinstance(pipe, LocalPipe) else None


@asynccontextmanager
async def open_thread_port(
    fn: Callable[[ThreadPort], Any],
    *,
    capacity: int = DEFAULT_CAPACITY,
    name: str | None = None,
    grace: float = 5.0,
) -> AsyncIterator[Pipe]:
    """Run ``fn(port)`` in a new thread and yield the trio-side :class:`Pipe` joined to
    its :class:`ThreadPort`.

    What the trio side sends, the thread receives, and the other way round. When ``fn``
    returns, its sending direction ENDs; if it raises, the trio side's ``receive``
    raises that error (and if it never did, leaving the block raises it). On a normal
    exit the trio side ENDs and stops reading (the
    thread's further sends raise :class:`trio.BrokenResourceError`) and waits for the
    thread to finish with what was sent before the END; if the block raises or is
    cancelled, the thread is interrupted and joined (at most ``grace`` seconds).
    """
    label = str(name or getattr(fn, "__name__", "thread"))
    to_thread = Lane(capacity)
    from_thread = Lane(capacity)
    runner = ThreadRunner(label, grace)
    runner.watch(to_thread, from_thread)
    port = ThreadPort(to_thread, (from_thread,), runner.abort, name=f"{label}:thread")
    pipe = LocalPipe(from_thread, (to_thread,), name=f"{label}:trio")

    failures: list[Exception] = []

    def body() -> None:
        try:
            fn(port)
        except BaseException as exc:
            port.fail(exc)
            if not isinstance(exc, Exception):
                raise
            if not (from_thread.reader_closed and isinstance(exc, trio.BrokenResourceError)):
                failures.append(exc)  # not merely "the trio side stopped reading"
        else:
            port.end()

    runner.start(body, "0")
    try:
        yield pipe
        # Leaving normally: END the thread's input and stop reading its output, then
        # let it finish with what was sent before the END. It is interrupted only if
        # this wait is cancelled.
        await pipe.end()
        pipe.close_nowait()
        await runner.wait()
        if failures and not from_thread.error_delivered:
            raise failures[0]  # the trio side never received it: do not swallow it
    finally:
        pipe.close_nowait()
        await runner.shutdown()
