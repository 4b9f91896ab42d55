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
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any, Protocol, runtime_checkable

import trio

from .errors import ErrorKind, PipekitError, RemoteError
from .pipe import Pipe
from .scopes import open_plain_nursery

__all__ = [
    "FunctionModule",
    "MapModule",
    "Module",
    "PipeOpener",
    "RemoteModule",
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


PipeOpener = Callable[[], AbstractAsyncContextManager[Pipe]]
"""A zero-argument callable returning an async context manager that yields a connected
:class:`Pipe`: ``lambda: tcp.connect(host, port)``."""


class RemoteModule:
    """A peer at the far end of a pipe (another process, a machine, a browser page) as a
    module with ports ``inp`` and ``out``: what arrives on ``inp`` is sent to the peer,
    followed by END; what the peer sends goes out on ``out`` until the peer ENDs.

    ``peer`` is an open :class:`Pipe` (used for one run only) or a :data:`PipeOpener`,
    called at every run, so a restart policy reconnects. An upstream failure fails the
    peer's direction with it; a peer's ERROR fails this module. With ``source=True`` the
    module has no input (the peer produces): its direction to the peer is ENDed at once.
    """

    outputs: tuple[str, ...] = ("out",)

    def __init__(
        self, peer: Pipe | PipeOpener, *, name: str | None = None, source: bool = False
    ) -> None:
        self.peer = peer
        self.inputs: tuple[str, ...] = () if source else ("inp",)
        self.name = name or (peer.name if isinstance(peer, Pipe) else "remote")
        self._runs = 0

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        self._runs += 1
        if not isinstance(self.peer, Pipe):
            async with self.peer() as pipe:
                await self._bridge(pipe, ports)
            return
        if self._runs > 1:
            raise RuntimeError(
                f"{self.name}: a module over an already open pipe cannot run twice; "
                "pass a function that opens a new pipe to allow restarts"
            )
        await self._bridge(self.peer, ports)

    async def _bridge(self, peer: Pipe, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports.get("inp"), ports["out"]
        peers_error: RemoteError | None = None
        try:
            async with open_plain_nursery() as nursery:
                if inp is None:
                    await peer.end()
                else:
                    nursery.start_soon(self._forward, inp, peer)
                async for batch in peer.batches():
                    await out.send_batch(batch)
        except BaseException as exc:
            # The peer's ERROR may surface in both tasks at once (the receiving one, and
            # the sending one as the cause of its broken pipe): it is the one failure.
            peers_error = _the_peers_error(exc)
            # The peer must learn that no more messages are coming, also when the run
            # is cancelled (the kernel cancels every module when one fails).
            reason = _Stopped() if _only_cancelled(exc) else (peers_error or exc)
            with trio.CancelScope(shield=True):
                await _fail_quietly(peer, reason)
            if peers_error is None:
                raise
        if peers_error is not None:
            raise peers_error

    @staticmethod
    async def _forward(inp: Pipe, peer: Pipe) -> None:
        async for batch in inp.batches():
            await peer.send_batch(batch)
        await peer.end()


def _the_peers_error(exc: BaseException) -> RemoteError | None:
    """The peer's :class:`RemoteError` that ``exc`` (a group) stands for: the group holds
    it, and otherwise only transport failures and cancellations that follow from it."""
    if not isinstance(exc, BaseExceptionGroup):
        return None
    remote, rest = exc.split(RemoteError)
    if remote is None:
        return None
    if (
        rest is not None
        and rest.split((trio.BrokenResourceError, trio.ClosedResourceError, trio.Cancelled))[1]
    ):
        return None
    first: BaseException = remote
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first if isinstance(first, RemoteError) else None


def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return isinstance(exc, trio.Cancelled)


class _Stopped(PipekitError):
    kind = ErrorKind.CANCELLED

    def __init__(self) -> None:
        super().__init__("the module talking to this peer was stopped (cancelled)")


async def _fail_quietly(pipe: Pipe, exc: BaseException) -> None:
    """Tell the peer about ``exc`` if its pipe still can be told."""
    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await pipe.fail(exc)
