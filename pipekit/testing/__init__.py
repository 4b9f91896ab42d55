"""pipekit.testing: the public testing kit.

* :mod:`pipekit.testing.conformance`: checks that any adapter's pipes keep the Pipe
  contract (order, END, half-close, ERROR, backpressure bounds, large messages,
  closing, cancellation, cancel points, fairness, statistics) - :func:`check_adapter` runs them all,
  :func:`run_check` one of :data:`CHECKS`.
* :mod:`pipekit.testing.mock`: :class:`MockTransport`, an in-memory pair of trio
  streams with fault injection (chunked delivery, a stalled peer, injected bytes, a cut
  connection) and a record of every byte, for testing your own pipekit/1 peer;
  :func:`parse_frames` splits the recorded bytes into frames.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conformance import (
        BACKPRESSURE_MESSAGE_SIZE,
        CHECKS,
        DEFAULT_CLOSE_GRACE,
        DEFAULT_LARGE,
        DEFAULT_TIME_LIMIT,
        AdapterUnderTest,
        Check,
        OpenPair,
        backpressure_message,
        check_adapter,
        framed_bound,
        run_check,
    )
    from .mock import (
        DEFAULT_MOCK_CAPACITY,
        Frame,
        MockStream,
        MockTransport,
        MockWire,
        parse_frames,
    )
else:
    from .._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            ".conformance": [
                "BACKPRESSURE_MESSAGE_SIZE",
                "CHECKS",
                "DEFAULT_CLOSE_GRACE",
                "DEFAULT_LARGE",
                "DEFAULT_TIME_LIMIT",
                "AdapterUnderTest",
                "Check",
                "OpenPair",
                "backpressure_message",
                "check_adapter",
                "framed_bound",
                "run_check",
            ],
            ".mock": [
                "DEFAULT_MOCK_CAPACITY",
                "Frame",
                "MockStream",
                "MockTransport",
                "MockWire",
                "parse_frames",
            ],
        },
    )

__all__ = [
    "BACKPRESSURE_MESSAGE_SIZE",
    "CHECKS",
    "DEFAULT_CLOSE_GRACE",
    "DEFAULT_LARGE",
    "DEFAULT_MOCK_CAPACITY",
    "DEFAULT_TIME_LIMIT",
    "AdapterUnderTest",
    "Check",
    "Frame",
    "MockStream",
    "MockTransport",
    "MockWire",
    "OpenPair",
    "backpressure_message",
    "check_adapter",
    "framed_bound",
    "parse_frames",
    "run_check",
]
