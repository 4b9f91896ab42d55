"""Conformance checks for anything that produces pipekit :class:`~pipekit.kernel.Pipe`\\ s.

An adapter under test is described by an ``open_pair`` callable: each call returns an
async context manager yielding ``(a, b)``, two trio-side pipe ends joined through the
adapter (what ``a`` sends, ``b`` receives, and the other way round). Every check opens
fresh pairs, runs under a deadline (``trio.fail_after``), bounds every loop, and uses no
sleep as synchronisation: "the sender is blocked" is established by waiting until the
trio run is idle (:func:`trio.testing.wait_all_tasks_blocked`) several times in a row
without the count of accepted sends changing.

``bound`` is the adapter's documented bound for the backpressure check: the most
messages ``send()`` may accept while the other end never receives (send buffer +
receive high-water + what may be in flight). The backpressure and cancellation checks
send messages of :data:`BACKPRESSURE_MESSAGE_SIZE` ASCII characters, so adapters whose
buffers are counted in bytes can state a bound in messages
(:func:`framed_bound` computes it for one pipekit/1 hop).

The ``cancel_points`` and ``fairness`` checks hold adapters to the scheduling part of
the Pipe contract (see :mod:`pipekit.kernel.pipe`): every call is a cancel point, and a
busy loop of ``send``/``receive`` yields at least every
:data:`~pipekit.kernel.pipe.YIELD_EVERY` calls, counted exactly per step of the calling
task by a trio instrument (not by timing).

Use :func:`check_adapter` to run every check and get one :class:`AssertionError`
listing all failures, or :func:`run_check` with the names in :data:`CHECKS` to run one
check per test. Failures name the adapter, the check, the direction and what was seen.
"""

from __future__ import annotations

import trio

from ._adapter import (
    BACKPRESSURE_MESSAGE_SIZE,
    DEFAULT_CLOSE_GRACE,
    DEFAULT_LARGE,
    DEFAULT_TIME_LIMIT,
    AdapterUnderTest,
    Check,
    OpenPair,
    backpressure_message,
    framed_bound,
)
from ._checks_blocking import (
    check_backpressure,
    check_cancellation,
    check_close_unblocks_receiver,
    check_concurrent_close,
)
from ._checks_delivery import (
    check_end,
    check_error,
    check_half_close,
    check_large,
    check_order,
    check_stats,
)
from ._checks_scheduling import check_cancel_points, check_fairness
from ._compare import explain

__all__ = [
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
]


CHECKS: tuple[tuple[str, Check], ...] = (
    ("order", check_order),
    ("end", check_end),
    ("half_close", check_half_close),
    ("error", check_error),
    ("backpressure", check_backpressure),
    ("large", check_large),
    ("concurrent_close", check_concurrent_close),
    ("close_unblocks_receiver", check_close_unblocks_receiver),
    ("cancellation", check_cancellation),
    ("cancel_points", check_cancel_points),
    ("fairness", check_fairness),
    ("stats", check_stats),
)
"""Every check, by name, in the order :func:`check_adapter` runs them."""


async def run_check(adapter: AdapterUnderTest, check: str | Check) -> None:
    """Run one check (a name from :data:`CHECKS`, or a check function) under the
    adapter's deadline. Raises :class:`AssertionError` naming the adapter, the check and
    what was observed (a hang is reported as such)."""
    if isinstance(check, str):
        found = dict(CHECKS).get(check)
        if found is None:
            raise ValueError(f"unknown check {check!r}; known: {', '.join(n for n, _ in CHECKS)}")
        name, fn = check, found
    else:
        fn = check
        name = next((n for n, c in CHECKS if c is check), getattr(check, "__name__", "check"))
    prefix = f"adapter {adapter.name!r}, check {name!r}"
    try:
        with trio.fail_after(adapter.time_limit):
            await fn(adapter)
    except trio.TooSlowError:
        raise AssertionError(
            f"{prefix}: did not finish within {adapter.time_limit:g} s (something hangs)"
        ) from None
    except Exception as exc:
        raise AssertionError(f"{prefix}: {explain(exc)}") from exc


async def check_adapter(
    open_pair: OpenPair,
    *,
    bound: int,
    large: int = DEFAULT_LARGE,
    name: str = "",
    time_limit: float = DEFAULT_TIME_LIMIT,
    close_grace: float = DEFAULT_CLOSE_GRACE,
) -> None:
    """Run every check in :data:`CHECKS` against ``open_pair`` (see the module
    docstring); collect the failures and raise one :class:`AssertionError` listing
    them all."""
    adapter = AdapterUnderTest(
        name or getattr(open_pair, "__name__", "adapter"),
        open_pair,
        bound,
        large=large,
        time_limit=time_limit,
        close_grace=close_grace,
    )
    failures: list[str] = []
    for _, fn in CHECKS:
        try:
            await run_check(adapter, fn)
        except AssertionError as exc:
            failures.append(str(exc))
    if failures:
        raise AssertionError(
            f"adapter {adapter.name!r} failed {len(failures)} of {len(CHECKS)} checks:\n"
            + "\n".join(f"- {f}" for f in failures)
        )
