"""Names for processes, per node; released when their process exits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import NameTaken, NoSuchProcess
from ._pid import Pid

if TYPE_CHECKING:
    from ._node import Node
    from ._proc import Proc

__all__ = ["Registry"]


def check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a registered name is a str, got {type(name).__name__}")
    if not name or name.startswith("{"):
        raise ValueError(f"a registered name is a non-empty str not starting with '{{': {name!r}")
    return name


class Registry:
    """The names of one node's processes (``node.registry``; inside an actor the
    module :mod:`pipekit.actors.registry` acts on its node's). A name names one live
    process; a process may have several names; a process's names are released when it
    exits.

    Example::

        async with open_node("app") as node:
            pid = node.spawn(server)
            node.registry.register("server", pid)
            assert node.registry.lookup("server") == pid
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self._names: dict[str, Proc] = {}

    def __len__(self) -> int:
        return len(self._names)

    def register(self, name: str, pid: Pid | str) -> None:
        """Give the live process ``pid`` the name ``name``. :class:`NameTaken` if
        another live process holds it (registering a process under a name it already
        holds is a no-op), :class:`NoSuchProcess` if ``pid`` is not alive."""
        check_name(name)
        proc = self._node.find(pid)
        holder = self._names.get(name)
        if holder is proc:
            return
        if holder is not None:
            raise NameTaken(f"the name {name!r} is taken by {holder.pid}")
        cluster = self._node._cluster
        if cluster is not None:
            cluster.check_free(name)
        self._names[name] = proc
        if proc.names is None:
            proc.names = []
        proc.names.append(name)
        if cluster is not None:
            cluster.registered(name, proc.pid)

    def lookup(self, name: str) -> Pid:
        """The Pid registered as ``name`` on this node or a connected one, or
        :class:`NoSuchProcess`. (A name held on several nodes names the holder on the
        node whose name sorts first.)"""
        proc = self._names.get(check_name(name))
        cluster = self._node._cluster
        if cluster is not None and (proc is None or name in cluster.names):
            pid = cluster.lookup(name)
            if pid is not None:
                return pid
        if proc is None:
            raise NoSuchProcess(f"no process is registered as {name!r}")
        return proc.pid

    def unregister(self, name: str) -> bool:
        """Release ``name``: True if it was registered, False if not."""
        proc = self._names.pop(check_name(name), None)
        if proc is None:
            return False
        if proc.names:
            proc.names.remove(name)
        if self._node._cluster is not None:
            self._node._cluster.unregistered(name)
        return True

    def names(self) -> dict[str, Pid]:
        """A snapshot: every name registered on this node and its Pid."""
        return {name: proc.pid for name, proc in self._names.items()}

    def find(self, name: str) -> Proc | None:
        return self._names.get(name)

    def release(self, proc: Proc) -> None:
        """Drop every name of ``proc`` (it exited)."""
        cluster = self._node._cluster
        for name in proc.names or ():
            if self._names.get(name) is proc:
                del self._names[name]
                if cluster is not None:
                    cluster.unregistered(name)
        proc.names = None
        if not self._names:
            self._names = {}  # a dict keeps its peak size: let it go once empty
