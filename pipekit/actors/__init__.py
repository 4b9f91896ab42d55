"""Actors: Erlang-style processes on trio.

A *node* is the actor runtime of one OS process; its *processes* are functions
(``async def main(*args)``, whose return value is their result) run as trio tasks,
each with a :class:`Pid`, a bounded mailbox of topics, system events, links, monitors
and names. Inside a process, :mod:`pipekit.actors.process` is its API and
:mod:`pipekit.actors.registry` its names; :class:`Supervisor` restarts what fails.

Example::

    from pipekit import actors
    from pipekit.actors import process

    async def echo():
        msg = await process.listen("echo", message=True).receive()
        process.send(msg.sender, "reply", msg.payload)

    async def main():
        pid = process.spawn(echo)
        process.send(pid, "echo", "hello")
        return await process.listen("reply").receive()

    print(actors.run(main))                       # hello
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..channels import after, channel, select
    from . import process, registry
    from ._errors import (
        ActorError,
        LinkedFailure,
        LinkFull,
        MailboxFull,
        NameTaken,
        NoConnection,
        NodeError,
        NoSuchProcess,
        NotInActor,
        RemoteFailure,
        SpawnError,
        SupervisorGaveUp,
        Terminated,
    )
    from ._events import (
        CANCEL,
        EXIT,
        LINK_DOWN,
        UNDELIVERED,
        CancelEvent,
        Event,
        EventKind,
        ExitEvent,
        LinkDownEvent,
        Message,
        UndeliveredEvent,
    )
    from ._mailbox import Receiver
    from ._node import DEFAULT_MAILBOX, Node, NodeStats, open_node, run
    from ._outlet import NotInStage
    from ._pid import Pid
    from ._registry import Registry
    from ._stage import STAGE_NODE, ActorModule, actor, to_actor
    from ._supervisor import ChildSpec, Restart, Strategy, Supervisor
else:
    from .._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "..channels": ["after", "channel", "select"],
            ".": ["process", "registry"],
            "._errors": [
                "ActorError",
                "LinkedFailure",
                "LinkFull",
                "MailboxFull",
                "NameTaken",
                "NoConnection",
                "NodeError",
                "NoSuchProcess",
                "NotInActor",
                "RemoteFailure",
                "SpawnError",
                "SupervisorGaveUp",
                "Terminated",
            ],
            "._events": [
                "CANCEL",
                "EXIT",
                "LINK_DOWN",
                "UNDELIVERED",
                "CancelEvent",
                "Event",
                "EventKind",
                "ExitEvent",
                "LinkDownEvent",
                "Message",
                "UndeliveredEvent",
            ],
            "._mailbox": ["Receiver"],
            "._node": ["DEFAULT_MAILBOX", "Node", "NodeStats", "open_node", "run"],
            "._outlet": ["NotInStage"],
            "._pid": ["Pid"],
            "._registry": ["Registry"],
            "._stage": ["STAGE_NODE", "ActorModule", "actor", "to_actor"],
            "._supervisor": ["ChildSpec", "Restart", "Strategy", "Supervisor"],
        },
    )

__all__ = [
    "CANCEL",
    "DEFAULT_MAILBOX",
    "EXIT",
    "LINK_DOWN",
    "STAGE_NODE",
    "UNDELIVERED",
    "ActorError",
    "ActorModule",
    "CancelEvent",
    "ChildSpec",
    "Event",
    "EventKind",
    "ExitEvent",
    "LinkDownEvent",
    "LinkFull",
    "LinkedFailure",
    "MailboxFull",
    "Message",
    "NameTaken",
    "NoConnection",
    "NoSuchProcess",
    "Node",
    "NodeError",
    "NodeStats",
    "NotInActor",
    "NotInStage",
    "Pid",
    "Receiver",
    "Registry",
    "RemoteFailure",
    "Restart",
    "SpawnError",
    "Strategy",
    "Supervisor",
    "SupervisorGaveUp",
    "Terminated",
    "UndeliveredEvent",
    "actor",
    "after",
    "channel",
    "open_node",
    "process",
    "registry",
    "run",
    "select",
    "to_actor",
]
