"""The iterator of :meth:`WorkerPool.imap_unordered`: results in completion order, the
input pulled as they are consumed."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

import trio

from .dispatch import Dispatcher
from .queue import Segment
from .runs import StreamRun

_FAIRNESS_EVERY = 64


class UnorderedResults:
    """The iterator :meth:`WorkerPool.imap_unordered` returns: ``(index, result)`` pairs
    in completion order."""

    def __init__(self, dispatcher: Dispatcher, items: Iterable[Any]) -> None:
        self._dispatcher = dispatcher
        self._iterator: Iterator[Any] | None = iter(items)
        self._run = StreamRun()
        self._index = 0
        self._yields = 0
        dispatcher.runs.add(self._run)

    def __aiter__(self) -> UnorderedResults:
        return self

    async def __anext__(self) -> tuple[int, Any]:
        run = self._run
        window = self._dispatcher.window
        while True:
            if run.closed_error is not None:
                raise run.closed_error
            if run.cancelled:  # closed (or interrupted) earlier
                raise StopAsyncIteration
            if self._iterator is not None and run.outstanding <= window // 2:
                self._feed(window - run.outstanding)
            if run.ready:
                self._yields += 1
                if self._yields % _FAIRNESS_EVERY == 0:
                    await trio.lowlevel.checkpoint()
                else:
                    await trio.lowlevel.checkpoint_if_cancelled()
                run.outstanding -= 1
                return run.ready.popleft()
            if self._iterator is None and run.outstanding == 0:
                self._finish()
                raise StopAsyncIteration
            try:
                await run.wait()
            except BaseException:
                self._finish()
                raise

    def _feed(self, want: int) -> None:
        assert self._iterator is not None
        chunk = list(itertools.islice(self._iterator, want))
        if len(chunk) < want:
            self._iterator = None
            self._run.draining = True
        if chunk:
            start = self._index
            self._index += len(chunk)
            self._dispatcher.enqueue(Segment(self._run, start, chunk))

    def _finish(self) -> None:
        self._iterator = None
        self._dispatcher.drop(self._run)

    async def aclose(self) -> None:
        """Stop: items not yet sent are dropped, answers still coming are ignored."""
        self._finish()
        self._run.ready.clear()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> UnorderedResults:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
