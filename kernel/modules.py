"""Modules: what a kernel runs.

A module has named input and output ports and an async ``run(ports)``. The easy forms
are plain functions, turned into modules by :func:`as_module`:

* ``async def stage(inp, out)``: a coroutine function whose parameters are its ports;
  parameters named ``inp``/``inputs``/``in_*`` are inputs and ``out``/``outputs``/
  ``out_*`` are outputs (a source has only ``out``, a sink only ``inp``);
* ``def f(msg) -> msg``: a per-message function, run over batches on the kernel's loop
  (keep it quick; blocking code belongs in a thread module).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from .lane import Lane
from .pipe import LocalPipe, Pipe

__all__ = ["FunctionModule", "MapModule", "Module", "as_module", "process_batch"]


@runtime_checkable
class Module(Protocol):
    """Anything with named ports that the kernel can run."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        """Run until done. ``ports`` maps every input and output name to a :class:`Pipe`
        end (inputs receive, outputs send). Returning normally ENDs the outputs; raising
        fails them."""
        ...


def _is_input(name: str) -> bool:
    return name in ("inp", "inputs", "inbox") or name.startswith("in_")


def _is_output(name: str) -> bool:
    return name in ("out", "outputs", "outbox") or name.startswith("out_")


class FunctionModule:
    """A coroutine function whose parameters name its ports."""

    def __init__(
        self,
        fn: Callable[..., Awaitable[None]],
        inputs: tuple[str, ...],
        outputs: tuple[str, ...],
    ) -> None:
        self.fn = fn
        self.inputs = inputs
        self.outputs = outputs
        self.name = getattr(fn, "__name__", "module")

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        await self.fn(**ports)


def process_batch(
    fn: Callable[[Any], Any], batch: list[Any], inp: Pipe
) -> list[Any]:
    """Apply ``fn`` to each message of ``batch``.

    If ``fn`` raises at message *i*, the messages after *i* are put back at the front of
    ``inp`` (when it is an in-process pipe) so that a restarted module continues with
    them; the exception is re-raised with the results so far in ``exc.partial_results``.
    Only the message that raised is lost, and that loss is reported by the exception.
    """
    out: list[Any] = []
    append = out.append
    i = 0
    try:
        for i, msg in enumerate(batch):  # noqa: B007 - i is read in the handler
            append(fn(msg))
    except Exception as exc:
        rest = batch[i + 1 :]
        lane = inp.receive_lane if isinstance(inp, LocalPipe) else None
        if rest and isinstance(lane, Lane):
            lane.unget(rest)
        exc.partial_results = out  # type: ignore[attr-defined]
        raise
    return out


class MapModule:
    """``def f(msg) -> msg`` as a module with ports ``inp`` and ``out``.

    Order is preserved. If ``f`` raises, the results before the failing message are
    still sent, and the messages after it stay queued for a restart."""

    inputs = ("inp",)
    outputs = ("out",)

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", "map")

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        fn = self.fn
        async for batch in inp.batches():
            try:
                results = process_batch(fn, batch, inp)
            except Exception as exc:
                partial = getattr(exc, "partial_results", None)
                if partial:
                    await out.send_batch(partial)
                raise
            await out.send_batch(results)


def as_module(
    obj: Any, *, inputs: tuple[str, ...] | None = None, outputs: tuple[str, ...] | None = None
) -> Module:
    """Turn ``obj`` into a :class:`Module` (see the module docstring for the forms)."""
    if isinstance(obj, Module) and not inspect.isfunction(obj):
        return obj
    if inspect.iscoroutinefunction(obj) or (
        callable(obj) and inspect.iscoroutinefunction(getattr(obj, "__call__", None))  # noqa: B004
    ):
        params = [
            p.name
            for p in inspect.signature(obj).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        ins = inputs if inputs is not None else tuple(p for p in params if _is_input(p))
        outs = outputs if outputs is not None else tuple(p for p in params if _is_output(p))
        unknown = [p for p in params if p not in ins and p not in outs]
        if unknown:
            raise TypeError(
                f"cannot tell whether parameter(s) {unknown} of {obj!r} are inputs or outputs: "
                "name them inp/out (or in_*/out_*), or pass inputs=/outputs="
            )
        return FunctionModule(obj, ins, outs)
    if callable(obj):
        return MapModule(obj)
    raise TypeError(f"{obj!r} is not a module, a coroutine function or a callable")
