"""The blocking item-mode child (``pipekit/workers/_child/blocking.py``): driven by hand
over a socketpair with the I/O-free Connection as the parent, and through WorkerPool.

Every wait is bounded: sockets time out after GUARD seconds, loops are counted."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

import pipekit as pk
from pipekit.kernel.protocol import (
    HEADER,
    Connection,
    EndReceived,
    ErrorReceived,
    Event,
    FrameType,
    HandshakeComplete,
    MessagesReceived,
    PauseReceived,
    PongReceived,
    encode_frame,
)
from pipekit.workers._child.blocking import RUNTIME_ENV
from pipekit.workers._child.boot import boot_argv
from pipekit.workers._wire import CHUNK, FD_ENV, parse_chunk_reply

GUARD = 20.0
WORKERS = Path(__file__).with_name("blocking_workers.py")


def target(name: str) -> str:
    return f"{WORKERS}:{name}"


class Parent:
    """The parent's end of one worker: a blocking socket and a Connection."""

    def __init__(
        self,
        name: str,
        *,
        init: str | None = None,
        codecs: tuple[str, ...] = ("msgpack",),
        max_frame: int = 8 << 20,
        env: dict[str, str] | None = None,
    ) -> None:
        ours, theirs = socket.socketpair()
        args = [target(name), "--mode", "item"]
        if init is not None:
            args += ["--init", target(init)]
        self.proc = subprocess.Popen(
            boot_argv(sys.executable, args),
            pass_fds=(theirs.fileno(),),
            env={**os.environ, FD_ENV: str(theirs.fileno()), **(env or {})},
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        theirs.close()
        ours.settimeout(GUARD)
        self.sock = ours
        self.conn = Connection(initiator=True, codecs=codecs, max_frame=max_frame)
        self.backlog: list[Event] = []  # events read but not looked at yet
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def send(self, *messages: Any) -> None:
        self.conn.send_many(messages)
        self.flush()

    def raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> list[Event]:
        """The events of one read (an empty list at EOF)."""
        data = self.sock.recv(1 << 20)
        if not data:
            return []
        events = self.conn.receive_data(data)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.flush()  # the worker may have closed its end already
        return events

    def events_until(self, kind: type[Event], limit: int = 10_000) -> list[Event]:
        """Every event up to and including the first of ``kind``."""
        seen: list[Event] = []
        for _ in range(limit):
            events, self.backlog = self.backlog or self.read(), []
            if not events and self.conn.receive_state != "open":
                break
            seen += events
            if any(isinstance(e, kind) for e in events):
                return seen
            if not events and self.sock.recv(1, socket.MSG_PEEK) == b"":
                break
        raise AssertionError(f"no {kind.__name__} in {seen!r:.500}")

    def messages(self, count: int) -> list[Any]:
        """The next ``count`` messages (DATA only)."""
        out: list[Any] = []
        for _ in range(10_000):
            if len(out) >= count:
                break
            events, self.backlog = self.backlog or self.read(), []
            for event in events:
                if isinstance(event, MessagesReceived):
                    out += event.messages
        assert len(out) == count, out
        return out

    def quiet_for(self, seconds: float) -> bool:
        """True if nothing arrives within ``seconds`` (checks an absence, bounded)."""
        ready, _, _ = select.select([self.sock], [], [], seconds)
        return not ready

    def wait(self) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=GUARD)
        self.sock.close()
        return self.proc.returncode, err.decode()


@pytest.fixture(params=["blocking", "trio"])
def parents(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[Parent]]:
    """Workers to drive by hand, on each runtime (the trio one shows the behaviour the
    blocking one must keep)."""
    made: list[Parent] = []
    monkeypatch.setenv(RUNTIME_ENV, request.param)
    try:
        yield made
    finally:
        for p in made:
            if p.proc.poll() is None:
                p.proc.kill()
            p.proc.communicate(timeout=GUARD)
            p.sock.close()


def start(parents: list[Parent], name: str, **options: Any) -> Parent:
    parent = Parent(name, **options)
    parents.append(parent)
    events = parent.events_until(HandshakeComplete)
    done = next(i for i, e in enumerate(events) if isinstance(e, HandshakeComplete))
    parent.backlog = events[done + 1 :]  # what came with the HELLO (an init's ERROR)
    return parent


# -- selection ----------------------------------------------------------------------------


async def test_item_workers_run_on_the_blocking_runtime_by_default() -> None:
    with trio.fail_after(GUARD):
        async with pk.WorkerPool(target("threads"), size=2) as pool:
            assert await pool.map(range(4)) == [1, 1, 1, 1]


async def test_the_trio_runtime_is_kept_when_the_environment_asks_for_it() -> None:
    with trio.fail_after(GUARD):
        async with pk.WorkerPool(target("threads"), size=1, env={RUNTIME_ENV: "trio"}) as pool:
            (count,) = await pool.map([0])
    assert count > 1


# -- the handshake, requests, END ----------------------------------------------------------


def test_the_handshake_chooses_the_first_codec_offered_that_the_worker_has(
    parents: list[Parent],
) -> None:
    parent = start(parents, "square", codecs=("json", "msgpack"))
    assert parent.conn.codec_name == "json"
    parent.send([0, 7])
    assert parent.messages(1) == [[0, True, 49]]


def test_requests_are_answered_in_order_and_end_ends_the_worker(parents: list[Parent]) -> None:
    parent = start(parents, "square")
    parent.send(*([i, i] for i in range(100)))
    assert parent.messages(100) == [[i, True, i * i] for i in range(100)]
    parent.conn.end()
    parent.flush()
    parent.events_until(EndReceived)
    assert parent.wait()[0] == 0


def test_a_chunk_request_gets_a_chunk_reply_with_its_failures(parents: list[Parent]) -> None:
    parent = start(parents, "fail_on_three")
    parent.send([CHUNK, 10, [1, 2, 3, 4]])
    (reply,) = parent.messages(1)
    first, results, failed, _ = parse_chunk_reply(reply)
    assert (first, failed) == (10, [2])
    assert results[:2] + results[3:] == [1, 2, 4]
    assert results[2]["kind"] == "ValueError"


def test_a_failing_item_is_an_error_reply_with_kind_message_and_traceback(
    parents: list[Parent],
) -> None:
    parent = start(parents, "fail_on_three")
    parent.send([5, 3], [6, 4])
    (rid, ok, error), after = parent.messages(2)
    assert (rid, ok, error["kind"], error["message"]) == (
        5,
        False,
        "ValueError",
        "three is not allowed",
    )
    assert "fail_on_three" in error["traceback"]
    assert after == [6, True, 4]


# -- init ----------------------------------------------------------------------------------


def test_init_runs_once_before_the_first_item(parents: list[Parent]) -> None:
    parent = start(parents, "state", init="setup")
    parent.send([0, None], [1, None])
    assert parent.messages(2) == [[0, True, ["ready"]], [1, True, ["ready"]]]


def test_a_failing_init_is_reported_as_error_and_exit_code_1(parents: list[Parent]) -> None:
    parent = start(parents, "state", init="bad_init")
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        parent.send([0, None])  # a worker that ran init at start may have closed already
    (event,) = [e for e in parent.events_until(ErrorReceived) if isinstance(e, ErrorReceived)]
    assert (event.kind, event.message) == ("RuntimeError", "init broke")
    code, err = parent.wait()
    assert code == 1 and "init broke" in err


def test_sys_exit_in_the_function_exits_with_its_code(parents: list[Parent]) -> None:
    parent = start(parents, "exits")
    parent.send([0, 3])
    parent.events_until(ErrorReceived)
    assert parent.wait()[0] == 3


# -- results that cannot be sent ------------------------------------------------------------


def test_an_unencodable_result_is_an_error_reply_and_the_worker_goes_on(
    parents: list[Parent],
) -> None:
    parent = start(parents, "unencodable")
    parent.send([0, 0], [1, 1], [2, 2])
    first, bad, last = parent.messages(3)
    assert first == [0, True, 0] and last == [2, True, 2]
    assert bad[:2] == [1, False] and bad[2]["kind"] == "CodecError"


def test_a_result_over_the_parents_max_frame_is_an_error_reply(parents: list[Parent]) -> None:
    parent = start(parents, "big", max_frame=64 << 10)
    parent.send([0, 10], [1, 100_000], [2, 10])
    first, bad, last = parent.messages(3)
    assert first == [0, True, "y" * 10] and last == [2, True, "y" * 10]
    assert bad[:2] == [1, False] and bad[2]["kind"] == "ProtocolError"


def test_a_frame_over_the_workers_max_frame_is_refused_and_the_worker_exits(
    parents: list[Parent],
) -> None:
    parent = start(parents, "square")
    parent.raw(HEADER.pack(64 << 20, 1, 0))
    (event,) = [e for e in parent.events_until(ErrorReceived) if isinstance(e, ErrorReceived)]
    assert event.kind == "oversize"
    code, err = parent.wait()
    assert code == 1 and "channel to the parent lost" in err


# -- END and ERROR from the parent ----------------------------------------------------------


def test_an_error_from_the_parent_fails_the_worker(parents: list[Parent]) -> None:
    parent = start(parents, "square")
    parent.send([0, 2])
    assert parent.messages(1) == [[0, True, 4]]
    parent.conn.fail("Boom", "the parent gave up")
    parent.flush()
    (event,) = [e for e in parent.events_until(ErrorReceived) if isinstance(e, ErrorReceived)]
    assert event.message.endswith("the parent gave up")
    assert parent.wait()[0] == 1


def test_a_closed_channel_without_end_stops_the_worker(parents: list[Parent]) -> None:
    parent = start(parents, "square")
    parent.sock.shutdown(socket.SHUT_WR)
    code, err = parent.wait()
    assert code == 1 and "channel to the parent lost" in err


# -- flow control ----------------------------------------------------------------------------


def test_pause_from_the_parent_holds_replies_until_resume(parents: list[Parent]) -> None:
    parent = start(parents, "square")
    parent.raw(encode_frame(FrameType.PAUSE))
    parent.send(*([i, i] for i in range(10)))
    parent.conn.ping(b"x")
    parent.flush()
    events = parent.events_until(PongReceived)
    assert not [e for e in events if isinstance(e, MessagesReceived)]
    assert parent.quiet_for(0.3)
    parent.raw(encode_frame(FrameType.RESUME))
    assert parent.messages(10) == [[i, True, i * i] for i in range(10)]


@pytest.mark.parametrize("parents", ["blocking"], indirect=True)  # the trio runtime's
def test_a_paused_worker_stops_taking_requests_and_pauses_the_parent(  # lanes take on
    parents: list[Parent],
) -> None:
    parent = start(parents, "big")
    parent.raw(encode_frame(FrameType.PAUSE))
    parent.send([0, 2_000_000])  # more than its send buffer, held: it stops taking
    count = 9000  # beyond the worker's high water (8192)
    parent.send(*([i, 1] for i in range(1, count + 1)))
    parent.events_until(PauseReceived)
    parent.raw(encode_frame(FrameType.RESUME))
    replies = parent.messages(count + 1)
    assert [r[0] for r in replies] == list(range(count + 1))
    assert replies[0][2] == "y" * 2_000_000


# -- stderr and the parent's death ------------------------------------------------------------


def test_what_the_function_prints_to_stderr_reaches_the_parent(parents: list[Parent]) -> None:
    parent = start(parents, "shout")
    parent.send([0, 5])
    assert parent.messages(1) == [[0, True, 5]]
    parent.conn.end()
    parent.flush()
    code, err = parent.wait()
    assert code == 0 and "item 5" in err


MIDDLE = textwrap.dedent(
    """
    import os, subprocess, sys
    fd = int(sys.argv[1])
    env = {**os.environ, FD_ENV: str(fd)}
    proc = subprocess.Popen(sys.argv[2:], pass_fds=(fd,), env=env)
    print(proc.pid, flush=True)
    sys.stdin.read()
    """
).replace("FD_ENV", repr(FD_ENV))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_the_worker_stops_when_its_parent_process_dies() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: the orphan is ours to reap
    ours, theirs = socket.socketpair()
    argv = boot_argv(sys.executable, [target("square"), "--mode", "item"])
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE, str(theirs.fileno()), *argv],
        pass_fds=(theirs.fileno(),),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    theirs.close()
    assert middle.stdout is not None
    pid = int(middle.stdout.readline())
    try:
        ours.settimeout(GUARD)
        conn = Connection(initiator=True)
        ours.sendall(conn.data_to_send())
        conn.receive_data(ours.recv(1 << 16))  # its HELLO: it is running
        middle.kill()
        middle.wait(timeout=GUARD)
        psutil.Process(pid).wait(timeout=GUARD)
    finally:
        if psutil.pid_exists(pid):
            with_signal = getattr(signal, "SIGKILL", signal.SIGTERM)
            try:
                os.kill(pid, with_signal)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        ours.close()
        assert middle.stdin is not None
        middle.stdin.close()
        middle.stdout.close()
        libc.prctl(36, 0, 0, 0, 0)  # no longer a subreaper: later tests' orphans are not ours


def test_without_a_channel_socket_frames_go_over_stdin_and_stdout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(FD_ENV, raising=False)
    proc = subprocess.Popen(
        boot_argv(sys.executable, [target("shout"), "--mode", "item"]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    conn = Connection(initiator=True)
    events: list[Event] = []
    proc.stdin.write(conn.data_to_send())
    proc.stdin.flush()
    for _ in range(100):
        if any(isinstance(e, HandshakeComplete) for e in events):
            break
        events += conn.receive_data(os.read(proc.stdout.fileno(), 1 << 16))
    conn.send_many([[0, "a"], [1, "b"]])
    conn.end()
    out, err = proc.communicate(conn.data_to_send(), timeout=GUARD)
    events += conn.receive_data(out)
    replies = [m for e in events if isinstance(e, MessagesReceived) for m in e.messages]
    assert replies == [[0, True, "a"], [1, True, "b"]]
    assert isinstance(events[-1], EndReceived)
    assert proc.returncode == 0 and b"item a" in err
