"""The processes behind one pipe, in chain order: their state, waiting for them, ending
them together, and the error that best explains a failure."""

from __future__ import annotations

import signal
from collections.abc import Callable

import trio

from ...kernel.errors import ProtocolError, RemoteError
from ._errors import ProcessErrorKind
from ._spawn import Child


class Processes:
    """The children of one chain (a lone process is a chain of one), first to last."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.input_ended = trio.Event()
        """Set once the first process's input has ended: we closed its stdin (raw), sent
        END (frames), or it has no input from us."""
        self.close_input: Callable[[], None] | None = None
        """Closes our end of a framed process's input (its stdin, or the channel's
        sending half) at once."""

    def add(self, child: Child) -> None:
        self.children.append(child)

    @property
    def first(self) -> Child:
        return self.children[0]

    @property
    def last(self) -> Child:
        return self.children[-1]

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.children]

    @property
    def stderr(self) -> str:
        """The captured stderr tails, one process after the other."""
        return "".join(c.stderr for c in self.children)

    def is_alive(self) -> bool:
        return any(c.process.returncode is None for c in self.children)

    def kill(self) -> None:
        """SIGKILL every process now (they are reaped when the scope exits)."""
        for c in self.children:
            c.stop(signal.SIGKILL)

    async def wait(self) -> int:
        """Wait for every process to exit; return the last one's return code. Raises
        the :class:`ProcessError` of the first one that failed."""
        await self.wait_all()
        await self.raise_if_failed()
        code = self.last.process.returncode
        assert code is not None
        return code

    async def wait_all(self) -> None:
        """Wait for every process to exit and for its stderr tail to be complete."""
        for c in self.children:
            await c.process.wait()
        for c in self.children:
            await c.settle()

    async def raise_if_failed(self) -> None:
        for c in self.children:
            if c.failed:
                await c.settle()
                raise c.error()

    async def end_stragglers(self) -> None:
        """Once the input has ended, each process that exits (in chain order, each one's
        input having ended with the one before it) has its group's leftovers ended
        (:meth:`Child.end_stragglers`), so that a background job holding a stdout open
        cannot keep the stream from ending. Runs for the life of the pipe."""
        await self.input_ended.wait()
        for c in self.children:
            await c.process.wait()
            if not c.failed:  # a failed one's group is killed already (Child.watch)
                await c.end_stragglers()

    async def settle_ended(self) -> None:
        """A framed process has ENDed its output and we ENDed its input: close its input
        (a peer may wait for that before it exits), give it ``kill_grace`` seconds to
        exit, then SIGTERM it, and SIGKILL it after ``kill_grace`` more (an exit we
        caused is no failure: its stream ended cleanly)."""
        if self.close_input is not None:
            self.close_input()
        child = self.last
        if child.process.returncode is None:
            with trio.move_on_after(child.spec.kill_grace):
                await child.process.wait()
        if child.process.returncode is None:
            await child.terminate()

    async def terminate(self) -> None:
        """:meth:`Child.terminate` for every process at once: SIGTERM to every group,
        one grace period, SIGKILL to what is left, reap. Shielded."""
        with trio.CancelScope(shield=True):
            alive = [c for c in self.children if c.process.returncode is None]
            for c in alive:
                c.stop(signal.SIGTERM)
            if alive:
                with trio.move_on_after(max(c.spec.kill_grace for c in alive)):
                    for c in alive:
                        await c.process.wait()
            for c in self.children:
                if c.process.returncode is None:
                    c.signal_group(signal.SIGKILL)
                await c.process.wait()
                c.signal_group(signal.SIGKILL)  # whatever the leader left in its group

    async def describe(self, exc: BaseException) -> BaseException:
        """Turn a transport error into one that names the process (and its stderr)."""
        child = self.last
        if isinstance(exc, RemoteError):
            return exc
        await child.settle()
        if isinstance(exc, ProtocolError):
            err = ProtocolError(
                f"{child.spec.label} (pid {child.pid}): {exc.message}"
                + (
                    f"\n--- stderr (tail) ---\n{child.stderr.rstrip()}"
                    if child.stderr.strip()
                    else ""
                ),
                kind=exc.kind,
            )
            err.pid = child.pid  # type: ignore[attr-defined]
            err.stderr = child.stderr  # type: ignore[attr-defined]
            err.__cause__ = exc
            return err
        return exc

    async def outcome(self, exc: BaseException) -> BaseException:
        """After the channel broke: wait (bounded) for the process to exit and return
        the error that explains the break best."""
        child = self.last
        if child.process.returncode is None:
            with trio.move_on_after(min(1.0, child.spec.kill_grace)):
                await child.process.wait()
        for c in self.children:
            if c.failed:
                await c.settle()
                err = c.error()
                err.__cause__ = exc
                return err
        if isinstance(exc, ProtocolError | RemoteError):
            return await self.describe(exc)
        await child.settle()
        err = child.error(
            f"{child.spec.label} (pid {child.pid}): connection broken: {exc}",
            kind=ProcessErrorKind.IO_ERROR,
        )
        err.__cause__ = exc
        return err
