"""What becomes of the items of a worker that died: which run again, which are isolated,
which are lost, and the error values that say so."""

from __future__ import annotations

from ...adapters.stdio import ProcessError
from ...kernel import RemoteError
from .errors import WorkerError, WorkerErrorKind
from .queue import Entry, Flight, Segment, SegmentState
from .worker import Worker

MAX_BARREN_DEATHS = 5
"""Fresh workers that may die in a row, pool-wide, before any worker answers an item,
before the pool gives up (their items are isolated and retried in between)."""


def triage(
    flights: list[Flight], record: tuple[int, int] | None
) -> tuple[list[Segment], list[Entry], list[Entry]]:
    """Sort the unanswered items of a dead worker by its progress record (``record``:
    the ids ``[start, end)`` of the slice it was running, None if unknown) into
    ``(again, suspects, lost)``. Items before the slice ran to the end (their answers
    were lost): they run once more, on a worker holding nothing else (``RAN``, see
    :meth:`Dispatcher.dispatch`). Items after it never started: they are queued again as
    they were. Items in the slice are suspects: each
    runs again alone. An item that ran (or was in the slice) a second time is lost: it
    is not run a third time. Without a record every unanswered item is a suspect.
    Items of cancelled runs are left out."""
    again: list[Segment] = []  # queued again (Dispatcher.put_back), in order
    suspects: list[Entry] = []
    lost: list[Entry] = []  # ran twice: not run again
    for flight in flights:
        n = len(flight.items)
        lo = flight.done
        if flight.run.cancelled:
            continue
        if record is None:
            suspects.extend(flight.entries(lo, n))
            continue
        a = min(max(record[0] - flight.first, lo), n)  # [lo, a): ran to the end
        b = min(max(record[1] - flight.first, a), n)  # [a, b): in the last slice
        state = flight.state
        if state is SegmentState.FRESH:
            if a > lo:
                again.append(
                    Segment(flight.run, flight.start, flight.items, lo, a, SegmentState.RAN)
                )
            suspects.extend(flight.entries(a, b))
        elif state is SegmentState.RAN:
            lost.extend(flight.entries(lo, b))
        else:
            lost.extend(flight.entries(lo, a))
            suspects.extend(flight.entries(a, b))
        if b < n:  # [b, n): never started
            if state is SegmentState.SUSPECT:
                suspects.extend(flight.entries(b, n))
            else:
                again.append(Segment(flight.run, flight.start, flight.items, b, n, state))
    return again, suspects, lost


# -- error values -----------------------------------------------------------------------


def loss_error(
    worker: Worker, index: int | None, program: str, *, again: bool = False
) -> WorkerError:
    """The error value of an item lost with ``worker``: its culprit, or (``again``) an
    item that ran twice on workers that died before answering it."""
    where = f"item {index}" if index is not None else "the item"
    allowance = worker.timed_out
    if allowance is not None and not again:
        message = f"{where} not answered within {allowance:g} s; {worker.describe()} killed"
        cause = ProcessError("timeout", message, program=program, pid=worker.pid)
        err = WorkerError(WorkerErrorKind.TIMEOUT, message, index=index, pid=worker.pid)
        err.__cause__ = cause
        return err
    exc = worker.loss
    if exc is None:  # killed for another item's timeout
        exc = ProcessError(
            "timeout",
            f"{worker.describe()} was killed: an item took longer than the timeout",
            program=program,
            pid=worker.pid,
        )
    return _crash_error(worker, index, exc, again=again)


def _crash_error(
    worker: Worker, index: int | None, exc: BaseException, *, again: bool = False
) -> WorkerError:
    where = f"item {index}" if index is not None else "the item"
    doing = f"while running {where}"
    if again:  # not run a third time
        doing = f"before answering {where}, already lost once with another worker"
    remote = remote_cause(exc)
    if isinstance(exc, ProcessError):
        message = f"{worker.describe()} died {doing}: "
        if exc.signal_name is not None:
            message += f"killed by signal {exc.signal_name}"
        elif exc.exit_code is not None:
            message += f"exit code {exc.exit_code}"
        else:
            message += exc.kind
        if remote is not None:
            message += f" ({remote.kind}: {remote.message})"
        err = WorkerError(
            WorkerErrorKind.TERMINATED,
            message,
            index=index,
            traceback=str(remote.details.get("traceback", "")) if remote else "",
            pid=worker.pid,
            exit_code=exc.exit_code,
            signal=exc.signal,
            stderr=exc.stderr,
        )
    else:
        err = WorkerError(
            WorkerErrorKind.TERMINATED,
            f"{worker.describe()} failed {doing}: {exc}",
            index=index,
            pid=worker.pid,
        )
    err.__cause__ = exc
    return err


def startup_error(
    worker: Worker, remote: RemoteError, exc: BaseException, init: str | None
) -> WorkerError:
    """The pool's failure when a worker's ``init`` raised (or its runtime failed before
    serving any item): ``remote`` is the worker's error, ``exc`` how its channel broke."""
    err = WorkerError(
        remote.kind,
        f"{worker.describe()} failed before serving any item "
        f"(in {init or 'its start-up'}): {remote.message}",
        traceback=str(remote.details.get("traceback", "")),
        remote=True,
        pid=worker.pid,
    )
    err.__cause__ = exc
    return err


def barren_error(worker: Worker, exc: BaseException) -> WorkerError:
    """The pool's failure when :data:`MAX_BARREN_DEATHS` fresh workers in a row died
    before answering any item (``worker`` the last, ``exc`` how it died)."""
    err = WorkerError(
        WorkerErrorKind.TERMINATED,
        f"{MAX_BARREN_DEATHS} fresh workers in a row died before answering any "
        f"item; the last: {exc}",
        pid=worker.pid,
    )
    err.__cause__ = exc
    return err


def remote_cause(exc: BaseException | None) -> RemoteError | None:
    """The :class:`~pipekit.RemoteError` in the ``__cause__`` chain of ``exc``, if any."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, RemoteError):
            return exc
        exc = exc.__cause__
        seen += 1
    return None
