"""``after(duration)``: a channel that delivers one value once a duration has passed."""

from __future__ import annotations

import math
from typing import Any

import trio

from ._channel import _BLOCKED, _CLOSED, Case, Channel
from ._duration import parse_duration
from ._select import select

__all__ = ["after"]


class _Timer(Channel[float]):
    """A channel that becomes ready at ``deadline`` (trio's clock) and delivers the
    time once. It needs no task: ``select`` waits for its deadline."""

    def __init__(self, deadline: float) -> None:
        super().__init__(0)
        self._due = deadline
        self._fired = False

    def __repr__(self) -> str:
        state = "fired" if self._fired else f"due at {self._due:.3f}"
        return f"<after() channel {state}{' closed' if self._closed else ''}>"

    def _poll_receive(self) -> object:
        if self._closed:
            return _CLOSED
        if self._fired or trio.current_time() < self._due:
            return _BLOCKED
        self._fired = True
        return trio.current_time()

    def _poll_send(self, value: float) -> bool:
        raise TypeError("an after() channel delivers its own timeout: nothing can be sent into it")

    def _deadline(self) -> float:
        return math.inf if self._fired or self._closed else self._due

    async def receive(self) -> float:
        """Wait until the deadline and return trio's clock then; once it has fired,
        wait for ever (like Go's ``time.After``); :class:`trio.EndOfChannel` if closed."""
        got = await select([self.case_receive()])
        if not got.ok:
            raise trio.EndOfChannel
        value: float = got.value
        return value

    def case_send(self, value: Any) -> Case[float]:
        raise TypeError("an after() channel delivers its own timeout: nothing can be sent into it")


def after(duration: float | str) -> Channel[float]:
    """A channel that delivers one value, trio's clock (``trio.current_time()``), once
    ``duration`` has passed (seconds, or a string like ``"5s"``, ``"100ms"``, ``"1m30s"``):
    the timeout case of :func:`~pipekit.channels.select`. After it has fired it stays
    silent; ``close()`` ends it. It runs no task and follows trio's clock (so
    ``trio.testing.MockClock`` drives it). Call it inside ``trio.run``.

    Example::

        got = await select([replies.case_receive(), after("5s").case_receive()])
        if got.channel is not replies:
            raise TimeoutError("no reply within 5 s")
    """
    seconds = parse_duration(duration)
    return _Timer(trio.current_time() + seconds)
