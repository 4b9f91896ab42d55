"""Per-item errors: what a stage does with an item whose call failed (``on_error``,
``retry``), and the pipe wrappers that reshape what a module sends."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import trio

from ..kernel import Pipe, batch_failure
from ._settings import OnError, Retry

if TYPE_CHECKING:
    from ._stage import Stage

__all__ = ["DEAD_PORT", "ItemErrors", "OutputWrapper"]

DEAD_PORT = "dead"
"""The output port that feeds a dead-letter stage."""


class Failed:
    """The result of a call that failed for good, travelling from a worker thread to the
    stage's output, where :class:`Routed` takes it out of the stream."""

    __slots__ = ("exc", "item")

    def __init__(self, item: Any, exc: Exception) -> None:
        self.item = item
        self.exc = exc


class ItemErrors:
    """A stage's per-item error handling: its ``on_error`` and ``retry``.

    Modules that call a function per item collect the ``(item, exception)`` pairs of
    the calls that failed for good (after the retries), send the other results on, then
    hand the pairs to :meth:`deliver`, which raises (``"raise"``: the first exception,
    with a note counting the others), drops them (``"skip"``), calls the function
    ``on_error(item, exc)`` or sends ``(item, exc)`` tuples to the dead-letter branch
    (output port :data:`DEAD_PORT`). For authors of stages.

    Example (in a module's ``run``)::

        errors = ItemErrors("skip", Retry(2))
        await errors.deliver([("x", ValueError("not a number"))], ports)   # dropped
    """

    def __init__(self, on_error: OnError = "raise", retry: Retry | None = None) -> None:
        from ._pipeline import Pipeline  # defined in terms of each other
        from ._stage import Stage

        self.on_error = on_error
        self.retry = retry
        self.branch: list[Stage] | None = None
        if isinstance(on_error, Stage):
            self.branch = [on_error]
        elif isinstance(on_error, Pipeline):
            self.branch = list(on_error.stages)
        self._call: Callable[[Any, Exception], Any] | None = None
        self._awaits = False
        if self.branch is None and callable(on_error):
            self._call = on_error
            self._awaits = inspect.iscoroutinefunction(on_error)

    @property
    def raises(self) -> bool:
        """True when a failed item fails the stage (``on_error="raise"``)."""
        return isinstance(self.on_error, str) and self.on_error == "raise"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The output ports of a module with this handling."""
        return ("out", DEAD_PORT) if self.branch is not None else ("out",)

    def branches(self) -> list[tuple[str, list[Stage]]]:
        return [(DEAD_PORT, self.branch)] if self.branch is not None else []

    async def deliver(
        self, failed: Sequence[tuple[Any, Exception]], ports: Mapping[str, Pipe]
    ) -> None:
        """Handle the calls that failed for good (see the class docstring)."""
        if not failed:
            return
        if self.raises:
            raise batch_failure([exc for _, exc in failed])
        if self.branch is not None:
            await ports[DEAD_PORT].send_batch([(item, exc) for item, exc in failed])
        elif self._call is not None:
            for item, exc in failed:
                r = self._call(item, exc)
                if self._awaits:
                    await r
        else:
            await trio.lowlevel.checkpoint()

    def blocking(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``fn`` with this handling, for a worker thread: retries after a blocking
        sleep, and a call that failed for good returns a :class:`Failed` marker (or
        raises, with ``"raise"``)."""
        retry, raises = self.retry, self.raises

        def guarded(msg: Any) -> Any:
            attempt = 0
            while True:
                try:
                    return fn(msg)
                except Exception as exc:
                    if retry is not None and retry.wants(exc, attempt):
                        attempt += 1
                        time.sleep(retry.delay(attempt))
                        continue
                    if raises:
                        raise
                    return Failed(msg, exc)

        return guarded


class OutputWrapper(Pipe):
    """An output pipe seen through a transformation of what is sent (subclasses
    override :meth:`send_batch`); everything else goes to the wrapped pipe.

    Example::

        class Doubled(OutputWrapper):
            async def send_batch(self, values):
                await self.inner.send_batch([2 * v for v in values])
    """

    def __init__(self, inner: Pipe) -> None:
        self.inner = inner
        self.name = inner.name

    async def send(self, value: Any) -> None:
        await self.send_batch([value])

    async def send_batch(self, values: Sequence[Any]) -> None:
        await self.inner.send_batch(values)

    async def receive(self) -> Any:
        return await self.inner.receive()

    async def end(self) -> None:
        await self.inner.end()

    async def fail(self, exc: BaseException) -> None:
        await self.inner.fail(exc)

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def stats(self) -> Any:
        return self.inner.stats


async def send_some(out: Pipe, values: Sequence[Any]) -> None:
    """Send ``values`` if there are any (a checkpoint otherwise)."""
    if values:
        await out.send_batch(values)
    else:
        await trio.lowlevel.checkpoint()


class Routed(OutputWrapper):
    """Takes :class:`Failed` markers out of what is sent and hands them to the stage's
    :class:`ItemErrors`."""

    def __init__(self, inner: Pipe, errors: ItemErrors, ports: Mapping[str, Pipe]) -> None:
        super().__init__(inner)
        self.errors = errors
        self.ports = ports

    async def send_batch(self, values: Sequence[Any]) -> None:
        if not any(type(v) is Failed for v in values):
            await self.inner.send_batch(values)
            return
        good = [v for v in values if type(v) is not Failed]
        await send_some(self.inner, good)
        await self.errors.deliver(
            [(v.item, v.exc) for v in values if type(v) is Failed], self.ports
        )


class Flatten(OutputWrapper):
    """Sends the items of each iterable sent (``flat_map``)."""

    async def send_batch(self, values: Sequence[Any]) -> None:
        await send_some(self.inner, [y for r in values for y in r])


class DropMarked(OutputWrapper):
    """Drops the messages that are ``marker`` (what a ``filter`` did not keep)."""

    def __init__(self, inner: Pipe, marker: object) -> None:
        super().__init__(inner)
        self.marker = marker

    async def send_batch(self, values: Sequence[Any]) -> None:
        marker = self.marker
        await send_some(self.inner, [v for v in values if v is not marker])
