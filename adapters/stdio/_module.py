"""A process, or a chain of raw-mode processes, as a kernel module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import trio

from ...kernel.pipe import Pipe
from ...kernel.scopes import open_plain_nursery
from ._chain import open_chain
from ._errors import ProcessError
from ._pipe import ProcessPipe
from ._spec import ProcessSpec, Redirect


class ProcessModule:
    """One process (or a chain of raw-mode processes) as a kernel module.

    Messages from input ``inp`` are written to the process, what it outputs goes to
    ``out``. With ``source=True`` the module has no input (the process's stdin is not
    connected); with ``sink=True`` no output. A process that stops reading its stdin
    and exits with 0 (like ``head``) ends the module normally; a failing process fails
    it with :class:`ProcessError`.
    """

    def __init__(
        self,
        specs: ProcessSpec | Sequence[ProcessSpec],
        *,
        source: bool = False,
        sink: bool = False,
        name: str | None = None,
        batch: int = 1024,
    ) -> None:
        self.specs = [specs] if isinstance(specs, ProcessSpec) else list(specs)
        if source:
            self.specs[0] = replace(self.specs[0], stdin=Redirect.NULL)
        self.inputs: tuple[str, ...] = () if source else ("inp",)
        self.outputs: tuple[str, ...] = () if sink else ("out",)
        self.name = name or " | ".join(s.label for s in self.specs)
        self.batch = batch

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp = ports.get("inp")
        out = ports.get("out")
        async with open_chain(self.specs) as proc, open_plain_nursery() as nursery:
            if inp is not None:
                nursery.start_soon(self._feed, inp, proc)
            else:
                await proc.end()
            if out is not None:
                async for batch in proc.batches(self.batch):
                    await out.send_batch(batch)
            else:
                await proc.wait()

    async def _feed(self, inp: Pipe, proc: ProcessPipe) -> None:
        try:
            async for batch in inp.batches(self.batch):
                await proc.send_batch(batch)
        except trio.BrokenResourceError:
            # The process stopped reading. Whether that is a failure is for the output
            # side to tell (a dead process raises there, and the input stays open for a
            # restarted process to go on with); if it exits cleanly (like head),
            # upstream learns, as with SIGPIPE, that nobody reads any more.
            try:
                await proc.wait()
            except ProcessError:
                return
            await inp.aclose()
            return
        except ProcessError:
            return  # the process failed (a framed send says so): the output side raises it
        await proc.end()
