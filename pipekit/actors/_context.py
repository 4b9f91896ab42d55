"""Which process is running: a context variable, set in each process's own task."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

from ._errors import NotInActor

if TYPE_CHECKING:
    from ._proc import Proc

__all__ = ["current", "current_or_none", "set_current"]

_current: ContextVar[Proc | None] = ContextVar("pipekit.actors.process", default=None)
set_current = _current.set
current_or_none = _current.get


def current() -> Proc:
    """The running process, or :class:`NotInActor`."""
    proc = _current.get()
    if proc is None:
        raise NotInActor(
            "not inside an actor: the process API works in the tasks of a process "
            "(outside one, use the node: node.spawn, node.send, node.registry)"
        )
    return proc
