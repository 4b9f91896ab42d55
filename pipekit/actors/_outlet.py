"""Where a pipeline stage's process emits: the stage's output, for its process only.

A process run as a stage (``pk.actor``) has an *outlet*: the stage's output pipe. It is
held in a context variable set in the process's task, with the process it belongs to, so
that tasks the process starts in its own nurseries may emit, and processes it spawns
(whose tasks inherit the variable too) may not.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ._context import current_or_none
from ._errors import ActorError

if TYPE_CHECKING:
    from ..kernel import Pipe
    from ._proc import Proc

__all__ = ["NotInStage", "Outlet", "emit"]


class NotInStage(ActorError):
    """``process.emit`` was called by a process that is not a pipeline stage (or
    outside any process): only the process ``pk.actor`` runs has an output.

    Example::

        async def helper():
            await process.emit(1)                  # spawned, not a stage: NotInStage
    """


class Outlet:
    """The output of the stage that ``proc`` runs as."""

    __slots__ = ("out", "proc")

    def __init__(self, proc: Proc, out: Pipe) -> None:
        self.proc = proc
        self.out = out


_outlet: ContextVar[Outlet | None] = ContextVar("pipekit.actors.outlet", default=None)
set_outlet = _outlet.set


async def emit(value: Any) -> None:
    """Send ``value`` downstream from the process a pipeline stage runs
    (``pk.actor``): it goes on to the next stage, in order, waiting while that stage's
    buffer is full (backpressure). :class:`NotInStage` in any other process (one the
    stage spawned included) or outside a process.

    Example::

        async def upper():                         # pk.source(words) | pk.actor(upper)
            async for word in process.listen("in"):
                await process.emit(word.upper())
    """
    outlet = _outlet.get()
    if outlet is None or outlet.proc is not current_or_none():
        proc = current_or_none()
        who = "outside any process" if proc is None else f"in {proc.pid}"
        raise NotInStage(
            f"process.emit() called {who}, which is not a pipeline stage: only the "
            f"process that pk.actor(...) runs emits downstream (send to it instead)"
        )
    await outlet.out.send(value)
