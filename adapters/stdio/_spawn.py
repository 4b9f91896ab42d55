"""Starting one process in a process group of its own, and ending that group.

A :class:`Child` keeps the tail of the process's stderr, enforces its timeout, kills the
rest of its group when it fails, and knows whether (and how) it failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

import trio

from ._errors import ProcessError, ProcessErrorKind, signal_name
from ._fork import RunningProcess, start_process
from ._spec import ProcessSpec, Redirect

PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ for the pipes we create (capped by the system)
STDERR_TAIL = 16 * 1024
STDERR_SETTLE = 0.5  # seconds an error waits for the stderr of an exited process
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def os_pipe() -> tuple[int, int]:
    """An OS pipe ``(read end, write end)``, enlarged to :data:`PIPE_SIZE` if allowed."""
    r, w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
    return r, w


class Child:
    """One spawned process: its stderr tail, timeout and termination."""

    def __init__(self, spec: ProcessSpec, process: RunningProcess, *, feeds_next: bool) -> None:
        self.spec = spec
        self.process = process
        self.pid = process.pid
        self.stderr_tail = bytearray()
        self.stderr_closed = trio.Event()
        self.timed_out = False
        self.killed_by_us = False
        self.feeds_next = feeds_next
        """True for a process whose stdout is the next one's stdin in a chain."""
        self.output_abandoned = False
        """True once we stopped reading its stdout before the end (a block left early)."""

    @property
    def stderr(self) -> str:
        return self.stderr_tail.decode("utf-8", "replace")

    async def capture_stderr(self, stream: trio.lowlevel.FdStream) -> None:
        try:
            async with stream:
                while True:
                    try:
                        chunk = await stream.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                    if not chunk:
                        return
                    self.stderr_tail += chunk
                    if len(self.stderr_tail) > 2 * STDERR_TAIL:
                        del self.stderr_tail[:-STDERR_TAIL]
        finally:
            self.stderr_closed.set()

    async def settle(self) -> None:
        """Once the process has exited, let the stderr capture read what is left in
        the pipe, so that an error built now carries the whole tail (bounded: a
        grandchild may hold the pipe open)."""
        if self.process.returncode is None:
            return
        with trio.move_on_after(STDERR_SETTLE):
            await self.stderr_closed.wait()

    async def enforce_timeout(self) -> None:
        assert self.spec.timeout is not None
        await trio.sleep(self.spec.timeout)
        if self.process.returncode is None:
            self.timed_out = True
            await self.terminate()

    async def watch(self) -> None:
        """When the process fails, the rest of its group goes with it: descendants
        that still hold its stdout would otherwise hide the failure until they exit."""
        await self.process.wait()
        if self.failed:
            self.signal_group(signal.SIGKILL)

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def group_alive(self) -> bool:
        """Whether any process is left in its group (the leader included)."""
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    async def end_stragglers(self) -> None:
        """The leader has exited and its input has ended: what is left of its group (a
        background job holding its stdout open, say) gets ``kill_grace`` seconds to go,
        then SIGTERM, then SIGKILL after ``kill_grace`` more. Sent to the group only:
        how the leader exited stays what it was."""
        grace = self.spec.kill_grace
        await trio.sleep(grace)
        if not self.group_alive():
            return
        self.signal_group(signal.SIGTERM)
        await trio.sleep(grace)
        self.signal_group(signal.SIGKILL)

    def stop(self, sig: int) -> None:
        """Send ``sig`` to the group on our behalf: the exit it causes is no failure."""
        self.killed_by_us = True
        self.signal_group(sig)

    async def terminate(self) -> None:
        """SIGTERM the group, SIGKILL it after the grace period, reap. Shielded."""
        with trio.CancelScope(shield=True):
            if self.process.returncode is None:
                self.stop(signal.SIGTERM)
                with trio.move_on_after(self.spec.kill_grace):
                    await self.process.wait()
            if self.process.returncode is None:
                self.signal_group(signal.SIGKILL)
                await self.process.wait()
            # Whatever the leader left behind in its group goes too: no orphans.
            self.signal_group(signal.SIGKILL)

    def error(
        self, message: str | None = None, *, kind: ProcessErrorKind | None = None
    ) -> ProcessError:
        """The error describing how this process ended (or ``kind``/``message``)."""
        code = self.process.returncode
        sig = -code if code is not None and code < 0 else None
        exit_code = code if code is not None and code >= 0 else None
        if kind is None:
            kind = ProcessErrorKind.TIMEOUT if self.timed_out else ProcessErrorKind.TERMINATED
        if message is None:
            if kind == ProcessErrorKind.TIMEOUT:
                message = (
                    f"{self.spec.label} (pid {self.pid}) timed out after {self.spec.timeout} s"
                )
            elif sig is not None:
                message = (
                    f"{self.spec.label} (pid {self.pid}) was killed by signal {signal_name(sig)}"
                )
            else:
                message = f"{self.spec.label} (pid {self.pid}) exited with code {exit_code}"
        return ProcessError(
            kind,
            message,
            program=self.spec.argv[0],
            pid=self.pid,
            exit_code=exit_code,
            signal=sig,
            stderr=self.stderr,
        )

    @property
    def failed(self) -> bool:
        code = self.process.returncode
        if code == -signal.SIGPIPE and (self.feeds_next or self.output_abandoned):
            # As in a shell: its reader stopped reading (``seq | head``).
            return self.timed_out
        return self.timed_out or (code is not None and code != 0 and not self.killed_by_us)


async def spawn(
    spec: ProcessSpec,
    nursery: trio.Nursery,
    *,
    stdin: int | None,
    stdout: int | None,
    pass_fds: Sequence[int] = (),
    extra_env: Mapping[str, str] | None = None,
    feeds_next: bool = False,
) -> Child:
    """Start one process in a new session (so a group of its own; on Linux with a
    parent-death signal, see :mod:`._fork`); its stderr capture, timeout and watch run
    in ``nursery``. ``stdin``/``stdout``: descriptors for the
    child, None to inherit ours."""
    err_r: int | None = None
    err_w: int | None
    if spec.stderr == Redirect.PIPE:
        err_r, err_w = os_pipe()
    else:
        err_w = None if spec.stderr == Redirect.INHERIT else subprocess.DEVNULL
    env = dict(os.environ if spec.env is None else spec.env)
    if extra_env:
        env.update(extra_env)
    try:
        process = await start_process(
            list(spec.argv),
            stdin=stdin,
            stdout=stdout,
            stderr=err_w,
            env=env,
            cwd=spec.cwd,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )
    except BaseException as exc:
        if err_r is not None:
            os.close(err_r)
        if not isinstance(exc, OSError | ValueError | TypeError):
            raise
        # OSError: no such program, no permission, bad cwd; ValueError/TypeError: a NUL
        # byte or a non-string in argv or env.
        reason = getattr(exc, "strerror", None) or str(exc)
        if (
            isinstance(exc, OSError)
            and spec.cwd is not None
            and exc.filename == os.fspath(spec.cwd)
        ):
            message = f"cannot start {spec.argv[0]!r} in {os.fspath(spec.cwd)!r}: {reason}"
        else:
            message = f"cannot start {spec.argv[0]!r}: {reason}"
        raise ProcessError(ProcessErrorKind.SPAWN_FAILED, message, program=spec.argv[0]) from exc
    finally:
        if err_r is not None and err_w is not None:
            os.close(err_w)
    child = Child(spec, process, feeds_next=feeds_next)
    if err_r is not None:
        nursery.start_soon(child.capture_stderr, trio.lowlevel.FdStream(err_r))
    else:
        child.stderr_closed.set()
    if spec.timeout is not None:
        nursery.start_soon(child.enforce_timeout)
    nursery.start_soon(child.watch)
    return child
