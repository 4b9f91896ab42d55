"""Starting a process so that it dies with this one, whatever kills this one.

On Linux every process is started with a parent-death signal (``PR_SET_PDEATHSIG``,
SIGKILL): when this process dies without cleaning up (SIGKILL, a crash, a SIGTERM nobody
handled), the kernel kills its children. That signal fires when the *thread* that forked
the child ends, not the process - and ``trio.lowlevel.open_process`` forks from a cached
worker thread that ends after 10 s idle, which would kill a child that is doing just
fine. So the children are forked by one dedicated thread that lives as long as this
process (:class:`_Spawner`), and awaited on a pidfd (:class:`PidfdProcess`).

Elsewhere (or without pidfds, Linux < 5.3) processes are started with
``trio.lowlevel.open_process``, without a parent-death signal.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

import trio

PR_SET_PDEATHSIG = 1


class RunningProcess(Protocol):
    """What the adapter uses of a started process (a :class:`trio.Process` has it)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited (polled: always up to date), else None."""

    async def wait(self) -> int: ...


class PidfdProcess:
    """A process started by :func:`start_process` on Linux: its exit is awaited on a
    pidfd, as :class:`trio.Process` does."""

    def __init__(self, popen: subprocess.Popen[bytes], pidfd: int) -> None:
        self._popen = popen
        self._pidfd: int | None = pidfd
        self._wait_lock = trio.Lock()

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        code = self._popen.poll()
        if code is not None:
            self._close_pidfd()
        return code

    async def wait(self) -> int:
        async with self._wait_lock:
            if self._popen.poll() is None:
                fd = self._pidfd
                if fd is not None:
                    # Closed by a poll meanwhile: the process is reaped then.
                    with contextlib.suppress(trio.ClosedResourceError):
                        await trio.lowlevel.wait_readable(fd)
                self._popen.wait()  # it has exited: this reaps it without blocking
            self._close_pidfd()
        code = self._popen.returncode
        assert code is not None
        return code

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            trio.lowlevel.notify_closing(fd)
            os.close(fd)


class _Spawner:
    """One daemon thread that forks every child, so that the children's parent-death
    signal fires only when this process dies (a forked copy of this process starts its
    own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], None]] | None = None
        self._owner = 0  # the pid that started the thread

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._jobs is None or self._owner != os.getpid():
                self._jobs = queue.SimpleQueue()
                self._owner = os.getpid()
                threading.Thread(
                    target=_serve, args=(self._jobs,), name="pipekit-spawner", daemon=True
                ).start()
            self._jobs.put(job)


def _serve(jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
    # This thread must never end: its children would get their parent-death signal.
    while True:
        job = jobs.get()
        with contextlib.suppress(BaseException):
            job()


def _parent_death_setter() -> Callable[[int], Callable[[], None]] | None:
    """What makes the ``preexec_fn`` that gives a child the parent-death signal, or None
    where that cannot be done."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        os.close(os.pidfd_open(os.getpid()))
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        prctl.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None

    kill = int(signal.SIGKILL)

    def setter(parent: int) -> Callable[[], None]:
        def set_parent_death_signal() -> None:
            # In the child, between fork and exec: nothing here may take a lock.
            prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before the signal was set
                os.kill(os.getpid(), kill)

        return set_parent_death_signal

    return setter


_SET_PARENT_DEATH = _parent_death_setter()
_SPAWNER = _Spawner()

PARENT_DEATH_SIGNAL = _SET_PARENT_DEATH is not None
"""True where processes are started with a parent-death signal (Linux)."""


async def start_process(argv: list[str], **options: Any) -> RunningProcess:
    """Start ``argv`` with the :class:`subprocess.Popen` ``options`` (descriptors for
    stdin, stdout and stderr, never ``subprocess.PIPE``). On Linux the child dies when
    this process dies (see the module docstring). Like ``trio.lowlevel.open_process``,
    this is not cancelled half-way: the process is started, or the error raised."""
    if _SET_PARENT_DEATH is None:
        return await trio.lowlevel.open_process(argv, **options)
    preexec = _SET_PARENT_DEATH(os.getpid())
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    result: list[PidfdProcess | BaseException] = []

    def job() -> None:
        try:
            popen = subprocess.Popen(argv, preexec_fn=preexec, **options)
        except BaseException as exc:  # handed to the caller
            result.append(exc)
        else:
            try:
                result.append(PidfdProcess(popen, os.pidfd_open(popen.pid)))
            except BaseException as exc:  # out of descriptors: no process without a pidfd
                popen.kill()
                popen.wait()
                result.append(exc)
        token.run_sync_soon(done.set)  # the caller waits: its run cannot be over

    _SPAWNER.submit(job)
    with trio.CancelScope(shield=True):
        await done.wait()
    (outcome,) = result
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
