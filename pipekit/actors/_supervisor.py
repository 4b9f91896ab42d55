"""Supervisors: processes that start children and restart them when they end."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import trio

from ..channels import parse_duration
from . import process
from ._entries import Entry
from ._errors import LinkedFailure, NoSuchProcess, SupervisorGaveUp
from ._events import CancelEvent, Event, ExitEvent, LinkDownEvent
from ._pid import Pid

__all__ = ["ChildSpec", "Restart", "Strategy", "Supervisor"]

Restart = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
_RESTARTS = ("permanent", "transient", "temporary")
_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One child of a :class:`Supervisor`.

    - ``id``: its name among its siblings (unique in one supervisor);
    - ``entry``, ``args``, ``host``: what to spawn, as ``spawn(entry, host, *args)``;
    - ``restart``: ``"permanent"`` (restarted whenever it ends), ``"transient"``
      (restarted only if it fails) or ``"temporary"`` (never restarted);
    - ``shutdown``: how the supervisor stops it: None terminates it at once; a duration
      (``5``, ``"500ms"``) cancels it with that deadline (it sees CANCEL and may finish).

    Example::

        ChildSpec("db", "app.db:main", args=("postgres://...",), shutdown="2s")
    """

    id: str
    entry: Entry
    args: tuple[Any, ...] = ()
    restart: Restart = "permanent"
    shutdown: float | str | None = None
    host: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"a child's id is a non-empty str, got {self.id!r}")
        if self.restart not in _RESTARTS:
            raise ValueError(f"restart must be one of {_RESTARTS}, got {self.restart!r}")
        if not isinstance(self.args, tuple):
            raise TypeError(f"args is a tuple, got {type(self.args).__name__}")
        if self.shutdown is not None:
            parse_duration(self.shutdown)


class Supervisor:
    """An actor entry that supervises ``children`` (started in order, each linked to
    and monitored by the supervisor) and restarts them as ``strategy`` says:

    - ``"one_for_one"``: only the child that ended;
    - ``"one_for_all"``: every child (the others are stopped first, in reverse order);
    - ``"rest_for_one"``: the child that ended and those started after it.

    More than ``intensity`` restarts within ``period`` seconds and it gives up: it stops
    every child (in reverse order) and fails with :class:`SupervisorGaveUp`, which its
    parent sees (an EXIT event, or the link). A supervisor is a child like any other,
    so trees nest. It returns (result None) when no child is left to supervise, stops
    its children and returns on a CANCEL, and fails if a process linked to it that is
    not its child fails. Children a restart stops are restarted unless temporary.
    Children are spawned in order, each right after the one before (not once it has
    initialised, as Erlang's ``start_link`` waits): a child that needs a sibling looks
    it up when it uses it.

    Example::

        tree = Supervisor(
            [ChildSpec("cache", cache_main), ChildSpec("api", api_main, args=(8080,))],
            strategy="rest_for_one", intensity=3, period=5,
        )
        pid = process.spawn_monitored(tree)        # or: await node.run(tree)
    """

    actor_name = "pipekit.actors:Supervisor"
    """The middle part of a supervisor process's Pid."""

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = "one_for_one",
        intensity: int = 3,
        period: float | str = 5.0,
    ) -> None:
        specs = list(children)
        for spec in specs:
            if not isinstance(spec, ChildSpec):
                raise TypeError(f"a supervisor's children are ChildSpecs, got {spec!r}")
        ids = [spec.id for spec in specs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"child ids must be unique in one supervisor: {ids}")
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
        if isinstance(intensity, bool) or not isinstance(intensity, int) or intensity < 0:
            raise ValueError(f"intensity is an int >= 0, got {intensity!r}")
        self.children = tuple(specs)
        self.strategy = strategy
        self.intensity = intensity
        self.period = parse_duration(period)

    def __repr__(self) -> str:
        ids = ", ".join(spec.id for spec in self.children)
        return f"Supervisor([{ids}], strategy={self.strategy!r})"

    async def __call__(self) -> None:
        await _Run(self).run()


class _Run:
    """One running supervisor process's state."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.order = {spec.id: i for i, spec in enumerate(sup.children)}
        self.running: dict[str, Pid] = {}
        self.by_pid: dict[Pid, ChildSpec] = {}
        self.restarts: deque[float] = deque()
        self.deferred: deque[Event] = deque()
        self.ended: set[Pid] = set()
        """Children whose EXIT came with an error: their LINK_DOWN follows, to ignore."""
        self.events = process.events()

    async def run(self) -> None:
        process.set_options(trap_links=True)
        for spec in self.sup.children:
            self.start(spec)
        while self.running:
            event = self.deferred.popleft() if self.deferred else await self.events.receive()
            if isinstance(event, ExitEvent):
                found = self.by_pid.pop(event.sender, None)
                if found is not None:
                    spec = found
                    del self.running[spec.id]
                    if event.error is not None:
                        self.ended.add(event.sender)
                    await self.child_ended(spec, event.error)
            elif isinstance(event, LinkDownEvent):
                if event.sender in self.ended:
                    self.ended.discard(event.sender)
                elif event.sender not in self.by_pid:
                    await self.stop(list(self.running))
                    raise LinkedFailure(event.sender, event.error)
            elif isinstance(event, CancelEvent):
                await self.stop(list(self.running))
                return

    def start(self, spec: ChildSpec) -> None:
        pid = process.spawn_monitored(spec.entry, spec.host, *spec.args)
        process.link(pid)
        self.running[spec.id] = pid
        self.by_pid[pid] = spec

    async def child_ended(self, spec: ChildSpec, error: BaseException | None) -> None:
        if spec.restart == "temporary" or (spec.restart == "transient" and error is None):
            return
        now = trio.current_time()
        restarts = self.restarts
        restarts.append(now)
        while restarts and restarts[0] <= now - self.sup.period:
            restarts.popleft()
        if len(restarts) > self.sup.intensity:
            await self.stop(list(self.running))
            raise SupervisorGaveUp(spec.id, error)
        strategy = self.sup.strategy
        if strategy == "one_for_one":
            again = [spec]
        else:
            mine = self.order[spec.id]
            stopping = [
                cid for cid in self.running if strategy == "one_for_all" or self.order[cid] > mine
            ]
            stopped = await self.stop(stopping)
            again = [spec, *(s for s in stopped if s.restart != "temporary")]
        for child in sorted(again, key=lambda s: self.order[s.id]):
            self.start(child)

    async def stop(self, ids: list[str]) -> list[ChildSpec]:
        """Stop the children ``ids`` in reverse start order and wait for their EXITs
        (other events meanwhile are kept for later); their specs."""
        ids = sorted(ids, key=lambda cid: self.order[cid], reverse=True)
        waiting: dict[Pid, ChildSpec] = {}
        for cid in ids:
            pid = self.running.pop(cid)
            spec = self.by_pid[pid]
            waiting[pid] = spec
            try:
                if spec.shutdown is None:
                    process.terminate(pid)
                else:
                    process.cancel(pid, spec.shutdown)
            except NoSuchProcess:  # pragma: no cover - it exited; its EXIT is on its way
                pass
        while waiting:
            event = await self.events.receive()
            if isinstance(event, ExitEvent) and event.sender in waiting:
                del waiting[event.sender]
                del self.by_pid[event.sender]
                if event.error is not None:
                    self.ended.add(event.sender)
            elif isinstance(event, LinkDownEvent) and event.sender in self.ended:
                self.ended.discard(event.sender)  # a child we stopped: its EXIT said it
            else:
                self.deferred.append(event)
        return [self.sup.children[self.order[cid]] for cid in ids]
