"""Nursery helpers: a failure leaves a scope as the exception that caused it."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from pipekit.kernel import framed_pipe
from pipekit.kernel.scopes import open_plain_nursery, unwrap_group
from pipekit.testing import MockTransport


def cancelled() -> trio.Cancelled:
    """A real trio.Cancelled (it has no public constructor)."""

    async def catch() -> trio.Cancelled:
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.lowlevel.checkpoint()
            except trio.Cancelled as exc:
                return exc
        raise AssertionError("not cancelled")

    return trio.run(catch)


def test_a_lone_error_is_unwrapped_from_nested_groups() -> None:
    error = ValueError("x")
    assert unwrap_group(ExceptionGroup("a", [ExceptionGroup("b", [error])])) is error


def test_a_cancellation_beside_an_error_gives_way_to_the_error() -> None:
    error = trio.BrokenResourceError("gone")
    group = BaseExceptionGroup("a", [cancelled(), error, cancelled()])
    assert unwrap_group(group) is error


def test_cancellations_alone_stand_for_one() -> None:
    first = cancelled()
    assert unwrap_group(BaseExceptionGroup("a", [first, cancelled()])) is first


def test_several_errors_stay_a_group() -> None:
    group = ExceptionGroup("a", [ValueError("x"), KeyError("y")])
    assert unwrap_group(group) is group


def test_a_group_raised_as_such_is_kept_whole() -> None:
    raised = ExceptionGroup("user", [ValueError("x")])
    assert unwrap_group(BaseExceptionGroup("nursery", [raised, cancelled()]), keep=raised) is raised


async def test_open_plain_nursery_raises_a_lone_error_as_itself() -> None:
    async def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        async with open_plain_nursery() as nursery:
            nursery.start_soon(fail)
            await trio.sleep_forever()


async def test_a_handshake_broken_while_the_caller_is_cancelled_is_never_a_group() -> None:
    # The peer vanishes during the handshake while the caller's scope is being
    # cancelled (a pool cancelling its other workers when one fails): the error or the
    # cancellation comes out, never an ExceptionGroup that no `except` clause matches.
    for _ in range(50):
        transport = MockTransport()
        outcome: BaseException | None = None
        with trio.fail_after(10), trio.CancelScope() as outer:
            async with trio.open_nursery() as nursery:

                async def vanish_and_cancel(
                    transport: MockTransport, outer: trio.CancelScope
                ) -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    transport.cut("broken")
                    await trio.lowlevel.checkpoint()
                    outer.cancel()

                nursery.start_soon(vanish_and_cancel, transport, outer)
                try:
                    async with framed_pipe(transport.left, initiator=True):
                        pass  # pragma: no cover - the handshake never completes
                except BaseException as exc:
                    outcome = exc
                    if isinstance(exc, trio.Cancelled):
                        raise
        assert not isinstance(outcome, BaseExceptionGroup), outcome
