"""The pipeline: stages in order, validated, wired on a kernel and run."""

from __future__ import annotations

import itertools
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import trio

from ..kernel import Kernel, ModuleStats, Topology, open_kernel
from ..kernel.scopes import open_plain_nursery
from ._sinks import collect
from ._stage import Stage

__all__ = ["BULK_BUFFER_BYTES", "Pipeline"]

BULK_BUFFER_BYTES = 4 * 1024 * 1024
"""Byte budget of the buffer after a stage that emits bulk data (a process): its
messages can be megabyte chunks, so a message count alone would not bound memory."""

EXIT_SIGTERM = 128 + signal.SIGTERM
"""The exit status ``run()`` leaves with (``SystemExit``) after a SIGTERM: 143, as a
shell reports a process that SIGTERM ended."""


class Pipeline:
    """Stages in order. ``run()`` blocks; ``await arun()`` runs inside trio. Both return
    what the final sink gathered (:func:`collect` gives a list; a pipeline without a
    sink collects its output)."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)
        self._stats: dict[str, ModuleStats] = {}
        self._kernel: Kernel | None = None
        self._running = False

    @property
    def stats(self) -> dict[str, ModuleStats]:
        """Per-stage statistics by stage name: live during a run, final after it."""
        if self._running and self._kernel is not None:
            return self._kernel.stats()
        return self._stats

    def __or__(self, other: Stage | Pipeline) -> Pipeline:
        if isinstance(other, Pipeline):
            return Pipeline(self.stages + other.stages)
        if isinstance(other, Stage):
            return Pipeline([*self.stages, other])
        return NotImplemented

    def __repr__(self) -> str:
        return "Pipeline(" + " | ".join(s.label for s in self.stages) + ")"

    def _validated(self) -> list[Stage]:
        stages: list[Stage] = []
        for stage in self.stages:  # join runs of adjacent raw-mode commands
            if stage.joinable and stages and stages[-1].joinable:
                stages.append(stages.pop().joined([stage]))
            else:
                stages.append(stage)
        if not stages or not (stages[0].role == "source" or stages[0].can_lead):
            raise ValueError("a pipeline must start with a source: pk.source(items) | ...")
        for s in stages[1:]:
            if s.role == "source":
                raise ValueError(f"{s.label} is a source but is not the first stage")
        for s in stages[:-1]:
            if s.role == "sink":
                raise ValueError(f"{s.label} is a sink but is not the last stage")
        if stages[-1].role != "sink":
            stages.append(collect())
        return stages

    def run(self) -> Any:
        """Run to completion in a new trio event loop and return the sink's result.

        Raises :class:`~pipekit.ModuleError` naming the stage that failed. SIGTERM is
        handled like Ctrl-C: the run is cancelled, every process is terminated (TERM,
        then KILL after its ``kill_grace``), and ``run()`` raises
        ``SystemExit(EXIT_SIGTERM)`` (143) - unless the program has a SIGTERM handler of
        its own, or ``run()`` is not called in the main thread. A second SIGTERM during
        that cleanup ends the program at once."""
        try:
            trio.lowlevel.current_task()
            inside_trio = True
        except RuntimeError:
            inside_trio = False
        if inside_trio:
            raise RuntimeError("Pipeline.run() called inside trio: use 'await pipeline.arun()'")
        if (
            threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        ):
            return trio.run(self.arun)
        return trio.run(self._arun_until_sigterm)

    async def _arun_until_sigterm(self) -> Any:
        """:meth:`arun`, cancelled by SIGTERM (then ``SystemExit(EXIT_SIGTERM)``)."""
        terminated = False
        run_scope = trio.CancelScope()

        async def watch(signals: AsyncIterator[int]) -> None:
            nonlocal terminated
            async for _ in signals:
                if terminated:  # a second one: no more grace
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    os.kill(os.getpid(), signal.SIGTERM)
                terminated = True
                run_scope.cancel()

        result: Any = None
        try:
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async with open_plain_nursery() as nursery:
                    nursery.start_soon(watch, signals)
                    try:
                        with run_scope:
                            result = await self.arun()
                    finally:
                        nursery.cancel_scope.cancel()
        finally:
            if terminated:
                raise SystemExit(EXIT_SIGTERM)
        return result

    async def arun(
        self,
        *,
        progress: Callable[[dict[str, ModuleStats]], None] | None = None,
        interval: float = 0.5,
    ) -> Any:
        """Run inside trio and return the sink's result. If ``progress`` is given it is
        called with the live per-stage statistics every ``interval`` seconds."""
        stages = self._validated()
        modules = [s.module(first=i == 0) for i, s in enumerate(stages)]
        try:
            async with open_kernel() as k:
                self._kernel = k
                handles = []
                previous: Stage | None = None
                for stage, mod in zip(stages, modules, strict=True):
                    label, n = stage.label, 2
                    while label in k.stats():
                        label, n = f"{stage.label}#{n}", n + 1
                    o = stage.options
                    handles.append(
                        k.add(
                            mod,
                            name=label,
                            restart=o.restart,  # type: ignore[arg-type]
                            max_restarts=o.max_restarts,
                            backoff=o.backoff,
                            capacity=o.buffer,
                            max_bytes=o.buffer_bytes
                            or (BULK_BUFFER_BYTES if previous and previous.bulk_output else None),
                        )
                    )
                    previous = stage
                for a, b in itertools.pairwise(handles):
                    k.connect(a, b)
                self._running = True
                await k.start()
                if progress is not None:
                    with trio.CancelScope() as reporting:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(_report, k, progress, interval)
                            await k.join()
                            reporting.cancel()
        finally:
            self._running = False
            if self._kernel is not None:
                self._stats = self._kernel.stats()
            if progress is not None:
                progress(self.stats)
        sink_module = modules[-1]
        return getattr(sink_module, "result", None)

    def topology(self) -> Topology:
        """The kernel topology of the current or last run."""
        if self._kernel is None:
            raise RuntimeError("the pipeline has not run yet")
        return self._kernel.topology()


async def _report(
    k: Kernel, progress: Callable[[dict[str, ModuleStats]], None], interval: float
) -> None:
    while True:
        await trio.sleep(interval)
        progress(k.stats())
