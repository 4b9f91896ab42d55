"""Remote stages: a peer (a pipe or a function opening one) as a pipeline stage."""

from __future__ import annotations

from typing import Unpack

from ..kernel import Module, Pipe, PipeOpener, RemoteModule
from ._settings import StageSettings, _RemoteOptions
from ._stage import Stage, _name

__all__ = ["remote"]


class _Remote(Stage):
    can_lead = True

    def __init__(self, peer: Pipe | PipeOpener, name: str | None, options: StageSettings) -> None:
        label = name or (peer.name if isinstance(peer, Pipe) else _name(peer))
        super().__init__(f"remote({label})", options)
        self.peer = peer

    def module(self, *, first: bool = False) -> Module:
        return RemoteModule(self.peer, name=self.label, source=first)


def remote(
    peer: Pipe | PipeOpener,
    *,
    name: str | None = None,
    **options: Unpack[_RemoteOptions],
) -> Stage:
    """A peer as a stage: messages go to it, its replies come out (see
    :class:`~pipekit.kernel.RemoteModule`). ``peer`` is an open pipe (an accepted
    connection, say) or a function opening one, such as
    ``lambda: tcp.connect(host, port)``, which a restart policy calls again to reconnect.
    Leading a pipeline, the peer is the source. ``name`` names the peer: the stage is
    labelled ``remote(name)``. Other keywords: ``buffer``, ``buffer_bytes`` and the
    restart options of :class:`~pipekit.pipeline.StageOptions`.

    Example::

        pk.source(range(3)) | pk.remote(lambda: tcp.connect(host, port), name="doubler")
    """
    return _Remote(peer, name, StageSettings.from_options("remote", options, _RemoteOptions))
