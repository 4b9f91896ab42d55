"""What a stage's module measures about itself: the time spent inside the user's
function, the messages it took, and the message it failed on.

The stages that call the user's function on the event loop (a source over a plain
iterable, ``map``, ``filter``, ``flat_map``, ``sink``, ``reduce``, ``collect``) time it
a batch at a time (two clock reads per batch, nothing per message). For the other
stages (threads, processes, peers, operators) the pipeline counts as busy the time
they were neither starved nor blocked (see :func:`~pipekit.pipeline._pipeline.measure`).
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from time import perf_counter
from typing import Any

__all__ = ["Meter", "perf_counter", "short_repr"]

_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6


def short_repr(item: Any) -> str:
    """``repr(item)``, cut to about 80 characters (a failure report's one line)."""
    text = _REPR.repr(item)
    return text if len(text) <= 80 else text[:76] + "...)"


class Meter:
    """One stage's own measurements, kept over its restarts. ``timed``: whether
    :attr:`busy` is measured (else the pipeline derives it)."""

    __slots__ = ("busy", "failed", "taken", "timed")

    def __init__(self, *, timed: bool = True) -> None:
        self.busy = 0.0
        """Seconds spent inside the user's function (if ``timed``)."""
        self.taken = 0
        """Messages taken from the input so far (or emitted, for a source)."""
        self.failed: tuple[int, Any] | None = None
        """``(index, message)`` of the last message whose call raised: its place in the
        stage's input (for a source: how many items it had emitted)."""
        self.timed = timed

    def fail(self, index: int, item: Any) -> None:
        self.failed = (index, item)

    def fail_in(self, batch: Sequence[Any], item: Any) -> None:
        """``item`` of ``batch`` (taken after :attr:`taken` messages) failed: find its
        place by identity (an equal object earlier in the batch would have failed
        first, for a function that is not stateful)."""
        for i, msg in enumerate(batch):
            if msg is item:
                self.failed = (self.taken + i, item)
                return
        self.failed = (self.taken, item)
