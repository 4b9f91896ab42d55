"""The kernel: wires modules with bounded in-process pipes and supervises them.

::

    async with open_kernel() as k:
        src = k.add(produce)              # async def produce(out)
        dbl = k.add(lambda x: 2 * x, name="double")
        snk = k.add(consume)              # async def consume(inp)
        k.connect(src, dbl)
        k.connect(dbl, snk)
    # leaving the block starts what is not started yet and waits for every module

Modules start on ``await k.start()`` or when the ``async with`` body ends. Wiring is
checked at start: every port must be connected. A module that returns ENDs its outputs
(a merge ends when *all* its inputs ended); a module that raises is restarted if its
policy allows, otherwise its outputs fail with a :class:`ModuleError` naming it, every
other module is cancelled and the kernel scope raises that error (the original exception
is its ``__cause__``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from ._records import ModuleState, ModuleStats, PortRef, Restart, RestartPolicy, Topology
from .errors import ModuleError, RemoteError, WiringError
from .lane import DEFAULT_CAPACITY, Lane
from .modules import Module, as_module
from .pipe import LocalPipe, Pipe

__all__ = [
    "Kernel",
    "ModuleHandle",
    "ModuleState",
    "ModuleStats",
    "PortRef",
    "Restart",
    "RestartPolicy",
    "Topology",
    "open_kernel",
]

log = logging.getLogger("pipekit.kernel")


class ModuleHandle:
    """What :meth:`Kernel.add` returns: names the module and its ports."""

    def __init__(self, kernel: Kernel, name: str) -> None:
        self.kernel = kernel
        self.name = name

    def __getitem__(self, port: str) -> PortRef:
        return self.kernel.port(self.name, port)

    @property
    def stats(self) -> ModuleStats:
        """A live snapshot of the module's statistics."""
        return self.kernel.module_stats(self.name)

    def __repr__(self) -> str:
        return f"<ModuleHandle {self.name!r}>"


@dataclass(slots=True)
class _Edge:
    src: PortRef
    dst: PortRef
    kind: str  # connect, split, merge


@dataclass(slots=True)
class _Entry:
    name: str
    module: Module
    policy: RestartPolicy
    capacity: int
    max_bytes: int | None
    stats: ModuleStats
    started: bool = False
    ports: dict[str, LocalPipe] = field(default_factory=dict)  # the running incarnation's
    in_lanes: dict[str, Lane] = field(default_factory=dict)
    out_lanes: dict[str, list[Lane]] = field(default_factory=dict)


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class Kernel:
    """A set of wired, supervised modules. Create it with :func:`open_kernel`."""

    def __init__(self, nursery: trio.Nursery, *, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self._nursery = nursery
        self._modules: dict[str, _Entry] = {}
        self._edges: list[_Edge] = []
        self._failure: ModuleError | None = None
        self._running = 0
        self._idle = trio.Event()
        self._idle.set()
        self._stopped = False
        self._exited = False

    # -- building ---------------------------------------------------------------------

    def add(
        self,
        module: Any,
        *,
        name: str | None = None,
        inputs: tuple[str, ...] | None = None,
        outputs: tuple[str, ...] | None = None,
        restart: Restart | RestartPolicy = "never",
        max_restarts: int = 3,
        backoff: float = 0.1,
        backoff_max: float = 10.0,
        capacity: int | None = None,
        max_bytes: int | None = None,
    ) -> ModuleHandle:
        """Add a module (see :func:`~pipekit.kernel.modules.as_module` for the forms).

        ``capacity`` bounds each of its input buffers in messages (default: the
        kernel's); ``max_bytes`` also bounds the total size of ``bytes``/``str`` messages
        in each (for modules fed bulk data)."""
        if self._exited:
            raise WiringError(f"kernel {self.name!r} has exited: cannot add modules to it")
        mod = as_module(module, inputs=inputs, outputs=outputs)
        base = name or getattr(mod, "name", None) or getattr(module, "__name__", None) or "module"
        if name is not None and name in self._modules:
            raise WiringError(f"a module named {name!r} already exists")
        unique = base
        n = 2
        while unique in self._modules:  # same label twice in a pipeline: map(f), map(f)-2
            unique = f"{base}-{n}"
            n += 1
        policy = (
            restart
            if isinstance(restart, RestartPolicy)
            else RestartPolicy(
                restart, max_restarts=max_restarts, backoff=backoff, backoff_max=backoff_max
            )
        )
        cap = capacity if capacity is not None else self.capacity
        if cap < 1:
            raise ValueError("capacity must be at least 1")
        self._modules[unique] = _Entry(unique, mod, policy, cap, max_bytes, ModuleStats(unique))
        return ModuleHandle(self, unique)

    def _port(self, ref: ModuleHandle | PortRef | str, kind: Literal["input", "output"]) -> PortRef:
        """``ref`` as an input or output port (a module stands for its only one)."""
        if isinstance(ref, PortRef):
            name = ref.module
        else:
            name = ref.name if isinstance(ref, ModuleHandle) else ref
        entry = self._entry(name)
        ports = entry.module.outputs if kind == "output" else entry.module.inputs
        if isinstance(ref, PortRef):
            if ref.port not in ports:
                raise WiringError(f"{ref} is not an {kind} port of module {ref.module!r}")
            return ref
        if len(ports) != 1:
            raise WiringError(
                f"module {name!r} has {len(ports)} {kind} ports {list(ports)}; "
                "name one: handle[port]"
            )
        return PortRef(name, ports[0])

    def port(self, module: str, port: str) -> PortRef:
        """The input or output ``port`` of ``module``; :class:`WiringError` if it has
        none."""
        entry = self._entry(module)
        if port not in entry.module.inputs and port not in entry.module.outputs:
            raise WiringError(f"module {module!r} has no port {port!r}")
        return PortRef(module, port)

    def _entry(self, name: str) -> _Entry:
        try:
            return self._modules[name]
        except KeyError:
            raise WiringError(f"no module named {name!r}") from None

    def _link(self, src: PortRef, dst: PortRef, kind: str) -> None:
        for e in self._edges:
            if e.src == src and e.dst == dst:
                raise WiringError(f"{src} is already connected to {dst}")
        for ref in (src, dst):
            if self._modules[ref.module].started:
                raise WiringError(f"cannot rewire {ref}: module {ref.module!r} has started")
        self._edges.append(_Edge(src, dst, kind))

    def connect(self, a: ModuleHandle | PortRef | str, b: ModuleHandle | PortRef | str) -> None:
        """Send what ``a`` outputs to ``b``'s input."""
        self._link(self._port(a, "output"), self._port(b, "input"), "connect")

    def split(
        self, a: ModuleHandle | PortRef | str, targets: Iterable[ModuleHandle | PortRef | str]
    ) -> None:
        """Send every message ``a`` outputs to each of ``targets``, in order (the
        slowest target sets the pace)."""
        src = self._port(a, "output")
        for t in targets:
            self._link(src, self._port(t, "input"), "split")

    def merge(
        self, sources: Iterable[ModuleHandle | PortRef | str], b: ModuleHandle | PortRef | str
    ) -> None:
        """Interleave what ``sources`` output into ``b``'s input; it ends when all have."""
        dst = self._port(b, "input")
        for s in sources:
            self._link(self._port(s, "output"), dst, "merge")

    # -- running ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start every module added since the last start. Raises :class:`WiringError`
        if one of them has an unconnected port."""
        await trio.lowlevel.checkpoint()
        pending = [e for e in self._modules.values() if not e.started]
        if not pending:
            return
        problems = []
        for entry in pending:
            for port in entry.module.inputs:
                if not any(e.dst == PortRef(entry.name, port) for e in self._edges):
                    problems.append(f"input {entry.name}.{port} is not connected")
            for port in entry.module.outputs:
                if not any(e.src == PortRef(entry.name, port) for e in self._edges):
                    problems.append(f"output {entry.name}.{port} is not connected")
        if problems:
            raise WiringError("cannot start: " + "; ".join(problems))
        for entry in pending:
            for port in entry.module.inputs:
                writers = sum(1 for e in self._edges if e.dst == PortRef(entry.name, port))
                # Local: modules are trio tasks of this thread; a thread module
                # shares the lanes it hands to its threads (Lane.share).
                entry.in_lanes[port] = Lane(
                    entry.capacity, writers=writers, max_bytes=entry.max_bytes, shared=False
                )
        for entry in pending:
            for port in entry.module.outputs:
                entry.out_lanes[port] = [
                    self._modules[e.dst.module].in_lanes[e.dst.port]
                    for e in self._edges
                    if e.src == PortRef(entry.name, port)
                ]
        for entry in pending:
            entry.started = True
            self._running += 1
            self._idle = trio.Event()
            self._nursery.start_soon(self._supervise, entry, name=f"pipekit:{entry.name}")

    async def join(self) -> None:
        """Start what is pending and wait until every module has finished."""
        await self.start()
        await self._idle.wait()
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        """Cancel every module; the kernel scope then exits without error."""
        self._stopped = True
        self._nursery.cancel_scope.cancel()

    def _make_ports(self, entry: _Entry) -> dict[str, LocalPipe]:
        ports: dict[str, LocalPipe] = {}
        for port, lane in entry.in_lanes.items():
            ports[port] = LocalPipe(lane, (), name=f"{entry.name}.{port}")
        for port, lanes in entry.out_lanes.items():
            ports[port] = LocalPipe(
                None, lanes, name=f"{entry.name}.{port}", writer_key=(entry.name, port)
            )
        return ports

    def _inputs_ended(self, entry: _Entry) -> bool:
        return all(lane.ended and lane.depth == 0 for lane in entry.in_lanes.values())

    @staticmethod
    def _add_traffic(stats: ModuleStats, entry: _Entry, ports: Mapping[str, Pipe]) -> None:
        """Add the traffic of one incarnation's ``ports`` to ``stats``."""
        for port, pipe in ports.items():
            s = pipe.stats
            if port in entry.in_lanes:
                stats.messages_in += s.messages_received
            else:
                stats.messages_out += s.messages_sent
                stats.paused_seconds += s.paused_seconds

    async def _supervise(self, entry: _Entry) -> None:
        stats = entry.stats
        policy = entry.policy
        restart_times: list[float] = []
        attempt = 0
        stats.started_at = trio.current_time()
        try:
            while True:
                ports = entry.ports = self._make_ports(entry)
                stats.state = ModuleState.RUNNING
                error: BaseException | None = None
                try:
                    await entry.module.run(ports)
                except Exception as exc:
                    error = _unwrap(exc)
                finally:
                    self._add_traffic(entry.stats, entry, ports)
                    entry.ports = {}
                    for pipe in ports.values():
                        pipe.detach()
                if error is not None and self._downstream_gone(entry, error):
                    error = None  # like SIGPIPE: nobody reads our output any more
                if error is None:
                    wants_restart = policy.restart == "always" and (
                        not entry.in_lanes or not self._inputs_ended(entry)
                    )
                    if not wants_restart:
                        self._finish(entry)
                        return
                elif policy.restart == "never":
                    self._fail(entry, error)
                    return
                if error is not None:
                    stats.failures.append(repr(error))
                now = trio.current_time()
                restart_times.append(now)
                if policy.window is not None:
                    restart_times = [t for t in restart_times if now - t <= policy.window]
                if len(restart_times) > policy.max_restarts:
                    self._fail(
                        entry,
                        error,
                        f"module {entry.name!r} reached its restart limit "
                        f"({policy.max_restarts} restarts)"
                        + (f"; last error: {type(error).__name__}: {error}" if error else ""),
                    )
                    return
                attempt += 1
                stats.restarts += 1
                stats.state = ModuleState.RESTARTING
                log.warning(
                    "module %r %s; restart %d/%d",
                    entry.name,
                    f"failed with {error!r}" if error else "exited",
                    stats.restarts,
                    policy.max_restarts,
                )
                await trio.sleep(policy.delay(attempt))
        except BaseException:
            # Cancelled (the kernel is stopping or failing): release the lanes so that
            # blocked peers in other threads wake up, and let the cancellation through.
            if stats.state not in (ModuleState.FAILED, ModuleState.DONE):
                stats.state = ModuleState.CANCELLED
            for lane in entry.in_lanes.values():
                lane.close_reader()
            raise
        finally:
            stats.finished_at = trio.current_time()
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    def _downstream_gone(self, entry: _Entry, error: BaseException) -> bool:
        lanes = [lane for lanes in entry.out_lanes.values() for lane in lanes]
        return (
            isinstance(error, trio.BrokenResourceError)
            and not isinstance(error, RemoteError)
            and bool(lanes)
            and all(lane.reader_closed for lane in lanes)
        )

    def _finish(self, entry: _Entry) -> None:
        entry.stats.state = ModuleState.DONE
        for port, lanes in entry.out_lanes.items():
            for lane in lanes:
                lane.end_writer((entry.name, port))  # a no-op if the module ended it
        for lane in entry.in_lanes.values():
            lane.close_reader()

    def _fail(self, entry: _Entry, error: BaseException | None, message: str | None = None) -> None:
        stats = entry.stats
        stats.state = ModuleState.FAILED
        if message is None:
            assert error is not None
            message = f"module {entry.name!r} failed: {type(error).__name__}: {error}"
        if error is not None:
            stats.failures.append(repr(error))
        failure = ModuleError(entry.name, message)
        failure.__cause__ = error
        for lanes in entry.out_lanes.values():
            for lane in lanes:
                lane.fail(failure)
        for lane in entry.in_lanes.values():
            lane.close_reader()
        if self._failure is None:
            self._failure = failure
            self._nursery.cancel_scope.cancel()

    # -- introspection ----------------------------------------------------------------

    def stats(self) -> dict[str, ModuleStats]:
        """A live snapshot of the statistics of every module (see :class:`ModuleStats`)."""
        return {name: self._live_stats(entry) for name, entry in self._modules.items()}

    def module_stats(self, name: str) -> ModuleStats:
        """A live snapshot of the statistics of module ``name``."""
        return self._live_stats(self._entry(name))

    def _live_stats(self, entry: _Entry) -> ModuleStats:
        snap = dataclasses.replace(entry.stats, failures=list(entry.stats.failures))
        self._add_traffic(snap, entry, entry.ports)
        return snap

    def topology(self) -> Topology:
        """The current wiring (see :class:`Topology` for the export formats)."""
        modules = [
            {
                "name": e.name,
                "inputs": list(e.module.inputs),
                "outputs": list(e.module.outputs),
                "restart": e.policy.restart,
                "capacity": e.capacity,
                "state": e.stats.state,
            }
            for e in self._modules.values()
        ]
        edges = [
            {
                "from": e.src.module,
                "from_port": e.src.port,
                "to": e.dst.module,
                "to_port": e.dst.port,
                "kind": e.kind,
            }
            for e in self._edges
        ]
        return Topology(modules, edges)

    @property
    def failure(self) -> ModuleError | None:
        """The error of the module that failed for good, if one did (the kernel scope
        raises it)."""
        return self._failure

    def release(self) -> None:
        """Retire the kernel once its scope has exited: no module can be added any more,
        and every lane is closed so that no thread stays blocked on one."""
        self._exited = True
        for entry in self._modules.values():
            for lane in entry.in_lanes.values():
                lane.close_reader()


@asynccontextmanager
async def open_kernel(
    *, name: str = "kernel", capacity: int = DEFAULT_CAPACITY
) -> AsyncIterator[Kernel]:
    """Open a kernel scope. See the module docstring.

    ``capacity`` is the default bound of every module's input buffer, in messages.
    On exit the pending modules are started and awaited; if one failed for good, its
    :class:`ModuleError` is raised here; if the body raised, the modules are cancelled
    and that exception propagates.

    Example::

        async with open_kernel() as k:
            k.connect(k.add(produce), k.add(consume))   # async def produce(out), consume(inp)
        print(k.stats())
    """
    kernel: Kernel | None = None
    unwrapped: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            kernel = Kernel(nursery, name=name, capacity=capacity)
            try:
                yield kernel
                if not nursery.cancel_scope.cancel_called:
                    await kernel.start()
            except BaseException:
                nursery.cancel_scope.cancel()
                raise
    except BaseExceptionGroup as group:
        if kernel is not None and kernel.failure is not None:
            unwrapped = kernel.failure
        else:
            real = [e for e in _flatten(group) if not isinstance(e, trio.Cancelled)]
            if len(real) != 1:
                raise
            unwrapped = real[0]
    finally:
        if kernel is not None:
            kernel.release()
    if unwrapped is not None:
        # Raised outside the except block and without "from": the exception keeps its
        # own __cause__ (a ModuleError's is the module's exception) and __context__.
        raise unwrapped
    if kernel is not None and kernel.failure is not None:
        raise kernel.failure


def _flatten(group: BaseExceptionGroup[BaseException]) -> Sequence[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_flatten(exc))
        else:
            out.append(exc)
    return out
