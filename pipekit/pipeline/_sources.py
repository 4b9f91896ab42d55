"""Sources: the stage that starts a pipeline by emitting items."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from typing import Any, Unpack

from ..kernel import Module, Pipe
from ._meter import Meter, perf_counter
from ._settings import StageSettings, _SourceOptions
from ._stage import Stage, _name

__all__ = ["SOURCE_BATCH", "source"]

SOURCE_BATCH = 256


class _SourceModule:
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, items: Any, batch: int) -> None:
        self.items = items
        self.batch = batch
        # An async iterable is not timed item by item (that would cost a clock read
        # per item): the pipeline counts what is not blocked time as busy.
        self.meter = Meter(timed=False)

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        out = ports["out"]
        meter = self.meter
        chunk: list[Any] = []
        try:
            start = perf_counter()
            items = self.items() if callable(self.items) else self.items
            if isinstance(items, AsyncIterable):
                sent = out.stats.messages_sent  # counted by the pipe, not item by item
                try:
                    async for item in items:
                        await out.send(item)
                finally:
                    meter.taken += out.stats.messages_sent - sent
                return
            meter.timed = True
            size = self.batch
            for item in items:
                chunk.append(item)
                if len(chunk) >= size:
                    meter.busy += perf_counter() - start
                    await out.send_batch(chunk)
                    meter.taken += len(chunk)
                    chunk = []
                    start = perf_counter()
            meter.busy += perf_counter() - start
            if chunk:
                await out.send_batch(chunk)
                meter.taken += len(chunk)
        except Exception:
            meter.fail(meter.taken + len(chunk), None)  # the item it could not produce
            raise


class _Source(Stage):
    role = "source"

    def __init__(self, items: Any, batch: int, options: StageSettings) -> None:
        super().__init__(f"source({_name(items)})", options)
        self.items = items
        self.batch = batch

    def module(self, *, first: bool = False) -> Module:
        return _SourceModule(self.items, self.batch)


def source(
    items: Iterable[Any] | AsyncIterable[Any] | Callable[[], Iterable[Any] | AsyncIterable[Any]],
    *,
    batch: int = SOURCE_BATCH,
    **options: Unpack[_SourceOptions],
) -> Stage:
    """A stage that emits ``items``: an iterable, an async iterable, or a callable
    returning one (called afresh on each run, e.g. a generator function). Items of a
    plain iterable are sent in batches of up to ``batch``. Of the :class:`StageOptions`
    it takes ``name`` and the restart keywords (a source has no input buffer).

    Example::

        pk.source(range(3)) | pk.map(str)                         # -> ['0', '1', '2']
    """
    if not (isinstance(items, Iterable | AsyncIterable) or callable(items)):
        raise TypeError(
            f"source() needs an iterable, an async iterable or a callable, not {items!r}"
        )
    settings = StageSettings.from_options("source", options, _SourceOptions)
    return _Source(items, batch, settings)
