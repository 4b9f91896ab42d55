"""How every socket adapter connects: open a transport, run the pipekit/1 handshake as
the initiator, and retry failed attempts under a :class:`Reconnect` policy."""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import trio

from ..kernel.errors import ErrorKind, ProtocolError, RemoteError
from ..kernel.framed import FramedPipe, Transport, framed_pipe
from ..kernel.options import PipeOptions, PipeSettings

__all__ = ["Reconnect", "connect_pipe", "connect_with_retry"]

log = logging.getLogger("pipekit.adapters")


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Retry policy for a client's connection attempts (off unless given).

    Attempt ``n`` (from 0) waits ``min(initial * factor**n, max_delay)`` seconds before the
    next one; after ``attempts`` failures the last error is raised. Refused or
    unreachable addresses, broken and timed-out handshakes and a listener refusing
    because it is ``busy`` are retried; any other refusal by the peer (a wrong token,
    say) is not, since trying again cannot fix it."""

    attempts: int = 5
    initial: float = 0.1
    factor: float = 2.0
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.initial < 0 or self.factor < 1 or self.max_delay < 0:
            raise ValueError("need initial >= 0, factor >= 1 and max_delay >= 0")

    def delay(self, attempt: int) -> float:
        try:
            return float(min(self.initial * self.factor**attempt, self.max_delay))
        except OverflowError:  # factor**attempt is beyond any float: long past max_delay
            return float(self.max_delay)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, RemoteError):
        return exc.kind == ErrorKind.BUSY
    if isinstance(exc, ProtocolError):
        return exc.kind in (ErrorKind.HANDSHAKE, ErrorKind.HANDSHAKE_TIMEOUT)
    if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
        return False  # the same certificate will fail the same way
    return isinstance(exc, OSError | trio.BrokenResourceError | trio.ClosedResourceError)


@asynccontextmanager
async def connect_with_retry(
    open_pipe: Callable[[], AbstractAsyncContextManager[FramedPipe]],
    reconnect: Reconnect | bool | None,
    label: str,
) -> AsyncIterator[FramedPipe]:
    """Enter ``open_pipe()``, retrying a failed connection under ``reconnect``. Only the
    connection is retried: once the pipe is yielded, a failure is the body's to see."""
    policy = Reconnect() if reconnect is True else (reconnect or None)
    attempts = policy.attempts if policy is not None else 1
    async with AsyncExitStack() as stack:
        for attempt in range(attempts):
            try:
                pipe = await stack.enter_async_context(open_pipe())
                break
            except Exception as exc:
                if policy is None or attempt == attempts - 1 or not _retryable(exc):
                    raise
                wait = policy.delay(attempt)
                log.info(
                    "%s: connection attempt %d failed (%s); retrying in %.2f s",
                    label,
                    attempt + 1,
                    exc,
                    wait,
                )
                await trio.sleep(wait)
        yield pipe


@asynccontextmanager
async def connect_pipe(
    open_transport: Callable[[PipeSettings], AbstractAsyncContextManager[Transport]],
    *,
    label: str,
    token: str | None,
    reconnect: Reconnect | bool | None,
    options: PipeOptions,
) -> AsyncIterator[FramedPipe]:
    """Every adapter's ``connect``: check ``options`` (the pipe is named ``label``
    unless they name it), then enter ``open_transport(settings)`` and the pipekit/1
    handshake on the transport it yields, retried under ``reconnect``; yield the pipe."""
    settings = PipeSettings(**options)
    if settings.name is None:
        settings = dataclasses.replace(settings, name=label)

    @asynccontextmanager
    async def attempt() -> AsyncIterator[FramedPipe]:
        async with (
            open_transport(settings) as transport,
            framed_pipe(transport, initiator=True, token=token, settings=settings) as pipe,
        ):
            yield pipe

    async with connect_with_retry(attempt, reconnect, label) as pipe:
        yield pipe
