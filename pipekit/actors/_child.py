"""The child node behind the ``"process"`` host: ``python -m pipekit.actors._child NAME``.

It runs a node named NAME whose one link is pipekit/1 on its stdin and stdout (the
parent starts it with the stdio adapter in ``frames`` mode; ``print()`` in its processes
goes to stderr). The parent speaks first (the pipekit/1 and the node HELLO); the child
exits when that link ends: when the parent node closes, or its process goes away.
"""

from __future__ import annotations

import contextlib
import os
import sys

import trio

from ..kernel import PipekitError
from ..kernel.framed import framed_pipe
from ._link import DEFAULT_LINK_QUEUE
from ._node import open_node


def _claim_stdio() -> trio.abc.HalfCloseableStream:
    """Our stdin and stdout as the link's byte stream; fd 1 (and ``sys.stdout``) then
    point at stderr and fd 0 at ``/dev/null``, so user code cannot corrupt the frames."""
    sys.stdout.flush()
    rfd, wfd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    return trio.StapledStream(trio.lowlevel.FdStream(wfd), trio.lowlevel.FdStream(rfd))


async def serve(name: str) -> None:
    """Run the child node ``name`` until its link to the parent ends."""
    stream = _claim_stdio()
    async with open_node(name) as node:
        with contextlib.suppress(PipekitError, trio.BrokenResourceError, trio.ClosedResourceError):
            async with framed_pipe(stream, initiator=False, name=name) as pipe:
                await node._the_cluster().join(pipe, initiator=False, limit=DEFAULT_LINK_QUEUE)


if __name__ == "__main__":
    trio.run(serve, sys.argv[1])
