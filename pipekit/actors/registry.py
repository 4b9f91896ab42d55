"""Process names, inside an actor: the node's :class:`~pipekit.actors.Registry`.

Example::

    from pipekit.actors import registry

    registry.register("db")                       # this process is "db"
    process.send("db", "query", q)                # anyone can reach it by name
"""

from __future__ import annotations

from ._context import current
from ._pid import Pid
from .process import _call

__all__ = ["lookup", "register", "unregister"]


def register(name: str, pid: Pid | str | None = None) -> None:
    """Name this process (or ``pid``) ``name`` until it exits or the name is
    unregistered. :class:`~pipekit.actors.NameTaken` if another live process holds it.

    Example::

        registry.register("backup_worker", some_pid)
    """
    me = current()
    _call(me, me.node.registry.register, name, me.pid if pid is None else pid)


def lookup(name: str) -> Pid:
    """The Pid registered as ``name``, or :class:`~pipekit.actors.NoSuchProcess`.

    Example::

        db = registry.lookup("db")
    """
    me = current()
    found: Pid = _call(me, me.node.registry.lookup, name)
    return found


def unregister(name: str) -> bool:
    """Release ``name``: True if it was registered, False if not.

    Example::

        registry.unregister("worker1")
    """
    me = current()
    done: bool = _call(me, me.node.registry.unregister, name)
    return done
