"""What a :class:`Worker` runs as in a pipeline: an item-mode worker on a pool, N copies
of a process, or adjacent raw-mode commands joined by OS pipes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import trio

from ..adapters.stdio import ProcessModule, ProcessPipe, ProcessSpec, open_process
from ..kernel import Module, Pipe, batch_failure
from ..kernel.scopes import open_plain_nursery
from ..pipeline import Stage
from ._pool import WorkerError, WorkerPool

if TYPE_CHECKING:
    from ._handle import Worker


class ItemModule:
    """An item-mode worker as a stage: ``size`` processes of a :class:`WorkerPool`
    call the function once per message. Each input batch is mapped in order; a message
    whose call failed fails the module (with the :class:`WorkerError`) after the other
    results of its batch are delivered, as with :func:`pipekit.map`."""

    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, pool_args: Mapping[str, Any], size: int, *, name: str) -> None:
        self.pool_args = dict(pool_args)
        self.size = size
        self.name = name

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        position = 0  # of the batch's first message in this stage's input
        async with WorkerPool(size=self.size, **self.pool_args) as pool:
            async for batch in inp.batches():
                results = await pool.map(batch)
                good = [r for r in results if not isinstance(r, WorkerError)]
                if good:
                    await out.send_batch(good)
                errors = [r for r in results if isinstance(r, WorkerError)]
                for err in errors:
                    if err.index is not None:
                        err.index += position  # the message's place in the stream
                if errors:
                    raise batch_failure(errors)
                position += len(batch)


class FanOutModule:
    """``workers`` copies of one process; each input batch goes to the copy with the
    fewest messages in flight (sent minus received), outputs are merged as they come.
    Any copy failing fails the module with its :class:`ProcessError`; a copy that stops
    reading and exits cleanly ends the module's input (like ``head`` in a shell)."""

    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, spec: ProcessSpec, workers: int, *, name: str, batch: int = 256) -> None:
        self.spec = spec
        self.workers = workers
        self.name = name
        self.batch = batch

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        async with AsyncExitStack() as stack:
            pipes = [
                await stack.enter_async_context(open_process(self.spec))
                for _ in range(self.workers)
            ]
            async with open_plain_nursery() as nursery:
                for pipe in pipes:
                    nursery.start_soon(self._drain, pipe, out)

                def in_flight(p: ProcessPipe) -> int:
                    s = p.stats
                    return s.messages_sent - s.messages_received

                async for batch in inp.batches(self.batch):
                    target = min(pipes, key=in_flight)
                    try:
                        await target.send_batch(batch)
                    except trio.BrokenResourceError:
                        # That copy stopped reading: a failure surfaces as its
                        # ProcessError; a clean exit ends our input, as SIGPIPE would.
                        await target.wait()
                        await inp.aclose()
                        break
                for pipe in pipes:
                    await pipe.end()

    @staticmethod
    async def _drain(pipe: ProcessPipe, out: Pipe) -> None:
        async for batch in pipe.batches():
            await out.send_batch(batch)


class ChainStage(Stage):
    """Adjacent raw-mode commands as one stage: their processes are joined by OS pipes,
    so the bytes between them never pass through Python."""

    can_lead = True
    joinable = True
    bulk_output = True

    def __init__(self, workers: list[Worker]) -> None:
        super().__init__(" | ".join(w.label for w in workers), workers[0].options)
        self.workers = workers

    def joined(self, following: Sequence[Stage]) -> Stage:
        # Worker.joined keeps the workers among the stages that follow.
        return self.workers[0].joined([*self.workers[1:], *following])

    def module(self, *, first: bool = False) -> Module:
        return ProcessModule([w.spec for w in self.workers], name=self.label, source=first)
