"""The child side of process workers (``pipekit worker TARGET``), driven as the parent will:
a socketpair, the child's end passed as ``PIPEKIT_FD``, ``framed_pipe(initiator=True)``
on ours. Worker targets are small files written to ``tmp_path``."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from pipekit import child
from pipekit.kernel import FramedPipe, ProtocolError, RemoteError, framed_pipe

GUARD = 10  # seconds: a guard against hangs, never used to synchronise
WORKER = [sys.executable, "-m", "pipekit", "worker"]


def write(tmp_path: Path, name: str, source: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


@dataclass
class Child:
    proc: trio.Process
    channel: trio.abc.Stream
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    drained: trio.Event = field(default_factory=trio.Event)
    grew: trio.Event = field(default_factory=trio.Event)

    async def wait(self) -> int:
        """Wait for the exit and for stdout/stderr to reach EOF; return the exit code."""
        code = await self.proc.wait()
        await self.drained.wait()
        return code

    async def wait_for_stdout(self, text: str) -> None:
        """Wait until the child has printed ``text`` on its stdout."""
        while text not in self.stdout:
            if self.drained.is_set():
                raise AssertionError(f"the child exited without printing {text!r}")
            await self.grew.wait()

    @property
    def stdout(self) -> str:
        return self.out.decode()

    @property
    def stderr(self) -> str:
        return self.err.decode()


async def _drain(stream: trio.abc.ReceiveStream, into: bytearray, c: Child) -> None:
    async for chunk in stream:
        into += chunk
        c.grew.set()
        c.grew = trio.Event()


@asynccontextmanager
async def spawn(
    target: str, *args: str, env: dict[str, str] | None = None, fd: bool = True
) -> AsyncIterator[Child]:
    """Start ``pipekit worker TARGET ARGS``; on the way out kill it if it still runs and
    always wait for it. With ``fd=False`` the channel is the child's stdin/stdout."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop(child.FD_ENV, None)
    ours, theirs = socket.socketpair()
    try:
        if fd:
            full_env[child.FD_ENV] = str(theirs.fileno())
            proc = await trio.lowlevel.open_process(
                [*WORKER, target, *args],
                pass_fds=(theirs.fileno(),),
                env=full_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        else:
            proc = await trio.lowlevel.open_process(
                [*WORKER, target, *args],
                env=full_env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
    finally:
        theirs.close()
    assert proc.stdout is not None and proc.stderr is not None
    channel: trio.abc.Stream
    if fd:
        channel = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        c = Child(proc, channel)
        streams = [(proc.stderr, c.err), (proc.stdout, c.out)]
    else:
        ours.close()
        assert proc.stdin is not None
        channel = trio.StapledStream(proc.stdin, proc.stdout)
        c = Child(proc, channel)
        streams = [(proc.stderr, c.err)]
    try:
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:

                async def drain_all() -> None:
                    async with trio.open_nursery() as inner:
                        for stream, into in streams:
                            inner.start_soon(_drain, stream, into, c)
                    c.drained.set()
                    c.grew.set()

                nursery.start_soon(drain_all)
                if not fd:
                    c.out = c.err  # nothing else arrives on our side of stdout
                try:
                    yield c
                finally:
                    with trio.CancelScope(shield=True):
                        if proc.returncode is None:
                            with trio.move_on_after(0.5):  # the test left it running
                                await proc.wait()
                            if proc.returncode is None:
                                proc.kill()
                        await proc.wait()
    finally:
        await trio.aclose_forcefully(channel)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                await trio.aclose_forcefully(stream)


@asynccontextmanager
async def connect(c: Child) -> AsyncIterator[FramedPipe]:
    async with framed_pipe(c.channel, initiator=True, name="parent") as pipe:
        yield pipe


def messages(n: int) -> list[dict[str, Any]]:
    return [{"i": i, "v": "x" * 16} for i in range(n)]


async def echo(pipe: FramedPipe, sent: list[Any]) -> list[Any]:
    """Send ``sent`` in batches and END; return everything received until the child ENDs."""
    received: list[Any] = []

    async def produce() -> None:
        for start in range(0, len(sent), 256):
            await pipe.send_batch(sent[start : start + 256])
        await pipe.end()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async for batch in pipe.batches():
            received.extend(batch)
    return received


# -- stream shapes ---------------------------------------------------------------------

SHAPES = {
    "port": """
        def main(port):
            for msg in port:
                port.send(msg)
        """,
    "port_batches": """
        import trio
        def main(port):
            while True:
                try:
                    batch = port.receive_batch()
                except trio.EndOfChannel:
                    return
                port.send_batch(batch)
        """,
    "generator": """
        def main(messages):
            for msg in messages:
                yield msg
        """,
    "module_api": """
        from pipekit import child
        def main():
            first = child.receive()
            child.send(first)
            batch = []
            for msg in child.messages():
                batch.append(msg)
                if len(batch) == 100:
                    child.send_batch(batch)
                    batch = []
            child.send_batch(batch)
        """,
    "async_pipe": """
        async def main(pipe):
            async for msg in pipe:
                await pipe.send(msg)
        """,
    "async_inp_out": """
        async def main(inp, out):
            async for batch in inp.batches():
                await out.send_batch(batch)
        """,
}


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_each_stream_shape_echoes_10000_messages_in_order(tmp_path: Path, shape: str) -> None:
    target = write(tmp_path, f"{shape}.py", SHAPES[shape])
    sent = messages(10_000)
    async with spawn(target) as c:
        async with connect(c) as pipe:
            assert pipe.peer["name"] == target
            assert await echo(pipe, sent) == sent
        assert await c.wait() == 0, c.stderr
    assert c.stderr == ""


async def test_module_targets_and_named_functions(tmp_path: Path) -> None:
    write(
        tmp_path,
        "echo_mod.py",
        """
        def double(port):
            for msg in port:
                port.send(msg * 2)
        """,
    )
    async with spawn("echo_mod:double", env={"PYTHONPATH": str(tmp_path)}) as c:
        async with connect(c) as pipe:
            assert await echo(pipe, [1, 2, 3]) == [2, 4, 6]
        assert await c.wait() == 0, c.stderr
    async with spawn(str(tmp_path / "echo_mod.py:double")) as c:
        async with connect(c) as pipe:
            assert await echo(pipe, ["a"]) == ["aa"]
        assert await c.wait() == 0, c.stderr


async def test_prints_go_to_stdout_and_never_corrupt_the_channel(tmp_path: Path) -> None:
    target = write(
        tmp_path,
        "chatty.py",
        """
        import os, sys
        def main(port):
            print("start", end="")
            sys.stdout.write("x" * 1_000_000)
            print()
            for msg in port:
                print("got", msg["i"], end="" if msg["i"] % 2 else "\\n")
                port.send(msg)
            sys.stdout.flush()
            os.write(1, b"raw fd 1\\n")
            print("done", end="")
        """,
    )
    sent = messages(10_000)
    async with spawn(target) as c:
        async with connect(c) as pipe:
            assert await echo(pipe, sent) == sent
        assert await c.wait() == 0, c.stderr
    lines = "".join(f"got {i}" + ("" if i % 2 else "\n") for i in range(10_000))
    assert c.stdout == "start" + "x" * 1_000_000 + "\n" + lines + "raw fd 1\ndone"


async def test_without_pipekit_fd_the_channel_is_stdio_and_prints_go_to_stderr(
    tmp_path: Path,
) -> None:
    target = write(
        tmp_path,
        "stdio.py",
        """
        import os, sys
        def main(port):
            print("hello from the worker")
            os.write(1, b"fd 1 too\\n")
            assert sys.stdin.read() == ""
            for msg in port:
                print("got", msg)
                port.send(msg)
        """,
    )
    sent = messages(2_000)
    async with spawn(target, fd=False) as c:
        async with connect(c) as pipe:
            assert await echo(pipe, sent) == sent
        assert await c.wait() == 0, c.stderr
    assert "hello from the worker\nfd 1 too\n" in c.stderr
    assert "got {'i': 1999, 'v': 'xxxxxxxxxxxxxxxx'}" in c.stderr


async def test_a_worker_returning_early_ends_its_output_and_exits_0(tmp_path: Path) -> None:
    target = write(
        tmp_path,
        "head.py",
        """
        def main(port):
            port.send(["first", port.receive()])
        """,
    )
    async with spawn(target) as c:
        async with connect(c) as pipe:
            await pipe.send_batch([1, 2, 3])
            assert [msg async for msg in pipe] == [["first", 1]]
        assert await c.wait() == 0, c.stderr


async def test_a_worker_that_ends_its_output_may_still_consume_its_input(
    tmp_path: Path,
) -> None:
    target = write(
        tmp_path,
        "sink.py",
        """
        def main(port):
            port.send("ready")
            port.end()
            total = sum(port)
            print("total", total)
        """,
    )
    async with spawn(target) as c:
        async with connect(c) as pipe:
            assert await pipe.receive() == "ready"
            with pytest.raises(trio.EndOfChannel):
                await pipe.receive()
            await pipe.send_batch(list(range(1000)))
        assert await c.wait() == 0, c.stderr
    assert c.stdout == "total 499500\n"


async def test_the_parents_error_reaches_the_worker(tmp_path: Path) -> None:
    target = write(
        tmp_path,
        "upstream.py",
        """
        import pipekit as pk
        def main(port):
            try:
                for msg in port:
                    port.send(msg)
            except pk.RemoteError as exc:
                port.send(["upstream failed", exc.kind, exc.message])
        """,
    )
    async with spawn(target) as c:
        async with connect(c) as pipe:
            await pipe.send(1)
            await pipe.fail(KeyError("lost it"))
            assert [msg async for msg in pipe] == [1, ["upstream failed", "KeyError", "'lost it'"]]
        assert await c.wait() == 0, c.stderr


# -- item mode and --init --------------------------------------------------------------


async def test_item_mode_replies_in_order_with_failures_as_values(tmp_path: Path) -> None:
    target = write(
        tmp_path,
        "items.py",
        """
        def square(x):
            if x == 3:
                raise ValueError("three")
            if x == 5:
                return object()
            return x * x
        """,
    )
    requests = [[f"r{i}", i] for i in range(1000)]
    async with spawn(target + ":square", "--mode", "item") as c:
        async with connect(c) as pipe:
            replies = await echo(pipe, requests)
        assert await c.wait() == 0, c.stderr
    assert [r[0] for r in replies] == [f"r{i}" for i in range(1000)]
    for i, (_, ok, value) in enumerate(replies):
        if i not in (3, 5):
            assert ok is True and value == i * i
    _, ok, error = replies[3]
    assert ok is False
    assert error["kind"] == "ValueError" and error["message"] == "three"
    assert 'raise ValueError("three")' in error["traceback"]
    assert "in square" in error["traceback"]
    _, ok, error = replies[5]
    assert ok is False and error["kind"] == "CodecError"


async def test_item_mode_answers_requests_sent_one_at_a_time_each_in_turn(tmp_path: Path) -> None:
    # One request in flight at a time: each reply is the thread's first send since it
    # took its input, the case its thread writes to the socket itself; an unencodable
    # result still becomes an error value, through the trio side's fallback.
    target = write(
        tmp_path,
        "one_at_a_time.py",
        """
        def square(x):
            return object() if x % 10 == 9 else x * x
        """,
    )
    async with spawn(target + ":square", "--mode", "item") as c:
        async with connect(c) as pipe:
            with trio.fail_after(60):
                for i in range(100):
                    await pipe.send([f"r{i}", i])
                    rid, ok, value = await pipe.receive()
                    assert rid == f"r{i}"
                    if i % 10 == 9:
                        assert ok is False and value["kind"] == "CodecError"
                    else:
                        assert ok is True and value == i * i
            await pipe.end()
            assert [m async for m in pipe] == []
        assert await c.wait() == 0, c.stderr


async def test_item_mode_chunks_reply_with_results_and_failed_offsets(tmp_path: Path) -> None:
    target = write(
        tmp_path,
        "chunks.py",
        """
        def square(x):
            if x % 100 == 7:
                raise ValueError(f"bad {x}")
            if x == 250:
                return "y" * (9 << 20)  # larger than a frame
            return x * x
        """,
    )
    requests: list[Any] = [
        ["items", 1000 * k, list(range(100 * k, 100 * k + 100))] for k in range(5)
    ]
    requests.insert(2, ["single", 3])  # the one-item form still works
    async with spawn(target + ":square", "--mode", "item") as c:
        async with connect(c) as pipe:
            replies = await echo(pipe, requests)
        assert await c.wait() == 0, c.stderr
    assert ["single", True, 9] in replies
    got: dict[int, tuple[bool, Any]] = {}
    for reply in replies:
        if reply[0] == "single":
            continue
        tag, first, results, failed = reply
        assert tag == "items" and results
        for offset, value in enumerate(results):
            assert first + offset not in got
            got[first + offset] = (offset not in failed, value)
    ids = sorted(got)
    assert ids == [1000 * k + j for k in range(5) for j in range(100)]
    for k in range(5):
        for j in range(100):
            x = 100 * k + j
            ok, value = got[1000 * k + j]
            if x % 100 == 7:
                assert not ok and value["kind"] == "ValueError" and value["message"] == f"bad {x}"
            elif x == 250:
                assert not ok and value["kind"] == "ProtocolError"
            else:
                assert ok and value == x * x


@pytest.mark.parametrize("mode", ["item", "stream"])
async def test_init_runs_once_before_any_message(tmp_path: Path, mode: str) -> None:
    target = write(
        tmp_path,
        "model.py",
        """
        MODEL = None
        def load():
            global MODEL
            print("loading")
            MODEL = {"offset": 100}
        def predict(x):
            return x + MODEL["offset"]
        def main(port):
            for x in port:
                port.send(predict(x))
        """,
    )
    name = "predict" if mode == "item" else "main"
    async with spawn(f"{target}:{name}", "--mode", mode, "--init", f"{target}:load") as c:
        async with connect(c) as pipe:
            sent = [[i, i] for i in range(500)] if mode == "item" else list(range(500))
            replies = await echo(pipe, sent)
        assert await c.wait() == 0, c.stderr
    expected = [[i, True, i + 100] for i in range(500)] if mode == "item" else list(range(100, 600))
    assert replies == expected
    assert c.stdout == "loading\n"


async def test_a_failing_init_is_an_error_and_exit_code_1(tmp_path: Path) -> None:
    target = write(
        tmp_path,
        "noinit.py",
        """
        def load():
            raise RuntimeError("no model")
        def fn(x):
            return x
        """,
    )
    async with spawn(f"{target}:fn", "--mode", "item", "--init", f"{target}:load") as c:
        async with connect(c) as pipe:
            with pytest.raises(RemoteError) as info:
                await pipe.receive()
        assert await c.wait() == 1
    assert (info.value.kind, info.value.message) == ("RuntimeError", "no model")
    assert "RuntimeError: no model" in c.stderr


# -- failures ----------------------------------------------------------------------------

FAILING = {
    "port": """
        def main(port):
            for msg in port:
                port.send(msg)
                if msg == 2:
                    raise ValueError("boom")
        """,
    "async": """
        async def main(pipe):
            async for msg in pipe:
                await pipe.send(msg)
                if msg == 2:
                    raise ValueError("boom")
        """,
}


@pytest.mark.parametrize("shape", list(FAILING))
async def test_a_raising_worker_sends_error_after_its_messages_and_exits_1(
    tmp_path: Path, shape: str
) -> None:
    target = write(tmp_path, "fails.py", FAILING[shape])
    received: list[Any] = []
    async with spawn(target) as c:
        async with connect(c) as pipe:
            await pipe.send_batch([0, 1, 2, 3])
            with pytest.raises(RemoteError) as info:
                async for msg in pipe:
                    received.append(msg)
        assert await c.wait() == 1
    assert received == [0, 1, 2]
    assert (info.value.kind, info.value.message) == ("ValueError", "boom")
    tb = info.value.details["traceback"]
    assert tb.startswith("Traceback") and 'raise ValueError("boom")' in tb
    assert "ValueError: boom" in c.stderr and "Traceback" in c.stderr


async def test_sys_exit_sets_the_exit_code_and_unencodable_output_fails(
    tmp_path: Path,
) -> None:
    target = write(
        tmp_path,
        "exits.py",
        """
        import sys
        def quits(port):
            port.send("bye")
            sys.exit(3)
        def clean(port):
            sys.exit(0)
        def unencodable(port):
            port.send(object())
        """,
    )
    async with spawn(target + ":quits") as c:
        async with connect(c) as pipe:
            assert await pipe.receive() == "bye"
            with pytest.raises(RemoteError, match="SystemExit"):
                await pipe.receive()
        assert await c.wait() == 3
    async with spawn(target + ":clean") as c:
        async with connect(c) as pipe:
            assert [msg async for msg in pipe] == []
        assert await c.wait() == 0, c.stderr
    async with spawn(target + ":unencodable") as c:
        async with connect(c) as pipe:
            with pytest.raises(RemoteError) as info:
                await pipe.receive()
        assert await c.wait() == 1
    assert info.value.kind == "CodecError"


@pytest.mark.parametrize(
    ("target", "mode", "message"),
    [
        (
            "no_such_module_for_pipekit:main",
            "stream",
            "no module named 'no_such_module_for_pipekit'",
        ),
        ("{dir}/ok.py:nope", "stream", "has no attribute 'nope'"),
        ("{dir}/missing.py", "stream", "no such file"),
        ("{dir}/ok.py:two", "stream", "a stream worker takes (port), (messages) or no argument"),
        ("{dir}/ok.py:two", "item", "an item-mode target takes one argument"),
        ("{dir}/broken.py", "stream", "importing {dir}/broken.py failed: RuntimeError: bad import"),
    ],
)
async def test_a_bad_target_exits_2_with_one_clear_line(
    tmp_path: Path, target: str, mode: str, message: str
) -> None:
    write(tmp_path, "ok.py", "def main(port): pass\ndef two(a, b): pass\n")
    write(tmp_path, "broken.py", "raise RuntimeError('bad import')\n")
    target, message = target.format(dir=tmp_path), message.format(dir=tmp_path)
    async with spawn(target, "--mode", mode) as c:
        with pytest.raises((ProtocolError, trio.BrokenResourceError)):
            async with connect(c):
                pass  # pragma: no cover
        assert await c.wait() == 2
    last = c.stderr.splitlines()[-1]
    assert last.startswith("pipekit worker: ") and message in last, c.stderr


# -- the channel, signals and the parent's death ----------------------------------------

BLOCKED = """
    import time
    def main(port):
        for msg in port:
            port.send(msg)
    def sleeper(port):
        port.send("sleeping")
        time.sleep(60)
    """


async def test_the_child_exits_when_the_parent_closes_the_channel(tmp_path: Path) -> None:
    target = write(tmp_path, "blocked.py", BLOCKED)
    async with spawn(target) as c:
        with trio.CancelScope() as scope:
            async with connect(c) as pipe:
                await pipe.send("ping")
                assert await pipe.receive() == "ping"
                scope.cancel()  # leaves the block without END: a forceful close
                await trio.lowlevel.checkpoint()
        assert await c.wait() == 1
    assert "channel to the parent lost" in c.stderr
    assert "Traceback" not in c.stderr
    # Closing before the handshake: the same, quietly.
    async with spawn(target) as c:
        await c.channel.aclose()
        assert await c.wait() == 1
    assert "Traceback" not in c.stderr


@pytest.mark.parametrize("name", ["main", "sleeper"])
async def test_sigterm_stops_the_worker_promptly(tmp_path: Path, name: str) -> None:
    target = write(tmp_path, "blocked.py", BLOCKED)
    async with spawn(f"{target}:{name}") as c, connect(c) as pipe:
        if name == "main":
            await pipe.send("ping")
        assert await pipe.receive() in ("ping", "sleeping")
        start = trio.current_time()
        c.proc.send_signal(signal.SIGTERM)
        with pytest.raises(trio.BrokenResourceError):
            await pipe.receive()
        assert await c.wait() == child.EXIT_TERMINATED
        assert trio.current_time() - start < 5
    assert "Traceback" not in c.stderr


async def test_sigterm_while_the_target_is_imported_exits_143(tmp_path: Path) -> None:
    target = write(
        tmp_path,
        "slow_import.py",
        """
        import time
        print("importing", flush=True)
        time.sleep(60)
        def main(port): pass
        """,
    )
    async with spawn(target) as c:
        await c.wait_for_stdout("importing")
        c.proc.send_signal(signal.SIGTERM)
        assert await c.wait() == child.EXIT_TERMINATED


MIDDLE = """
import os, subprocess, sys
fd = int(sys.argv[1])
env = {**os.environ, "PIPEKIT_FD": str(fd)}
proc = subprocess.Popen(
    [sys.executable, "-m", "pipekit", "worker", sys.argv[2]], pass_fds=(fd,), env=env
)
print(proc.pid, flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
async def test_the_worker_dies_with_its_parent_process_not_its_spawning_thread(
    tmp_path: Path,
) -> None:
    target = write(tmp_path, "blocked.py", BLOCKED)
    # 1. Spawned from a thread that then ends: the worker must live on.
    ours, theirs = socket.socketpair()
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, child.FD_ENV: str(theirs.fileno())}
    spawner = threading.Thread(
        target=lambda: procs.append(
            subprocess.Popen([*WORKER, target], pass_fds=(theirs.fileno(),), env=env)
        )
    )
    spawner.start()
    spawner.join()
    theirs.close()
    try:
        async with framed_pipe(
            trio.SocketStream(trio.socket.from_stdlib_socket(ours)), initiator=True
        ) as pipe:
            assert await echo(pipe, list(range(100))) == list(range(100))
        assert await trio.to_thread.run_sync(procs[0].wait) == 0
    finally:
        if procs and procs[0].poll() is None:
            procs[0].kill()
            procs[0].wait()

    # 2. The parent process dies while we keep the channel open: the worker stops too.
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36
    libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)  # so that we can reap the orphan
    ours, theirs = socket.socketpair()
    middle_path = write(tmp_path, "middle.py", MIDDLE)
    middle = await trio.lowlevel.open_process(
        [sys.executable, middle_path, str(theirs.fileno()), target],
        pass_fds=(theirs.fileno(),),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    theirs.close()
    worker_pid = 0
    try:
        assert middle.stdout is not None
        worker_pid = int((await middle.stdout.receive_some()).decode())
        async with framed_pipe(
            trio.SocketStream(trio.socket.from_stdlib_socket(ours)), initiator=True
        ) as pipe:
            await pipe.send("ping")
            assert await pipe.receive() == "ping"
            middle.kill()
            await middle.wait()
            with trio.fail_after(GUARD), pytest.raises(trio.BrokenResourceError):
                await pipe.receive()
        _, status = await trio.to_thread.run_sync(os.waitpid, worker_pid, 0)
        worker_pid = 0
        assert os.waitstatus_to_exitcode(status) == 1
    finally:
        if middle.returncode is None:
            middle.kill()
        await middle.wait()
        for stream in (middle.stdin, middle.stdout):
            if stream is not None:
                await trio.aclose_forcefully(stream)
        if worker_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker_pid, signal.SIGKILL)
            await trio.to_thread.run_sync(os.waitpid, worker_pid, 0)
        libc.prctl(pr_set_child_subreaper, 0, 0, 0, 0)


# -- in-process pieces ---------------------------------------------------------------------


def test_the_module_api_refuses_to_run_outside_a_worker() -> None:
    with pytest.raises(RuntimeError, match="no worker stream"):
        child.send(1)
    with pytest.raises(RuntimeError, match="no worker stream"):
        child.messages()


def test_stream_shapes_and_target_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))

    async def a1(pipe: Any) -> None: ...
    async def a2(inp: Any, out: Any) -> None: ...
    def gen(messages: Any) -> Any:
        yield from messages

    def port(port: Any) -> None: ...
    def plain() -> None: ...
    def three(a: Any, b: Any, c: Any) -> None: ...

    assert child.stream_shape(a1) == ("async", 1)
    assert child.stream_shape(a2) == ("async", 2)
    assert child.stream_shape(gen) == ("generator", 1)
    assert child.stream_shape(port) == ("port", 1)
    assert child.stream_shape(plain) == ("plain", 0)
    with pytest.raises(child.TargetError):
        child.stream_shape(three)
    path = write(
        tmp_path, "shared.py", "COUNT = []\ndef main(): COUNT.append(1)\ndef init(): pass\n"
    )
    main = child.load_target(path)
    assert child.load_target(path + ":init").__module__ == main.__module__  # one module
    assert child.load_target("os.path:join") is os.path.join
    for bad in ("", ":x", "os:", "no such:main"):
        with pytest.raises(child.TargetError):
            child.load_target(bad)


class _RecordingLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


@pytest.mark.parametrize(
    ("variable", "value", "held"),
    [
        (None, None, True),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1048576", False),
        ("GLIBC_TUNABLES", "glibc.rtld.optional_static_tls=512", True),
        ("MALLOC_ARENA_MAX", "2", False),
    ],
)
def test_a_worker_holds_freed_memory_unless_the_user_set_the_allocator(
    monkeypatch: pytest.MonkeyPatch, variable: str | None, value: str | None, held: bool
) -> None:
    from pipekit.workers._child import channel

    for name in list(os.environ):
        if name == "GLIBC_TUNABLES" or name.startswith("MALLOC_"):
            monkeypatch.delenv(name)
    if variable is not None:
        monkeypatch.setenv(variable, value or "")
    libc = _RecordingLibc()
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc)
    channel.hold_freed_memory()
    assert bool(libc.calls) is held
