"""The thread adapter: modules that run in worker threads, joined by thread ports.

A *thread port* is the thread-side end of a pipe: blocking ``send``/``receive`` and
iteration on the same bounded lanes the kernel uses, so no message is serialized or
copied, a message costs a lock and a deque operation (never a trio call), and a waiting
side is woken once per batch. END, ERROR and backpressure behave as on every pipe.

:class:`ThreadModule` runs user code in threads in one of four shapes:

* ``map``: ``fn(msg) -> result`` per message, in ``workers`` threads, order preserved
  (or not, with ``ordered=False``), least-loaded dispatch of batches;
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
import inspect
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import trio

from ..kernel.errors import PipekitError
from ..kernel.lane import DEFAULT_CAPACITY, Lane
from ..kernel.modules import batch_failure, is_input_name, is_output_name, process_batch
from ..kernel.pipe import LocalPipe, Pipe, error_for_peer

__all__ = ["ThreadModule", "ThreadPort", "open_thread_port"]

Mode = Literal["map", "iter", "port", "async"]
DEFAULT_BATCH = 512


class ThreadPort:
    """The blocking end of a pipe, for code running in a worker thread.

    ``receive()`` raises :class:`trio.EndOfChannel` at the end (iteration simply stops);
    ``send()`` blocks while the receiving side is full. All calls raise
    :class:`trio.ClosedResourceError` once the owning module is being stopped.
    """

    def __init__(
        self,
        receive_lane: Lane | None,
        send_lanes: Sequence[Lane],
        abort: threading.Event,
        *,
        name: str = "thread-port",
        writer_key: object = None,
    ) -> None:
        self.name = name
        self.writer_key = writer_key
        self._rx = receive_lane
        self._tx = tuple(send_lanes)
        self._abort = abort
        self._ended = not self._tx
        self._batch: list[Any] = []
        self._pos = 0
        self.messages_sent = 0
        self.messages_received = 0

    # -- receiving --------------------------------------------------------------------

    def _lane(self) -> Lane:
        if self._rx is None:
            raise trio.ClosedResourceError(f"{self.name}: this port cannot receive")
        return self._rx

    def receive_batch(self, max_items: int | None = None) -> list[Any]:
        """Block until at least one message is available; return up to ``max_items``."""
        if self._pos < len(self._batch):
            rest = self._batch[self._pos :]
            self._batch, self._pos = [], 0
            if max_items is not None and len(rest) > max_items:
                self._batch, rest = rest[max_items:], rest[:max_items]
            self.messages_received += len(rest)
            return rest
        batch = self._lane().get_many_blocking(max_items, self._abort)
        self.messages_received += len(batch)
        return batch

    def receive(self) -> Any:
        """Block until a message is available and return it."""
        if self._pos >= len(self._batch):
            self._batch = self._lane().get_many_blocking(None, self._abort)
            self._pos = 0
        item = self._batch[self._pos]
        self._pos += 1
        self.messages_received += 1
        return item

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self.receive()
            except trio.EndOfChannel:
                return

    def requeue_unread(self) -> None:
        """Put messages taken from the lane but not yet handed out back at its front."""
        if self._rx is not None and self._pos < len(self._batch):
            self._rx.unget(self._batch[self._pos :])
        self._batch, self._pos = [], 0

    # -- sending ----------------------------------------------------------------------

    def _check_send(self) -> None:
        if self._ended:
            raise trio.ClosedResourceError(f"{self.name}: sending direction already ended")

    def send(self, value: Any) -> None:
        if self._ended:
            self._check_send()
        tx = self._tx
        if len(tx) != 1 or self._abort.is_set() or not tx[0].try_put(value):
            for lane in tx:
                lane.put_many_blocking((value,), self._abort)
        self.messages_sent += 1

    def send_batch(self, values: Sequence[Any]) -> None:
        self._check_send()
        if values:
            for lane in self._tx:
                lane.put_many_blocking(values, self._abort)
            self.messages_sent += len(values)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            for lane in self._tx:
                lane.end_writer(self.writer_key)

    def fail(self, exc: BaseException) -> None:
        if not self._ended:
            self._ended = True
            err = error_for_peer(exc, self.name)
            for lane in self._tx:
                lane.fail(err)


class _ThreadRunner:
    """Starts plain threads, signals trio when each ends, and joins them on exit."""

    def __init__(self, name: str, grace: float) -> None:
        self.name = name
        self.grace = grace
        self.abort = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._running = 0
        self._all_done = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._lanes: list[Lane] = []
        self._hooks: list[Callable[[], None]] = []
        self._hook_lock = threading.Lock()

    def on_interrupt(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (from the trio thread) when interrupted; at once if already."""
        with self._hook_lock:
            if not self.abort.is_set():
                self._hooks.append(hook)
                return
        hook()

    def watch(self, *lanes: Lane) -> None:
        """Lanes to wake on interrupt, so blocked threads notice ``abort``."""
        self._lanes.extend(lanes)

    def start(self, target: Callable[[], None], label: str) -> None:
        def body() -> None:
            try:
                target()
            except BaseException as exc:  # delivered to the trio side
                if not (self.abort.is_set() and isinstance(exc, trio.ClosedResourceError)):
                    self._errors.append(exc)
            finally:
                with contextlib.suppress(trio.RunFinishedError):
                    self._token.run_sync_soon(self._one_done)

        thread = threading.Thread(target=body, name=f"pipekit:{self.name}:{label}", daemon=True)
        self._running += 1
        self._threads.append(thread)
        thread.start()

    def _one_done(self) -> None:
        self._running -= 1
        if self._running == 0:
            self._all_done.set()

    async def wait(self) -> None:
        """Wait for every thread; re-raise the first error one of them raised."""
        if self._running:
            await self._all_done.wait()
        else:
            await trio.lowlevel.checkpoint()
        self._join()
        if self._errors:
            raise self._errors[0]

    def interrupt(self) -> None:
        with self._hook_lock:
            self.abort.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()
        for lane in self._lanes:
            lane.wake_all()

    async def shutdown(self) -> None:
        """Interrupt, then join the threads for at most ``grace`` seconds (shielded)."""
        self.interrupt()
        if self._running:
            with trio.CancelScope(shield=True), trio.move_on_after(self.grace):
                await self._all_done.wait()
        if self._running:
            warnings.warn(
                f"{self._running} thread(s) of module {self.name!r} did not stop within "
                f"{self.grace} s of being interrupted and were abandoned",
                RuntimeWarning,
                stacklevel=2,
            )
        self._join()

    def _join(self) -> None:
        for t in self._threads:
            if not t.is_alive() or self._running == 0:
                t.join(timeout=self.grace)


class ThreadModule:
    """A module whose code runs in worker threads. See the module docstring.

    ``inputs``/``outputs`` default to ``("inp",)``/``("out",)``; a ``port``-mode source
    passes ``inputs=()``, a sink ``outputs=()``. ``batch`` bounds how many messages a
    worker takes at once; ``grace`` is how long a cancelled module waits for its
    threads.
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
    ) -> None:
        if inspect.iscoroutinefunction(fn):
            mode = "async"
        mode = mode or "map"
        if mode not in ("map", "iter", "port", "async"):
            raise ValueError(f"mode must be map, iter, port or async, not {mode!r}")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if workers > 1 and mode != "map":
            raise ValueError("workers > 1 needs mode='map' (per-message functions)")
        if mode in ("map", "iter") and (len(inputs) != 1 or len(outputs) != 1):
            raise ValueError(f"mode {mode!r} needs exactly one input and one output port")
        if mode == "async":
            params = list(inspect.signature(fn).parameters)
            inputs = tuple(p for p in params if is_input_name(p))
            outputs = tuple(p for p in params if is_output_name(p))
        self.fn = fn
        self.mode: Mode = mode
        self.workers = workers
        self.ordered = ordered
        self.batch = max(1, batch)
        self.inputs = inputs
        self.outputs = outputs
        self.name: str = str(name or getattr(fn, "__name__", "thread"))
        self.grace = grace

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        runner = _ThreadRunner(str(self.name), self.grace)
        try:
            if self.mode == "map":
                await self._run_map(ports, runner)
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
        return ins, outs

    async def _run_single(self, ports: Mapping[str, Pipe], runner: _ThreadRunner) -> None:
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
        duplex: _DuplexThreadPort | None = None
        if mode == "port" and len(ins) == 1 and len(outs) == 1:
            duplex = _DuplexThreadPort(tports[self.inputs[0]], tports[self.outputs[0]])

        def body() -> None:
            try:
                if mode == "iter":
                    inp, out = tports[self.inputs[0]], tports[self.outputs[0]]
                    for result in fn(iter(inp)):
                        out.send(result)
                elif mode == "port":
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
        runner: _ThreadRunner,
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

    # -- map: per-message function in N threads ------------------------------------------

    async def _run_map(self, ports: Mapping[str, Pipe], runner: _ThreadRunner) -> None:
        """Batches go to the least-loaded worker thread; results come back tagged with
        their batch number and are re-sequenced (if ``ordered``). When ``fn`` fails,
        nothing new is dispatched, every batch in flight is finished and delivered, and
        then the first error is raised: only the failing messages are lost."""
        inp, out = ports[self.inputs[0]], ports[self.outputs[0]]
        n = self.workers
        work = [Lane(2) for _ in range(n)]  # items: (seq, batch)
        results = Lane(2 * n, writers=n)  # items: (seq, results, errors)
        runner.watch(*work, results)
        fn = self.fn
        abort = runner.abort
        load = [0] * n  # batches dispatched to each worker and not yet collected
        # At most this many batches in flight per worker (one being processed, one
        # queued), so a put into a work lane never blocks: the dispatcher must never
        # wait behind a worker that is stuck while another one is idle.
        per_worker = 2
        # Ordered results wait for their predecessors; with one worker stuck the others
        # may run ahead by at most this many batches, so the reorder buffer is bounded.
        window = 4 * n
        delivered = [0]  # batches delivered in order so far
        slot_freed = [trio.Event()]
        worker_of: dict[int, int] = {}
        failure: list[Exception] = []

        def worker(lane: Lane) -> None:
            try:
                while True:
                    try:
                        jobs = lane.get_many_blocking(1, abort)
                    except trio.EndOfChannel:
                        return
                    done = [(seq, *process_batch(fn, batch)) for seq, batch in jobs]
                    results.put_many_blocking(done, abort)
            finally:
                results.end_writer()

        for i, lane in enumerate(work):
            runner.start(lambda lane=lane: worker(lane), str(i))  # type: ignore[misc]

        async def dispatch(scope: trio.CancelScope) -> None:
            in_lane = inp.receive_lane if isinstance(inp, LocalPipe) else None
            seq = 0
            try:
                with scope:
                    while True:
                        try:
                            batch = await inp.receive_batch(self.batch)
                        except trio.EndOfChannel:
                            break
                        try:
                            while min(load) >= per_worker or (
                                self.ordered and seq - delivered[0] >= window
                            ):  # every worker is busy, or the reorder window is full
                                slot_freed[0] = trio.Event()
                                await slot_freed[0].wait()
                            k = min(range(n), key=load.__getitem__)
                            await work[k].put((seq, batch))
                        except BaseException:
                            if isinstance(inp, LocalPipe) and in_lane is not None:
                                in_lane.unget(batch)  # never reached a worker: not lost
                                inp.add_counts(received=-len(batch))  # nor received
                            raise
                        load[k] += 1
                        worker_of[seq] = k
                        seq += 1
            finally:
                for lane in work:
                    lane.end_writer()

        async def deliver(res: list[Any], errs: list[Exception], scope: trio.CancelScope) -> None:
            if res:
                await out.send_batch(res)
            if errs and not failure:
                failure.append(batch_failure(errs))
                scope.cancel()

        async def collect(scope: trio.CancelScope) -> None:
            pending: dict[int, tuple[list[Any], list[Exception]]] = {}
            next_seq = 0
            while True:
                try:
                    items = await results.get_many()
                except trio.EndOfChannel:
                    return
                for seq, res, errs in items:
                    load[worker_of.pop(seq)] -= 1
                    slot_freed[0].set()
                    if self.ordered:
                        pending[seq] = (res, errs)
                    else:
                        await deliver(res, errs, scope)
                while next_seq in pending:
                    res, errs = pending.pop(next_seq)
                    next_seq += 1
                    await deliver(res, errs, scope)
                    delivered[0] = next_seq
                    slot_freed[0].set()

        dispatcher = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dispatch, dispatcher)
            nursery.start_soon(collect, dispatcher)
        await runner.wait()
        if failure:
            raise failure[0]


def _key(pipe: Pipe) -> object:
    """The writer key of a kernel port, so that ending it here and in the kernel
    counts once."""
    return pipe.writer_key if isinstance(pipe, LocalPipe) else None


class _DuplexThreadPort(ThreadPort):
    """One object for a ``port``-mode function with one input and one output."""

    def __init__(self, inp: ThreadPort, out: ThreadPort) -> None:
        super().__init__(
            inp._rx,
            out._tx,
            inp._abort,
            name=inp.name.rsplit(".", 1)[0],
            writer_key=out.writer_key,
        )


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
    runner = _ThreadRunner(label, grace)
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
