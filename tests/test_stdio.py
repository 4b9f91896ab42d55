"""Tests of the stdio adapter (``pipekit.adapters.stdio``) with real processes.

Every test starts real executables (``cat``, ``sh``, ``jq``, ``sort``, a small Python
child speaking pipekit/1) through :func:`open_process`, :func:`open_chain` or
:class:`ProcessModule`. Process state is read from ``/proc`` (children found by their
parent pid, zombies by state ``Z``, pipes by their ``pipe:[inode]`` links), and the
death of a process we cannot reap (a grandchild) is awaited on a pidfd. Waiting for an
outside event (a process blocking in ``write``) is a condition loop under a deadline,
never a fixed sleep; timeouts only guard against hangs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from proc_helpers import (
    assert_no_children,
    blocked_in_pipe_write,
    bytes_written,
    children,
    fd_link,
    open_pidfd,
    our_fd_links,
    pidfd_exited,
    proc_stat,
)

from pipekit.adapters.stdio import (
    PIPE_SIZE,
    STDERR_TAIL,
    ProcessError,
    ProcessModule,
    ProcessPipe,
    ProcessSpec,
    Redirect,
    StdioMode,
    StdioModeName,
    open_chain,
    open_process,
)
from pipekit.kernel import ModuleError, Pipe, ProtocolError, open_kernel

HANG_GUARD = 10.0  # seconds; only ever reached when something is broken
MISSING_PROGRAM = "pipekit-test-no-such-program"


# --- /proc helpers --------------------------------------------------------------------


@contextmanager
def no_children_left() -> Iterator[None]:
    assert_no_children()
    yield
    assert_no_children()


async def collect(pipe: ProcessPipe) -> list[Any]:
    got: list[Any] = []
    async for batch in pipe.batches():
        got.extend(batch)
    return got


async def feed_and_collect(pipe: ProcessPipe, messages: Sequence[Any]) -> list[Any]:
    """Send ``messages`` (then END) while reading everything the process outputs."""
    got: list[Any] = []

    async def feed() -> None:
        for i in range(0, len(messages), 100):
            await pipe.send_batch(messages[i : i + 100])
        await pipe.end()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        got = await collect(pipe)
    return got


# A child that speaks pipekit/1 as the accepting side and echoes every message back:
# on the socket whose descriptor is in $PIPEKIT_FD, else on stdin/stdout. With the
# socket it also prints noise (partial lines, a big unterminated blob) to its stdout.
ECHO_CHILD = """
import os, socket, sys
import trio
from pipekit.kernel import framed_pipe

async def main() -> None:
    fd = os.environ.get("PIPEKIT_FD")
    if fd is None:
        stream = trio.StapledStream(
            trio.lowlevel.FdStream(os.dup(1)), trio.lowlevel.FdStream(os.dup(0))
        )
        noisy = False
    else:
        sock = socket.socket(fileno=int(fd))
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        noisy = True
    async with framed_pipe(stream, initiator=False, name="echo") as pipe:
        async for batch in pipe.batches():
            if noisy:
                print("noise without newline", end="", flush=True)
                sys.stdout.write("#" * 70000)
                print(" NOISE-LINE", flush=True)
            await pipe.send_batch(batch)

trio.run(main)
"""


# A child that sends COUNT messages and END as fast as it can and exits at once, before
# its reader can have taken them: the parent's PAUSE/RESUME then meet a closed pipe.
BURST_CHILD = """
import os, sys
import trio
from pipekit.kernel import framed_pipe

async def main() -> None:
    stream = trio.StapledStream(
        trio.lowlevel.FdStream(os.dup(1)), trio.lowlevel.FdStream(os.dup(0))
    )
    count = int(sys.argv[1])
    async with framed_pipe(stream, initiator=False, name="burst", close_timeout=0) as pipe:
        for start in range(0, count, 1000):
            await pipe.send_batch(list(range(start, start + 1000)))
        await pipe.end()
    os._exit(0)

trio.run(main)
"""


async def test_a_child_that_ends_and_exits_at_once_loses_nothing_to_a_slow_reader(
    tmp_path: Path,
) -> None:
    script = tmp_path / "burst.py"
    script.write_text(BURST_CHILD)
    count = 50_000
    for _ in range(3):
        got: list[int] = []
        spec = ProcessSpec(
            (sys.executable, str(script), str(count)),
            mode="frames",
            env=env_without_channel(),
            framed_options={"high_water": 64},
        )
        with trio.fail_after(HANG_GUARD):
            async with open_process(spec) as child:
                await child.end()
                while True:
                    try:
                        got.extend(await child.receive_batch(16))
                    except trio.EndOfChannel:
                        break
                    await trio.lowlevel.checkpoint()  # a slow reader: others run
        assert got == list(range(count))


@pytest.fixture
def echo_child(tmp_path: Path) -> list[str]:
    path = tmp_path / "echo_child.py"
    path.write_text(ECHO_CHILD)
    return [sys.executable, str(path)]


def env_without_channel() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PIPEKIT_FD"}


# --- specs ----------------------------------------------------------------------------


def test_spec_rejects_an_empty_argv_a_bad_mode_and_a_bad_channel() -> None:
    with pytest.raises(ValueError, match="argv"):
        ProcessSpec(())
    with pytest.raises(ValueError, match="mode"):
        ProcessSpec(("cat",), mode="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stdout"):
        ProcessSpec(("cat",), stdout="file")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channel"):
        ProcessSpec(("cat",), mode="lines", channel="PIPEKIT_FD")
    with pytest.raises(ValueError, match="channel"):
        ProcessSpec(("cat",), mode="frames", channel="")
    with pytest.raises(ValueError, match="max_line"):
        ProcessSpec(("cat",), max_line=0)


def test_spec_takes_the_mode_and_redirections_as_strings_and_keeps_enums() -> None:
    spec = ProcessSpec(("cat",), mode="jsonl", stdin="null", stderr=Redirect.INHERIT)
    assert spec.mode is StdioMode.JSONL
    assert [str(mode) for mode in StdioMode] == ["frames", "lines", "jsonl", "bytes"]
    assert (spec.stdin, spec.stdout, spec.stderr) == (
        Redirect.NULL,
        Redirect.PIPE,
        Redirect.INHERIT,
    )
    assert all(isinstance(r, Redirect) for r in (spec.stdin, spec.stdout, spec.stderr))


# --- modes ----------------------------------------------------------------------------


async def test_lines_mode_sends_and_receives_one_str_per_line() -> None:
    lines = [f"line {i} ünïcode" for i in range(5000)]
    with no_children_left():
        async with open_process(["cat"], mode="lines") as cat:
            got = await feed_and_collect(cat, lines)
    assert got == lines


async def test_raw_mode_stats_count_each_message_received_one_at_a_time_once() -> None:
    async with open_process(["seq", "1", "500"], mode="lines", stdin="null") as seq:
        got = []
        with contextlib.suppress(trio.EndOfChannel):
            while True:
                got.append(await seq.receive())
        assert got == [str(i) for i in range(1, 501)]
        assert seq.stats.messages_received == 500


async def test_lines_mode_keeps_undecodable_bytes_as_surrogates() -> None:
    async with open_process(["cat"], mode="lines") as cat:
        got = await feed_and_collect(cat, ["caf\udce9", b"raw \xff bytes"])
    assert got == ["caf\udce9", "raw \udcff bytes"]
    assert got[0].encode("utf-8", "surrogateescape") == b"caf\xe9"


async def test_lines_mode_delivers_a_last_line_without_newline() -> None:
    async with open_process(["printf", "a\\nb\\nno newline"], mode="lines", stdin="null") as p:
        assert await collect(p) == ["a", "b", "no newline"]


@pytest.mark.needs("jq", "jq")
async def test_jsonl_mode_sends_and_receives_json_values() -> None:
    values: list[Any] = [{"a": i, "b": [1, "x", None]} for i in range(1000)]
    values += [1.5, "text", None, True, []]
    async with open_process(["jq", "-c", "."], mode="jsonl") as jq:
        got = await feed_and_collect(jq, values)
    assert got == values


async def test_a_long_line_written_in_many_pieces_arrives_whole() -> None:
    # One 3 MiB line, written in 3,000 pieces of 1 KiB, then a short one.
    script = (
        "import sys\n"
        "for _ in range(3000): sys.stdout.write('x' * 1024); sys.stdout.flush()\n"
        "print(); print('short')\n"
    )
    async with open_process([sys.executable, "-c", script], mode="lines", stdin="null") as p:
        got = await collect(p)
    assert [len(line) for line in got] == [3000 * 1024, 5]


@pytest.mark.parametrize("mode", ["lines", "jsonl"])
async def test_a_line_longer_than_max_line_is_oversize_naming_the_process(
    mode: StdioModeName,
) -> None:
    # The process writes 64 KiB and never a newline (and then waits): the reader gives up
    # once max_line bytes are in, without waiting for the line to end.
    script = "import sys, time; sys.stdout.write('7' * 65536); sys.stdout.flush(); time.sleep(60)"
    with pytest.raises(ProtocolError) as info:
        async with open_process(
            [sys.executable, "-c", script], mode=mode, stdin="null", max_line=4096
        ) as p:
            await collect(p)
    err = info.value
    assert err.kind == "oversize"
    assert "longer than 4096 bytes (max_line)" in str(err)
    pid = getattr(err, "pid", None)
    assert isinstance(pid, int)
    assert str(err).startswith(f"{os.path.basename(sys.executable)} (pid {pid}):")
    assert_no_children()


async def test_lines_before_an_oversize_line_are_delivered_before_the_error() -> None:
    script = (
        "import sys, time\n"
        "sys.stdout.write('first\\n' + '7' * 65536); sys.stdout.flush(); time.sleep(60)\n"
    )
    got: list[Any] = []
    with pytest.raises(ProtocolError) as info:
        async with open_process(
            [sys.executable, "-c", script], mode="lines", stdin="null", max_line=4096
        ) as p:
            while True:
                got.extend(await p.receive_batch())
    assert got == ["first"]
    assert info.value.kind == "oversize"
    assert_no_children()


async def test_a_line_of_exactly_max_line_bytes_is_accepted() -> None:
    script = "print('y' * 100); print('z' * 100, end='')"
    async with open_process(
        [sys.executable, "-c", script], mode="lines", stdin="null", max_line=100
    ) as p:
        assert await collect(p) == ["y" * 100, "z" * 100]
    script = "print('\"' + 'j' * 98 + '\"')"  # a JSON string of exactly 100 bytes
    async with open_process(
        [sys.executable, "-c", script], mode="jsonl", stdin="null", max_line=100
    ) as p:
        assert await collect(p) == ["j" * 98]


async def test_bytes_mode_passes_bytes_through_unchanged() -> None:
    data = os.urandom(3 * PIPE_SIZE + 12345)  # more than both pipe buffers hold
    chunks = [data[i : i + 50_000] for i in range(0, len(data), 50_000)]
    async with open_process(["cat"], mode="bytes") as cat:
        got = await feed_and_collect(cat, chunks)
    assert all(isinstance(c, bytes) for c in got)
    assert b"".join(got) == data


async def test_frames_mode_speaks_pipekit1_over_stdin_and_stdout(echo_child: list[str]) -> None:
    messages: list[Any] = [{"n": i, "blob": b"\x00\xff" * i} for i in range(300)]
    with no_children_left():
        async with open_process(echo_child, mode="frames", env=env_without_channel()) as child:
            got = await feed_and_collect(child, messages)
            assert child.stats.messages_received == len(messages)
    assert got == messages


async def test_channel_keeps_frames_off_stdout_so_prints_are_harmless(
    echo_child: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    messages: list[Any] = [{"n": i, "text": "é" * i} for i in range(200)]
    spec = ProcessSpec(tuple(echo_child), mode="frames", channel="PIPEKIT_FD", stdout="inherit")
    async with open_process(spec) as child:
        got = []
        for m in messages:  # one at a time, so the child prints once per message
            await child.send(m)
            got.append(await child.receive())
    assert got == messages
    # What the child printed went to its stdout (ours), not into the channel.
    assert capfd.readouterr().out.count("NOISE-LINE") == len(messages)


# --- lifetime -------------------------------------------------------------------------


async def test_stream_ends_when_stdout_closes_and_the_process_exits_with_zero() -> None:
    async with open_process(["echo", "only"], mode="lines", stdin="null") as p:
        assert await p.receive() == "only"
        with pytest.raises(trio.EndOfChannel):
            await p.receive()
        assert p.returncode == 0
        assert not p.is_alive()


async def test_normal_exit_ends_the_input_and_waits_for_the_process() -> None:
    async with open_process(["sort"], mode="lines") as sort:
        await sort.send_batch(["b", "c", "a"])
    # Leaving the block ENDed sort's input and reaped it.
    assert sort.returncode == 0
    assert sort.pid not in children()


async def test_process_that_stopped_reading_makes_send_raise_broken() -> None:
    async with open_process(["true"], mode="lines") as p:
        assert await p.wait() == 0
        with pytest.raises(trio.BrokenResourceError, match="stopped reading"):
            await p.send("nobody reads this")


# --- chains ---------------------------------------------------------------------------


async def test_chain_joins_adjacent_processes_with_an_os_pipe() -> None:
    specs = [ProcessSpec(("cat",), mode="lines"), ProcessSpec(("sort",), mode="lines")]
    async with open_chain(specs) as chain:
        first, second = chain.pids
        between = fd_link(first, 1)
        assert between.startswith("pipe:")
        assert fd_link(second, 0) == between
        # ... and that pipe is not one of ours: the bytes never pass through Python.
        assert between not in our_fd_links()
        assert await feed_and_collect(chain, ["c", "a", "b"]) == ["a", "b", "c"]


@pytest.mark.needs("jq", "jq")
async def test_chain_encodes_with_the_first_mode_and_decodes_with_the_last() -> None:
    specs = [
        ProcessSpec(("jq", "-c", ".n * 2"), mode="jsonl"),
        ProcessSpec(("sort", "-n"), mode="lines"),
    ]
    async with open_chain(specs) as chain:
        got = await feed_and_collect(chain, [{"n": 3}, {"n": 1}, {"n": 2}])
    assert got == ["2", "4", "6"]


async def test_chain_refuses_frames_mode() -> None:
    specs = [ProcessSpec(("cat",), mode="frames"), ProcessSpec(("cat",), mode="lines")]
    with pytest.raises(ValueError, match="raw-mode"):
        async with open_chain(specs):
            pass  # pragma: no cover


async def test_chain_upstream_killed_by_sigpipe_is_not_a_failure() -> None:
    # As in a shell: ``seq`` dies of SIGPIPE once ``head`` has what it needs.
    specs = [
        ProcessSpec(("seq", "1", "10000000"), mode="lines", stdin="null"),
        ProcessSpec(("head", "-n", "2"), mode="lines"),
    ]
    async with open_chain(specs) as chain:
        assert await collect(chain) == ["1", "2"]
        assert await chain.wait() == 0
        seq = chain._processes.first
        assert seq.process.returncode == -signal.SIGPIPE


# --- failures -------------------------------------------------------------------------


async def test_missing_program_is_spawn_failed_naming_the_program() -> None:
    with pytest.raises(ProcessError) as info:
        async with open_process([MISSING_PROGRAM]):
            pass  # pragma: no cover
    err = info.value
    assert err.kind == "spawn_failed"
    assert err.program == MISSING_PROGRAM
    assert MISSING_PROGRAM in str(err)
    assert err.pid is None and err.exit_code is None
    assert_no_children()


async def test_non_zero_exit_is_terminated_with_exit_code_and_stderr_tail() -> None:
    script = "echo partial output; echo 'something went wrong' >&2; exit 3"
    with pytest.raises(ProcessError) as info:
        async with open_process(["sh", "-c", script], mode="lines", stdin="null") as p:
            assert await p.receive() == "partial output"
            await p.receive()
    err = info.value
    assert (err.kind, err.exit_code, err.signal) == ("terminated", 3, None)
    assert err.program == "sh"
    assert err.stderr == "something went wrong\n"
    assert "exited with code 3" in str(err)
    assert "something went wrong" in str(err)


async def test_stderr_tail_is_complete_even_when_the_process_exits_at_once() -> None:
    # The error waits for the stderr capture to drain: the tail is never missing.
    for _ in range(20):
        with pytest.raises(ProcessError) as info:
            async with open_process(["sh", "-c", "echo last words >&2; exit 1"], stdin="null"):
                pass
        assert info.value.stderr == "last words\n"


async def test_stderr_tail_is_bounded_and_keeps_the_end() -> None:
    script = "head -c 300000 /dev/zero | tr '\\0' a >&2; echo THE END >&2; exit 1"
    with pytest.raises(ProcessError) as info:
        async with open_process(["sh", "-c", script], stdin="null") as p:
            await p.wait()
    tail = info.value.stderr
    assert STDERR_TAIL <= len(tail) <= 2 * STDERR_TAIL
    assert tail.endswith("aaaaTHE END\n")


async def test_death_by_signal_sets_signal_and_no_exit_code() -> None:
    with pytest.raises(ProcessError) as info:
        async with open_process(["sh", "-c", "kill -KILL $$"], stdin="null") as p:
            await p.receive()
    err = info.value
    assert (err.kind, err.signal, err.exit_code) == ("terminated", signal.SIGKILL, None)
    assert "killed by signal SIGKILL" in str(err)


async def test_timeout_kills_the_process_with_kind_timeout() -> None:
    start = trio.current_time()
    with trio.fail_after(HANG_GUARD), pytest.raises(ProcessError) as info:
        async with open_process(["sleep", "60"], stdin="null", timeout=0.2) as p:
            await p.receive()
    err = info.value
    assert err.kind == "timeout"
    assert err.pid is not None and "timed out after 0.2 s" in str(err)
    assert trio.current_time() - start >= 0.2
    assert_no_children()


@pytest.mark.parametrize(
    ("junk", "reason"),
    [
        (r"\377\377\377\377garbage", "reserved flag"),
        (r"\000\000\000\004\000\077\000\000abcd", "unknown frame type 63"),
        (r"\000\000\000\000\000\001\000\000", "DATA before the handshake"),
    ],
    ids=["reserved-flags", "unknown-type", "data-before-hello"],
)
async def test_garbage_on_the_framed_channel_is_a_protocol_error_naming_the_child(
    junk: str, reason: str
) -> None:
    # ``junk`` is printf notation: the first 8 bytes the child writes are a bad header.
    script = f"echo \"oops from $$\" >&2; printf '{junk}'"
    with pytest.raises(ProtocolError) as info:
        async with open_process(["sh", "-c", script], mode="frames"):
            pass  # pragma: no cover
    err = info.value
    text = str(err)
    assert err.kind == "malformed"
    assert reason in text
    pid = getattr(err, "pid", None)
    assert isinstance(pid, int)
    assert text.startswith(f"sh (pid {pid}):")
    assert f"--- stderr (tail) ---\noops from {pid}" in text
    assert_no_children()


# --- termination: no orphans, no zombies -----------------------------------------------


async def test_cancelling_the_scope_kills_the_process_group_with_grandchildren() -> None:
    script = "sleep 1000 & echo $!; exec cat"
    with trio.CancelScope() as scope:
        async with open_process(["sh", "-c", script], mode="lines") as p:
            grandchild = int(await p.receive())
            assert proc_stat(grandchild) is not None
            pidfd = open_pidfd(grandchild)
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert proc_stat(p.pid) is None  # reaped
    await pidfd_exited(pidfd)  # and the grandchild is dead too
    assert_no_children()


async def test_body_error_terminates_the_process_and_propagates() -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with open_process(["cat"], mode="lines") as p:
            raise Boom
    assert p.returncode == -signal.SIGTERM
    assert_no_children()


async def test_sigterm_is_followed_by_sigkill_after_the_grace_period() -> None:
    # The ignored SIGTERM disposition survives exec: this cat ignores SIGTERM.
    script = "trap '' TERM; echo ready; exec cat"
    with trio.CancelScope() as scope:
        async with open_process(["sh", "-c", script], mode="lines", kill_grace=0.3) as p:
            assert await p.receive() == "ready"
            scope.cancel()
            cancelled_at = trio.current_time()
            await trio.sleep_forever()
    assert trio.current_time() - cancelled_at >= 0.3
    assert p.returncode == -signal.SIGKILL
    assert_no_children()


async def test_kill_sigkills_now_and_is_not_reported_as_a_failure() -> None:
    async with open_process(["cat"], mode="lines") as p:
        p.kill()
        assert await p.wait() == -signal.SIGKILL
        assert not p.is_alive()
    assert_no_children()


# --- backpressure ---------------------------------------------------------------------


async def test_unread_output_blocks_the_child_in_write_with_bounded_memory(
    rss: Callable[[], int],
) -> None:
    before = rss()
    async with open_process(["cat", "/dev/zero"], mode="bytes", stdin="null") as p:
        with trio.fail_after(HANG_GUARD):
            while not blocked_in_pipe_write(p.pid):
                await trio.testing.wait_all_tasks_blocked()
        written = bytes_written(p.pid)
        # Nothing was read: all the child could write is what its stdout pipe holds.
        assert written <= PIPE_SIZE
        assert bytes_written(p.pid) == written
        assert rss() - before < 20 * 1024 * 1024
        p.kill()
    assert_no_children()


# --- as a kernel module ---------------------------------------------------------------


async def run_module(module: ProcessModule, items: Sequence[Any]) -> list[Any]:
    got: list[Any] = []

    async def produce(out: Pipe) -> None:
        await out.send_batch(list(items))

    async def consume(inp: Pipe) -> None:
        async for batch in inp.batches():
            got.extend(batch)

    with trio.fail_after(HANG_GUARD):
        async with open_kernel() as k:
            src = k.add(produce, name="src")
            mod = k.add(module, name="proc")
            snk = k.add(consume, name="snk")
            k.connect(src, mod)
            k.connect(mod, snk)
    return got


async def test_process_module_runs_a_chain_between_kernel_modules() -> None:
    module = ProcessModule(
        [ProcessSpec(("cat",), mode="lines"), ProcessSpec(("sort", "-r"), mode="lines")]
    )
    assert module.name == "cat | sort"
    assert await run_module(module, ["b", "a", "c"]) == ["c", "b", "a"]
    assert_no_children()


async def test_process_module_that_stops_reading_ends_normally() -> None:
    module = ProcessModule(ProcessSpec(("head", "-n", "2"), mode="lines"))
    assert await run_module(module, [str(i) for i in range(200_000)]) == ["0", "1"]
    assert_no_children()


async def test_process_module_failure_fails_the_kernel_with_the_process_error() -> None:
    module = ProcessModule(ProcessSpec(("sh", "-c", "cat; echo bad >&2; exit 5"), mode="lines"))
    with pytest.raises(ModuleError) as info:
        await run_module(module, ["x"])
    assert info.value.module == "proc"
    cause = info.value.__cause__
    assert isinstance(cause, ProcessError)
    assert (cause.kind, cause.exit_code, cause.stderr) == ("terminated", 5, "bad\n")
    assert_no_children()
