"""``select``: wait for the first of several channel operations, fairly and cancel-safely."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Any

import trio

from ._channel import _BLOCKED, _CLOSED, Case, Channel, _Op, _Waiter

__all__ = ["Selected", "select"]

_random = random.Random().random


class Selected:
    """What :func:`select` did: the case that fired, and what it got.

    - ``case`` and ``index`` (its position in the list given to ``select``), ``channel``
      (its channel);
    - ``value``: what a receive case received (``None`` for a send case);
    - ``ok``: False when a receive case fired because its channel is closed and drained;
    - ``default``: True when nothing was ready and ``select(..., default=True)`` returned
      at once (then ``case`` and ``channel`` are None and ``index`` is -1).

    Example::

        got = await select([results.case_receive(), after("5s").case_receive()])
        if got.channel is results and got.ok:
            print(got.value)
    """

    __slots__ = ("case", "default", "index", "ok", "value")

    def __init__(
        self,
        case: Case[Any] | None,
        index: int,
        value: Any = None,
        ok: bool = True,
        default: bool = False,
    ) -> None:
        self.case = case
        self.index = index
        self.value = value
        self.ok = ok
        self.default = default

    @property
    def channel(self) -> Channel[Any] | None:
        """The channel of the case that fired (None for the default)."""
        return None if self.case is None else self.case.channel

    def __repr__(self) -> str:
        if self.default:
            return "Selected(default=True)"
        return (
            f"Selected(index={self.index}, value={self.value!r}, ok={self.ok}, case={self.case!r})"
        )


def _check(cases: Iterable[Case[Any]]) -> list[Case[Any]]:
    if isinstance(cases, Case):
        raise TypeError("select() takes a list of cases: select([ch.case_receive(), ...])")
    listed = list(cases)
    for case in listed:
        if type(case) is Case or isinstance(case, Case):
            continue
        if isinstance(case, Channel):
            hint = " (a channel is not a case: use ch.case_receive() or ch.case_send(value))"
        elif isinstance(case, trio.abc.ReceiveChannel | trio.abc.SendChannel):
            hint = (
                " (select works over pipekit.channels.channel(), not trio's channels: a "
                "receive trio has completed cannot be taken back, so a select over them "
                "could lose a value)"
            )
        else:
            hint = ""
        raise TypeError(f"select() takes cases, not {case!r}{hint}")
    return listed


def _poll(cases: list[Case[Any]]) -> Selected | None:
    """Fire the first ready case, scanning from a random start (so that among ready
    cases each is chosen with probability at least 1/len(cases): none starves)."""
    n = len(cases)
    start = int(_random() * n) if n > 1 else 0
    for k in range(n):
        i = (start + k) % n
        case = cases[i]
        if case.sends:
            if case.channel._poll_send(case.value):
                return Selected(case, i)
        else:
            got = case.channel._poll_receive()
            if got is not _BLOCKED:
                if got is _CLOSED:
                    return Selected(case, i, None, ok=False)
                return Selected(case, i, got)
    return None


async def select(cases: Iterable[Case[Any]], *, default: bool = False) -> Selected:
    """Perform exactly one of ``cases`` (``ch.case_receive()``, ``ch.case_send(v)``),
    the first that can proceed, and say which (a :class:`Selected`).

    - **Fair**: when several cases are ready, one is picked at random (each with
      probability at least ``1/len(cases)``), so no case starves another; blocked
      selects are served first come, first served, like any receiver or sender.
    - **Cancel-safe**: the cases that did not fire did nothing. A cancelled ``select``
      received and sent nothing.
    - A receive case on a closed, drained channel is ready: it fires with ``ok=False``.
      A send case on a closed channel raises :class:`trio.ClosedResourceError`.
    - ``default=True``: if no case is ready, return at once a ``Selected`` with
      ``default=True`` instead of waiting.
    - Timeouts are cases too: ``after("5s").case_receive()`` fires once 5 s have passed.

    Like every trio operation, ``select`` is a checkpoint.

    Example::

        timer = after("2s")
        while True:
            got = await select([jobs.case_receive(), timer.case_receive()])
            if got.channel is timer or not got.ok:
                break                     # timed out, or jobs was closed
            handle(got.value)
    """
    listed = _check(cases)
    if not listed and not default:
        raise ValueError("select() needs at least one case (or default=True)")
    await trio.lowlevel.checkpoint_if_cancelled()
    while True:
        got = _poll(listed) if listed else None
        if got is not None or default:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return got if got is not None else Selected(None, -1, default=True)
        waiter = _Waiter(trio.lowlevel.current_task())
        deadline = math.inf
        for i, case in enumerate(listed):
            op = _Op(waiter, i, case.channel, case.value, case.sends)
            waiter.ops.append(op)
            case.channel._register(op, case.sends)
            deadline = min(deadline, case.channel._deadline())
        with trio.CancelScope(deadline=deadline):
            index, value = await trio.lowlevel.wait_task_rescheduled(waiter.abort)
            case = listed[index]
            if value is _CLOSED:
                return Selected(case, index, None, ok=False)
            return Selected(case, index, None if case.sends else value)
        # A timer's deadline passed (the wait was aborted, nothing fired): poll again.
