"""/proc helpers shared by the process tests (Linux only): who our children are, what
state a process is in, what a descriptor points at."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import trio

HANG_GUARD = 10.0  # seconds; only ever reached when something is broken


def proc_stat(pid: int) -> tuple[str, str, int] | None:
    """``(comm, state, ppid)`` of a process, or None if it no longer exists."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    state, ppid = text[text.rindex(")") + 2 :].split()[:2]
    return comm, state, int(ppid)


def children() -> dict[int, tuple[str, str]]:
    """Our child processes (alive or zombie): pid -> (comm, state)."""
    me = os.getpid()
    found: dict[int, tuple[str, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat[2] == me:
                found[int(entry)] = (stat[0], stat[1])
    return found


def only_child() -> int:
    kids = children()
    assert len(kids) == 1, f"expected one child process, found {kids}"
    return next(iter(kids))


def assert_no_children() -> None:
    """No child of ours is left: none running (no orphan-to-be), none a zombie."""
    left = children()
    assert not left, f"child processes left behind (pid: (comm, state)): {left}"


def open_pidfd(pid: int) -> int:
    """A pidfd for ``pid``: it becomes readable when the process exits, also for a
    process that is not our child (which we cannot reap or wait for)."""
    return os.pidfd_open(pid)


async def pidfd_exited(fd: int, hang_guard: float = HANG_GUARD) -> None:
    """Wait until the process of ``fd`` (from :func:`open_pidfd`) has exited."""
    try:
        with trio.fail_after(hang_guard):
            await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


def fd_link(pid: int | str, fd: int | str) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def our_fd_links() -> set[str]:
    """What each of our open descriptors refers to (``pipe:[inode]``, paths...)."""
    links = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the one listdir itself used
            links.add(fd_link("self", fd))
    return links


def blocked_in_pipe_write(pid: int) -> bool:
    stat = proc_stat(pid)
    if stat is None or stat[1] != "S":
        return False
    with open(f"/proc/{pid}/wchan") as f:
        wchan = f.read().strip()
    # "pipe_write" (or "anon_pipe_write"); kernels that hide wchan show "0".
    return "pipe_write" in wchan or wchan in ("", "0")


def bytes_written(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["wchar"])


async def exited(pid: int, hang_guard: float = HANG_GUARD) -> None:
    """Wait until ``pid`` (not necessarily our child) has exited: a process whose last
    descriptors are closed may still be on its way out."""
    try:
        fd = open_pidfd(pid)
    except ProcessLookupError:
        return  # gone already
    await pidfd_exited(fd, hang_guard)


# A Python program whose pipeline runs a command that would sleep for five minutes; the
# sink prints the command's pid (sh becomes sleep: the same pid).
SLEEPING_PIPELINE = """
import pipekit as pk

def show(line):
    print(line, flush=True)

(pk.cmd("sh", "-c", "echo $$; exec sleep 300", mode="lines") | pk.sink(show)).run()
"""


@contextlib.asynccontextmanager
async def program_running_a_command(
    directory: Path, hang_guard: float = HANG_GUARD
) -> AsyncIterator[tuple[trio.Process, int]]:
    """Start :data:`SLEEPING_PIPELINE` as a child of ours and yield ``(its process, the
    command's pid)`` once the command runs (the command is the program's child, not
    ours). Whatever is still alive at the end is killed."""
    script = directory / "sleeping_pipeline.py"
    script.write_text(SLEEPING_PIPELINE)
    program = await trio.lowlevel.open_process(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    command = 0
    try:
        assert program.stdout is not None
        line = b""
        with trio.fail_after(hang_guard):
            while not line.endswith(b"\n"):
                chunk = await program.stdout.receive_some()
                assert chunk, "the program ended before its command ran"
                line += chunk
        command = int(line)
        yield program, command
    finally:
        with contextlib.suppress(ProcessLookupError):
            program.kill()
        if command:
            with contextlib.suppress(ProcessLookupError):
                os.kill(command, signal.SIGKILL)
        await program.wait()
        await program.stdout.aclose()  # type: ignore[union-attr]
