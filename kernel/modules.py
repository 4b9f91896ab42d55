"""Modules: what a kernel runs.

A module has named input and output ports and an async ``run(ports)``. The easy forms
are plain functions, turned into modules by :func:`as_module`:

* ``async def stage(inp, out)``: a coroutine function whose parameters are its ports;
  parameters named ``inp``/``inputs``/``inbox``/``in_*`` are inputs and
  ``out``/``outputs``/``outbox``/``out_*`` are outputs (a source has only ``out``, a
  sink only ``inp``);
* ``def f(msg) -> msg``: a per-message function, run over batches on the kernel's loop
  (keep it quick; blocking code belongs in a thread module).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .pipe import Pipe

__all__ = [
    "FunctionModule",
    "MapModule",
    "Module",
    "as_module",
    "batch_failure",
    "is_input_name",
    "is_output_name",
    "process_batch",
]


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


def is_input_name(name: str) -> bool:
    """Whether a parameter name denotes an input port (``inp``, ``inputs``, ``inbox``,
    ``in_*``)."""
    return name in ("inp", "inputs", "inbox") or name.startswith("in_")


def is_output_name(name: str) -> bool:
    """Whether a parameter name denotes an output port (``out``, ``outputs``,
    ``outbox``, ``out_*``)."""
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
    fn: Callable[[Any], Any], batch: Sequence[Any]
) -> tuple[list[Any], list[Exception]]:
    """Apply ``fn`` to each message of ``batch``, in order.

    A message whose call raises is skipped and its exception collected; the others are
    still processed. Returns ``(results, errors)``. Callers deliver ``results`` and then
    raise ``errors[0]`` (see :func:`batch_failure`), so a failure loses only the message
    that caused it, and reports it.
    """
    out: list[Any] = []
    errors: list[Exception] = []
    append = out.append
    for msg in batch:
        try:
            append(fn(msg))
        except Exception as exc:
            errors.append(exc)
    return out, errors


def batch_failure(errors: Sequence[Exception]) -> Exception:
    """The exception to raise for a batch's ``errors``: the first, with a note counting
    the others."""
    first = errors[0]
    if len(errors) > 1:
        first.add_note(f"{len(errors) - 1} more message(s) of the same batch failed too")
    return first


class MapModule:
    """``def f(msg) -> msg`` as a module with ports ``inp`` and ``out``.

    Order is preserved. If ``f`` raises, every other message of the batch is still
    delivered before the module fails (see :func:`process_batch`)."""

    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", "map")

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        fn = self.fn
        async for batch in inp.batches():
            results, errors = process_batch(fn, batch)
            if results:
                await out.send_batch(results)
            if errors:
                raise batch_failure(errors)


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
        ins = inputs if inputs is not None else tuple(p for p in params if is_input_name(p))
        outs = outputs if outputs is not None else tuple(p for p in params if is_output_name(p))
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
