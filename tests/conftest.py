"""Shared fixtures for the test-suite (pipes, framed pipes, the kernel, TLS contexts).

Fixtures that hand out helpers return plain callables so that test modules never import
this file (it would clash with other ``conftest`` modules under ``mypy``).
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from typing import Any

import psutil
import pytest
import trio
import trio.testing
import trustme

from pipekit.kernel import FramedPipe, framed_pipe

StreamPair = tuple[trio.abc.Stream, trio.abc.Stream]


# -- system programs -------------------------------------------------------------------

REQUIRE_PROGRAMS_ENV = "PIPEKIT_REQUIRE_PROGRAMS"
"""Set (to anything) by ``.ci/run``, which installs every program the tests use: there a
missing program fails its tests instead of skipping them."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(program, package): the test runs a system program; without it the test is "
        "skipped with the command that installs it",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(name="needs"):
        program, package = mark.args
        if shutil.which(program) is None:
            reason = f"needs {program}: apt-get install {package}"
            if os.environ.get(REQUIRE_PROGRAMS_ENV):
                pytest.fail(f"{reason} (.ci/run installs it; it is missing)")
            pytest.skip(reason)


FramedPair = tuple[FramedPipe, FramedPipe]


# -- transports ------------------------------------------------------------------------


def make_socket_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected pair of real (AF_UNIX) sockets, each wrapped in a trio SocketStream."""
    a, b = socket.socketpair()
    return (
        trio.SocketStream(trio.socket.from_stdlib_socket(a)),
        trio.SocketStream(trio.socket.from_stdlib_socket(b)),
    )


def make_stream_pair(kind: str) -> StreamPair:
    if kind == "memory":
        return trio.testing.memory_stream_pair()
    if kind == "socket":
        return make_socket_stream_pair()
    raise ValueError(kind)


@pytest.fixture
def socket_pair_factory() -> Callable[[], tuple[trio.SocketStream, trio.SocketStream]]:
    """Makes socketpairs of SocketStreams (call it where the fds should be created)."""
    return make_socket_stream_pair


@pytest.fixture
async def socket_stream_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    a, b = make_socket_stream_pair()
    try:
        yield a, b
    finally:
        await trio.aclose_forcefully(a)
        await trio.aclose_forcefully(b)


@pytest.fixture(params=["memory", "socket"])
async def stream_pair(request: pytest.FixtureRequest) -> AsyncIterator[StreamPair]:
    """The two ends of a byte stream: trio's in-memory pair, then a real socketpair."""
    a, b = make_stream_pair(str(request.param))
    try:
        yield a, b
    finally:
        await trio.aclose_forcefully(a)
        await trio.aclose_forcefully(b)


# -- framed pipes ----------------------------------------------------------------------


@asynccontextmanager
async def open_framed_pair(
    initiator_stream: trio.abc.Stream,
    acceptor_stream: trio.abc.Stream,
    *,
    initiator: dict[str, Any] | None = None,
    acceptor: dict[str, Any] | None = None,
) -> AsyncIterator[FramedPair]:
    """Open ``framed_pipe`` on both ends concurrently (the handshake needs both) and
    yield ``(initiator_pipe, acceptor_pipe)``. Leaving the block cancels both pipes'
    scopes (a forceful close), so a test whose consumer never reads cannot hang here;
    tests that want a graceful END call ``end()`` themselves."""
    pipes: dict[str, FramedPipe] = {}
    both_open = trio.Event()
    done = trio.Event()

    async def run(stream: trio.abc.Stream, is_initiator: bool, kw: dict[str, Any]) -> None:
        async with framed_pipe(stream, initiator=is_initiator, **kw) as pipe:
            pipes["initiator" if is_initiator else "acceptor"] = pipe
            if len(pipes) == 2:
                both_open.set()
            await done.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, initiator_stream, True, initiator or {})
        nursery.start_soon(run, acceptor_stream, False, acceptor or {})
        await both_open.wait()
        try:
            yield pipes["initiator"], pipes["acceptor"]
        finally:
            nursery.cancel_scope.cancel()


@pytest.fixture
def framed_pair() -> Callable[..., AbstractAsyncContextManager[FramedPair]]:
    """``async with framed_pair(s1, s2, initiator={...}, acceptor={...}) as (a, b)``."""
    return open_framed_pair


# -- resources -------------------------------------------------------------------------


def current_rss() -> int:
    """Resident set size of this process, in bytes (after a full collection)."""
    gc.collect()
    return int(psutil.Process().memory_info().rss)


@pytest.fixture
def rss() -> Callable[[], int]:
    return current_rss


def trio_tasks() -> set[trio.lowlevel.Task]:
    """Every task of the current trio run, found by walking from the root task."""
    found: set[trio.lowlevel.Task] = set()
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None or task in found:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@contextmanager
def _no_leaks() -> Iterator[None]:
    tasks, threads, fds = trio_tasks(), set(threading.enumerate()), open_fds()
    yield
    new_tasks = trio_tasks() - tasks
    # trio keeps idle worker threads of trio.to_thread for reuse ("Trio thread N" while
    # idle; a thread running a job carries the job's name): those are not leaks.
    new_threads = {
        t for t in set(threading.enumerate()) - threads if not t.name.startswith("Trio thread ")
    }
    new_fds = open_fds() - fds
    assert not new_tasks, f"tasks left running: {sorted(t.name for t in new_tasks)}"
    assert not new_threads, f"threads left running: {new_threads}"
    assert not new_fds, f"file descriptors left open: {sorted(new_fds)}"


@pytest.fixture
def no_leaks() -> Callable[[], AbstractContextManager[None]]:
    """``with no_leaks(): ...`` fails if the block leaves a trio task, a thread or a file
    descriptor behind that was not there when it started."""
    return _no_leaks


# -- TLS: one test CA per session, a server certificate for 127.0.0.1 and localhost -----


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    return context
