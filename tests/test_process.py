"""Tests of ``pk.cmd`` / ``pk.run`` (:mod:`pipekit.workers`): processes as handles, as
pipeline stages, and in shell-style compositions - all with real executables (``cat``,
``grep``, ``jq``, ``awk``, ``sort``, ``gzip``, ``head``, ``seq``, ``sh``, ``yes``) and real
Python workers (``python -m pipekit worker``).

Process state is read from ``/proc``: our children by their parent pid (a zombie has
state ``Z``), pipes by their ``pipe:[inode]`` links, what a process wrote from
``/proc/<pid>/io``, where it sleeps from ``/proc/<pid>/wchan``. The death of a process
that is not our child (a grandchild) is awaited on a pidfd. Waiting for something
outside trio (a process blocking in ``write``, a restart) is a condition loop around
``wait_all_tasks_blocked`` under a deadline, never a fixed sleep; timeouts only guard
against hangs, and the one timing assertion (kill -9 to error) is a bound.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from proc_helpers import (
    assert_no_children,
    blocked_in_pipe_write,
    bytes_written,
    children,
    exited,
    fd_link,
    only_child,
    our_fd_links,
    pidfd_exited,
    proc_stat,
    program_running_a_command,
)

import pipekit as pk
from pipekit.adapters.stdio import PIPE_SIZE, READ_SIZE
from pipekit.pipeline import BULK_BUFFER_BYTES
from pipekit.workers import OUTPUT_BYTES, OUTPUT_MESSAGES, worker_spec

HANG_GUARD = 15.0  # seconds; only ever reached when something is broken
MISSING_PROGRAM = "pipekit-test-no-such-program"
MB = 1024 * 1024


# --- /proc helpers --------------------------------------------------------------------


async def until(condition: Callable[[], bool]) -> None:
    """Let every task run until ``condition()`` holds (something outside trio - a
    process, the kernel - has to catch up); fails after ``HANG_GUARD``."""
    with trio.fail_after(HANG_GUARD):
        while not condition():
            await trio.testing.wait_all_tasks_blocked()


# --- Python workers ------------------------------------------------------------------

PRINTING_WORKER = """
import sys

def main(messages):
    for m in messages:
        print("about to echo", end="")             # a partial line
        sys.stdout.write("." * 5000)                # a long unterminated one
        print(" ECHO-LINE", repr(m)[:40])
        print("more noise", end="", flush=True)     # flushed mid-line
        yield m
    print("a last partial line without newline", end="")
"""

PID_WORKER = """
import os

def main(messages):
    pid = os.getpid()
    for m in messages:
        yield [pid, m]
"""

FAILING_WORKER = """
def main(messages):
    for m in messages:
        if m == 3:
            raise ValueError(f"cannot handle {m}")
        yield m * 10
"""


@pytest.fixture
def worker_file(tmp_path: Path) -> Callable[[str], str]:
    """``worker_file(source)`` writes a worker module and returns its path."""
    counter = itertools.count()

    def write(source: str) -> str:
        path = tmp_path / f"worker_{next(counter)}.py"
        path.write_text(source)
        return str(path)

    return write


def env_without_channel() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PIPEKIT_FD"}


# --- 1. real tools, byte-identical to bash --------------------------------------------

GREP = '"level":"error"'
JQ = "[.user, .path, .ms] | @tsv"
AWK = '$3 > 1000 { print $2 "\\t" $1 "\\t" $3 * 2 }'
BASH_PIPELINE = (
    f"cat \"$INPUT\" | grep -F '{GREP}' | jq -r '{JQ}' | awk -F'\\t' '{AWK}'"
    " | LC_ALL=C sort | gzip -c | gzip -dc"
)
C_LOCALE = {**os.environ, "LC_ALL": "C"}


@dataclass(frozen=True)
class Corpus:
    path: Path
    size: int
    expected: bytes


def write_corpus(path: Path, size: int) -> None:
    """``size`` bytes of JSON lines with varied fields, the same on every run."""
    rng = random.Random(20240617)
    levels = ["debug", "info", "info", "info", "warn", "error"]
    users = [f"user{i:04d}" for i in range(500)]
    paths = ["/", "/api/v1/items", "/api/v1/users", "/login", "/static/app.js", "/q?x=ü"]
    lines: list[str] = []
    total = 0
    for i in itertools.count():
        line = (
            f'{{"id":{i},"level":"{rng.choice(levels)}","user":"{rng.choice(users)}",'
            f'"path":"{rng.choice(paths)}","ms":{rng.randint(1, 5000)},'
            f'"bytes":{rng.randint(0, 10**6)},"msg":"{"x" * rng.randint(0, 60)}"}}\n'
        )
        if total + len(line.encode()) > size:
            break
        lines.append(line)
        total += len(line.encode())
    data = "".join(lines).encode()
    path.write_bytes(data + b"#" * (size - len(data) - 1) + b"\n")  # exactly ``size``


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """A 50 MB input and what bash makes of it through the reference pipeline."""
    path = tmp_path_factory.mktemp("corpus") / "input.jsonl"
    write_corpus(path, 50 * MB)
    expected = subprocess.run(
        ["bash", "-c", "set -o pipefail; " + BASH_PIPELINE],
        env={**os.environ, "INPUT": str(path)},
        capture_output=True,
        check=True,
    ).stdout
    assert len(expected) > 1 * MB  # a real workload for sort and gzip
    return Corpus(path, path.stat().st_size, expected)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.needs("jq", "jq")
@pytest.mark.needs("awk", "gawk")
async def test_command_chain_output_is_byte_identical_to_bash(corpus: Corpus) -> None:
    p = (
        pk.cmd("cat", corpus.path, mode="bytes")
        | pk.cmd("grep", "-F", GREP, mode="bytes")
        | pk.cmd("jq", "-r", JQ, mode="bytes")
        | pk.cmd("awk", "-F\t", AWK, mode="bytes")
        | pk.cmd("sort", mode="bytes", env=C_LOCALE)
        | pk.cmd("gzip", "-c", mode="bytes")
        | pk.cmd("gzip", "-dc", mode="bytes")
    )
    with trio.fail_after(HANG_GUARD):
        chunks = await p.arun()
    assert digest(b"".join(chunks)) == digest(corpus.expected)
    # The seven commands ran as one stage: joined by OS pipes, not pumped through Python.
    chain = "cmd(cat) | cmd(grep) | cmd(jq) | cmd(awk) | cmd(sort) | cmd(gzip) | cmd(gzip)"
    assert list(p.stats) == [chain, "collect"]
    assert_no_children()


@pytest.mark.needs("jq", "jq")
@pytest.mark.needs("awk", "gawk")
async def test_pipeline_with_python_stages_between_commands_is_byte_identical_to_bash(
    corpus: Corpus,
) -> None:
    lines_in: list[int] = []

    def count_line(line: str) -> str:
        lines_in.append(len(line.encode("utf-8", "surrogateescape")) + 1)
        return line

    p = (
        pk.cmd("cat", corpus.path, mode="lines")  # all 50 MB cross into Python as lines
        | pk.map(count_line)
        | pk.filter(lambda line: GREP in line)
        | pk.cmd("grep", "-F", GREP, mode="lines")
        | pk.cmd("jq", "-r", JQ, mode="lines")
        | pk.map(str.rstrip)  # a no-op on jq's lines, but in Python
        | pk.cmd("awk", "-F\t", AWK, mode="lines")
        | pk.cmd("sort", mode="bytes", env=C_LOCALE)
        | pk.map(bytes)  # bytes chunks through Python
        | pk.cmd("gzip", "-c", mode="bytes")
        | pk.cmd("gzip", "-dc", mode="bytes")
    )
    with trio.fail_after(HANG_GUARD):
        chunks = await p.arun()
    assert digest(b"".join(chunks)) == digest(corpus.expected)
    assert sum(lines_in) == corpus.size
    assert list(p.stats) == [
        "cmd(cat)",
        "map(count_line)",
        "filter(<lambda>)",
        "cmd(grep) | cmd(jq)",
        "map(rstrip)",
        "cmd(awk) | cmd(sort)",
        "map(bytes)",
        "cmd(gzip) | cmd(gzip)",
        "collect",
    ]
    assert_no_children()


# --- pipelines --------------------------------------------------------------------------


async def test_a_command_can_lead_a_pipeline() -> None:
    p = pk.cmd("seq", "1", "1000", mode="lines") | pk.map(int)
    assert await p.arun() == list(range(1, 1001))


async def test_adjacent_raw_commands_are_joined_by_an_os_pipe() -> None:
    seen: dict[str, Any] = {}
    inspected = trio.Event()

    async def lines() -> AsyncIterator[str]:
        yield "12"
        await inspected.wait()  # both commands wait for more input meanwhile
        yield "34"

    def inspect_processes(line: str) -> None:
        seen.setdefault("lines", []).append(line)
        if not inspected.is_set():  # how are the two running commands connected?
            cats = [pid for pid, (comm, _) in children().items() if comm == "cat"]
            seen["links"] = {(fd_link(a, 1), fd_link(b, 0)) for a in cats for b in cats if a != b}
            seen["ours"] = our_fd_links()
            inspected.set()

    p = (
        pk.source(lines)
        | pk.cmd("cat", mode="lines")  # cat does not buffer its output
        | pk.cmd("cat", mode="lines")
        | pk.sink(inspect_processes)
    )
    with trio.fail_after(HANG_GUARD):
        await p.arun()
    assert seen["lines"] == ["12", "34"]
    # One cat's stdout is the other's stdin ...
    (between,) = [out for out, inp in seen["links"] if out == inp]
    assert between.startswith("pipe:")
    # ... and that pipe is not one of ours: the bytes between them bypass Python.
    assert between not in seen["ours"]
    assert list(p.stats) == ["source(lines)", "cmd(cat) | cmd(cat)", "sink(inspect_processes)"]


@pytest.mark.needs("jq", "jq")
async def test_a_frames_command_is_not_joined_to_its_neighbours(
    worker_file: Callable[[str], str],
) -> None:
    path = worker_file(PID_WORKER)
    framed = pk.cmd(
        sys.executable, "-m", "pipekit", "worker", path, mode="frames", env=env_without_channel()
    )
    p = (
        pk.source(range(3))
        | pk.cmd("cat", mode="jsonl")
        | framed
        | pk.cmd("jq", "-c", ".[1]")
        | pk.cmd("cat", mode="lines")
    )
    assert await p.arun() == ["0", "1", "2"]
    assert list(p.stats) == [
        "source(range)",
        "cmd(cat)",
        f"cmd({os.path.basename(sys.executable)})",
        "cmd(jq) | cmd(cat)",
        "collect",
    ]


async def test_head_ends_the_pipeline_normally_while_upstream_has_more() -> None:
    p = pk.source(itertools.count()) | pk.cmd("head", "-n", "3", mode="lines")
    with trio.fail_after(HANG_GUARD):
        assert await p.arun() == ["0", "1", "2"]
    assert p.stats["source(count)"].state == "done"
    assert_no_children()


async def test_head_in_a_command_chain_ends_normally_as_in_a_shell() -> None:
    # seq dies of SIGPIPE once head exits: as in a shell, that is no failure.
    p = pk.cmd("seq", "1", "100000000", mode="lines") | pk.cmd("head", "-n", "3", mode="lines")
    with trio.fail_after(HANG_GUARD):
        assert await p.arun() == ["1", "2", "3"]
    assert_no_children()


# --- modes --------------------------------------------------------------------------------


@pytest.mark.needs("jq", "jq")
async def test_jsonl_is_the_default_mode_of_a_command() -> None:
    records = [{"name": f"n{i}", "tags": ["a", i]} for i in range(500)]
    p = pk.source(records) | pk.cmd("jq", "-c", "{name, n: .tags[1]}")
    assert await p.arun() == [{"name": f"n{i}", "n": i} for i in range(500)]


async def test_lines_mode_carries_text_lines() -> None:
    p = pk.source(["b", "ä", "a"]) | pk.cmd("sort", mode="lines", env=C_LOCALE)
    assert await p.arun() == ["a", "b", "ä"]


async def test_bytes_mode_carries_bytes_chunks() -> None:
    data = bytes(range(256)) * 20_000
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    got = await (pk.source(chunks) | pk.cmd("gzip", "-c", mode="bytes")).arun()
    assert all(isinstance(c, bytes) for c in got)
    assert gzip.decompress(b"".join(got)) == data


async def test_frames_mode_over_stdio_speaks_pipekit1_with_a_python_child(
    worker_file: Callable[[str], str],
) -> None:
    path = worker_file(PRINTING_WORKER)  # prints: harmless, the child moves them to stderr
    messages: list[Any] = [{"i": i, "b": b"\x00\xff" * i} for i in range(300)]
    worker = pk.cmd(
        sys.executable, "-m", "pipekit", "worker", path, mode="frames", env=env_without_channel()
    )
    assert await (pk.source(messages) | worker).arun() == messages


# --- the Worker handle --------------------------------------------------------------------


async def test_worker_sends_receives_and_calls() -> None:
    async with pk.cmd("cat", mode="lines") as w:
        assert isinstance(w.pid, int) and w.is_alive()
        await w.send("one")
        assert await w.receive(timeout=HANG_GUARD) == "one"
        assert await w.call("two", timeout=HANG_GUARD) == "two"
        await w.send_batch(["three", "four"])
        assert [await w.receive(), await w.receive()] == ["three", "four"]


async def test_worker_receive_timeout_raises_too_slow_and_the_worker_stays_usable() -> None:
    async with pk.cmd("cat", mode="lines") as w:
        with pytest.raises(trio.TooSlowError):
            await w.receive(timeout=0.05)  # cat outputs nothing unless fed
        assert await w.call("still here", timeout=HANG_GUARD) == "still here"


async def test_worker_receive_raises_end_of_channel_when_the_output_ends() -> None:
    async with pk.cmd("echo", "bye", mode="lines") as w:
        assert await w.receive() == "bye"
        with pytest.raises(trio.EndOfChannel):
            await w.receive()


async def test_worker_close_ends_its_input_and_returns_the_exit_code() -> None:
    async with pk.cmd("sh", "-c", "cat; echo done >&2", mode="lines") as w:
        await w.send("x")
        assert await w.close() == 0
        assert await w.receive() == "x"
        assert w.exit_code == 0
        assert not w.is_alive()
        assert w.stderr == "done\n"


async def test_worker_wait_returns_a_non_zero_code_and_the_block_raises_it() -> None:
    with pytest.raises(pk.ProcessError) as info:
        async with pk.cmd("sh", "-c", "echo nope >&2; exit 3", mode="lines") as w:
            assert await w.wait() == 3
            assert w.exit_code == 3
    assert (info.value.kind, info.value.exit_code, info.value.stderr) == ("terminated", 3, "nope\n")


async def test_worker_kill_sigkills_it_at_once() -> None:
    async with pk.cmd("cat", mode="lines") as w:
        pid = w.pid
        w.kill()
        assert await w.wait() == -signal.SIGKILL
        assert w.exit_code == -signal.SIGKILL
        assert not w.is_alive()
    assert pid is not None and proc_stat(pid) is None
    assert_no_children()


async def test_worker_is_terminated_when_its_block_raises() -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with pk.cmd("cat", mode="lines") as w:
            raise Boom
    assert w.exit_code == -signal.SIGTERM  # TERM first; KILL only after kill_grace
    assert_no_children()


async def test_a_worker_ignoring_term_is_killed_after_the_grace_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with pk.cmd("sh", "-c", "trap '' TERM; cat", mode="lines", kill_grace=3) as w:
            await w.send("ready?")
            assert await w.receive() == "ready?"  # the trap is set once sh runs cat
            raise Boom
    assert w.exit_code == -signal.SIGKILL
    assert_no_children()


async def test_worker_handle_needs_to_be_started() -> None:
    w = pk.cmd("cat")
    assert w.pid is None and not w.is_alive() and w.exit_code is None
    with pytest.raises(RuntimeError, match="not started"):
        await w.send("x")


# --- failures, typed by kind --------------------------------------------------------------


async def test_missing_program_is_spawn_failed_naming_it() -> None:
    with pytest.raises(pk.ProcessError) as info:
        async with pk.cmd(MISSING_PROGRAM):
            pass  # pragma: no cover
    assert (info.value.kind, info.value.program) == ("spawn_failed", MISSING_PROGRAM)
    assert MISSING_PROGRAM in str(info.value)


async def test_missing_program_fails_the_pipeline_naming_stage_and_program() -> None:
    p = pk.source([1]) | pk.cmd(MISSING_PROGRAM)
    with pytest.raises(pk.ModuleError) as info:
        await p.arun()
    assert info.value.module == f"cmd({MISSING_PROGRAM})"
    cause = info.value.__cause__
    assert isinstance(cause, pk.ProcessError)
    assert (cause.kind, cause.program) == ("spawn_failed", MISSING_PROGRAM)


async def test_non_zero_exit_fails_the_pipeline_as_terminated_with_code_and_stderr() -> None:
    p = pk.source(["a", "b"]) | pk.cmd(
        "sh", "-c", "cat; echo 'disk full' >&2; exit 3", mode="lines"
    )
    with pytest.raises(pk.ModuleError) as info:
        await p.arun()
    cause = info.value.__cause__
    assert isinstance(cause, pk.ProcessError)
    assert (cause.kind, cause.exit_code, cause.signal) == ("terminated", 3, None)
    assert cause.stderr == "disk full\n"
    assert "disk full" in str(info.value)


async def test_death_by_signal_is_terminated_with_the_signal() -> None:
    with pytest.raises(pk.ProcessError) as info:
        async with pk.cmd("sh", "-c", "kill -TERM $$", mode="lines") as w:
            await w.receive()
    assert (info.value.kind, info.value.signal, info.value.exit_code) == (
        "terminated",
        signal.SIGTERM,
        None,
    )


async def test_timeout_kills_the_command_with_kind_timeout() -> None:
    p = pk.cmd("sleep", "60", mode="lines", timeout=0.2) | pk.collect()
    with trio.fail_after(HANG_GUARD), pytest.raises(pk.ModuleError) as info:
        await p.arun()
    cause = info.value.__cause__
    assert isinstance(cause, pk.ProcessError)
    assert cause.kind == "timeout"
    assert_no_children()


async def test_garbage_on_a_framed_channel_fails_with_a_protocol_error_naming_the_child() -> None:
    script = 'echo "bad child $$" >&2; printf "\\377\\377\\377\\377garbage"'
    p = pk.source([1]) | pk.cmd("sh", "-c", script, mode="frames")
    with pytest.raises(pk.ModuleError) as info:
        await p.arun()
    cause = info.value.__cause__
    assert isinstance(cause, pk.ProtocolError)
    assert cause.kind == "malformed"
    pid = getattr(cause, "pid", None)
    assert str(cause).startswith(f"sh (pid {pid}): reserved flag bits set")
    assert f"--- stderr (tail) ---\nbad child {pid}" in str(cause)
    assert_no_children()


# --- shell-style composition ---------------------------------------------------------------


async def test_then_runs_the_next_command_only_after_success() -> None:
    echo = pk.cmd("echo", "ran", mode="lines")
    assert await pk.cmd("true").then(echo).run() == 0
    assert echo.output == ["ran"]

    skipped = pk.cmd("echo", "ran", mode="lines")
    assert await pk.cmd("false").then(skipped).run() == 1
    assert skipped.output == [] and skipped.pid is None


async def test_otherwise_runs_the_next_command_only_after_failure() -> None:
    echo = pk.cmd("echo", "fallback", mode="lines")
    assert await pk.cmd("sh", "-c", "exit 3").otherwise(echo).run() == 0
    assert echo.output == ["fallback"]

    skipped = pk.cmd("echo", "fallback", mode="lines")
    assert await pk.cmd("true").otherwise(skipped).run() == 0
    assert skipped.pid is None


async def test_a_chain_returns_the_code_of_the_last_command_that_ran() -> None:
    assert await pk.cmd("sh", "-c", "exit 3").then(pk.cmd("true")).run() == 3
    assert await pk.cmd("false").otherwise(pk.cmd("sh", "-c", "exit 4")).run() == 4
    # false && x || echo: x is skipped, echo runs
    echo = pk.cmd("echo", "rescued", mode="lines")
    chain = pk.cmd("false").then(pk.cmd(MISSING_PROGRAM)).otherwise(echo)
    assert await chain.run() == 0
    assert echo.output == ["rescued"]


async def test_a_chain_raises_spawn_failed_for_a_missing_program() -> None:
    with pytest.raises(pk.ProcessError) as info:
        await pk.cmd("true").then(pk.cmd(MISSING_PROGRAM)).run()
    assert info.value.kind == "spawn_failed"


async def test_background_returns_while_the_process_runs(tmp_path: Path) -> None:
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    job = pk.cmd("sh", "-c", f"read word < {fifo}; echo got $word", mode="lines").background()
    await job.start()  # returns although the job waits on the fifo
    assert job.is_alive()
    await trio.to_thread.run_sync(fifo.write_text, "go\n")
    with trio.fail_after(HANG_GUARD):
        assert await job.wait() == 0
    assert job.output == ["got go"]
    assert not job.is_alive()


async def test_background_job_output_is_read_so_a_chatty_job_cannot_block() -> None:
    job = pk.cmd("seq", "1", "300000", mode="lines").background()
    await job.start()
    with trio.fail_after(HANG_GUARD):
        assert await job.wait() == 0
    # Every line was read (so the job could finish); the most recent ones are kept.
    assert len(job.output) == OUTPUT_MESSAGES and job.output[-1] == "300000"
    assert job.output_truncated


async def test_background_job_output_is_bounded_in_bytes(rss: Callable[[], int]) -> None:
    before = rss()
    job = pk.cmd("head", "-c", str(200 * MB), "/dev/zero", mode="bytes").background()
    await job.start()
    with trio.fail_after(HANG_GUARD):
        assert await job.wait() == 0
    kept = sum(len(chunk) for chunk in job.output)
    assert kept <= OUTPUT_BYTES
    assert job.output_truncated
    assert rss() - before < OUTPUT_BYTES + 40 * MB


async def test_background_of_a_missing_program_raises_spawn_failed() -> None:
    with pytest.raises(pk.ProcessError) as info:
        await pk.cmd(MISSING_PROGRAM).background().start()
    assert info.value.kind == "spawn_failed"


async def test_background_chain_runs_apart_and_reports_its_code() -> None:
    job = pk.cmd("false").otherwise(pk.cmd("sh", "-c", "exit 7")).background()
    with trio.fail_after(HANG_GUARD):
        assert await job.wait() == 7


def test_background_job_is_terminated_when_the_trio_run_ends() -> None:
    jobs: list[pk.Worker] = []

    async def main() -> None:
        job = pk.cmd("sleep", "1000").background()
        await job.start()
        jobs.append(job)

    trio.run(main)
    pid = jobs[0].pid
    assert pid is not None and proc_stat(pid) is None
    assert_no_children()


# --- Python workers ------------------------------------------------------------------------


def test_worker_spec_runs_pipekit_worker_with_a_framed_channel() -> None:
    spec = worker_spec("app.mod:fn", mode="item", init="app.mod:setup", python="/py")
    # python -c BOOT path/to/boot.py, then the arguments of `pipekit worker`
    assert spec.argv[:2] == ("/py", "-c")
    assert spec.argv[3].endswith("boot.py")
    assert spec.argv[4:] == ("app.mod:fn", "--mode", "item", "--init", "app.mod:setup")
    assert (spec.mode, spec.channel) == ("frames", "PIPEKIT_FD")
    assert (spec.stdin, spec.stdout, spec.stderr) == ("null", "inherit", "pipe")
    assert spec.codecs == ("msgpack",)
    assert spec.label == "app.mod:fn"


async def test_python_worker_that_prints_freely_delivers_every_message_intact(
    worker_file: Callable[[str], str], capfd: pytest.CaptureFixture[str]
) -> None:
    messages: list[Any] = [
        {"i": i, "text": "é\n" * (i % 50), "blob": bytes(range(256)) * (i % 5), "nested": [i, {}]}
        for i in range(2000)
    ]
    messages += ["x" * 500_000, b"\n" * 1000, None, 3.5]
    p = pk.source(messages) | pk.run(worker_file(PRINTING_WORKER))
    with trio.fail_after(HANG_GUARD):
        assert await p.arun() == messages
    out = capfd.readouterr().out  # the worker's stdout is ours: the prints went there
    assert out.count("ECHO-LINE") == len(messages)
    assert out.endswith("a last partial line without newline")


async def test_python_worker_handle_calls_and_closes(worker_file: Callable[[str], str]) -> None:
    async with pk.run(worker_file(PID_WORKER)) as w:
        pid, echoed = await w.call({"k": [1, 2]}, timeout=HANG_GUARD)
        assert pid == w.pid and echoed == {"k": [1, 2]}
        assert await w.close() == 0
    assert_no_children()


REPLIES_WORKER = """
def main(port):
    for n in port:
        port.send(n)
        port.send_batch([n + 0.5, n + 0.75])
"""


async def test_a_port_worker_replies_in_order_whether_called_or_streamed(
    worker_file: Callable[[str], str],
) -> None:
    # A reply is written by the worker thread itself, what follows it in the same turn
    # (and everything while input waits) goes through the worker's pump: the order
    # holds across both paths, one request at a time and with the input streamed.
    expected = [x for n in range(300) for x in (n, n + 0.5, n + 0.75)]
    with trio.fail_after(HANG_GUARD * 3):
        async with pk.run(worker_file(REPLIES_WORKER)) as w:
            got = []
            for n in range(150):
                got.append(await w.call(n))
                got += [await w.receive(), await w.receive()]
            for n in range(150, 300):
                await w.send(n)
            got += [await w.receive() for _ in range(450)]
            assert await w.close() == 0
    assert got == expected


async def test_python_worker_exception_fails_the_pipeline_with_its_traceback(
    worker_file: Callable[[str], str],
) -> None:
    got: list[Any] = []
    p = pk.source(range(10)) | pk.run(worker_file(FAILING_WORKER)) | pk.sink(got.append)
    with pytest.raises(pk.ModuleError) as info:
        await p.arun()
    assert got == [0, 10, 20]  # what it sent before failing is delivered
    text = str(info.value)
    assert "ValueError" in text and "cannot handle 3" in text
    assert_no_children()


# --- kill -9, restarts, cancellation: no zombies, no orphans --------------------------


@dataclass(frozen=True)
class Victim:
    """A stage whose process the tests kill: how to make it, and - from its first
    output message - which pid leads it and which grandchild (if any) it started."""

    make: Callable[..., pk.Worker]
    leader: Callable[[Any], int]
    grandchild: Callable[[Any], int | None]


def command_victim() -> Victim:
    return Victim(
        lambda **kw: pk.cmd("cat", mode="lines", **kw),
        lambda msg: only_child(),
        lambda msg: None,
    )


def shell_victim() -> Victim:
    return Victim(
        lambda **kw: pk.cmd("sh", "-c", "sleep 1000 & echo $!; exec cat", mode="lines", **kw),
        lambda msg: only_child(),
        lambda msg: int(msg),
    )


def python_victim(path: str) -> Victim:
    return Victim(
        lambda **kw: pk.run(path, **kw),
        lambda msg: int(msg[0]),
        lambda msg: None,
    )


@pytest.fixture(params=["command", "shell-with-grandchild", "python-worker"])
def victim(request: pytest.FixtureRequest, worker_file: Callable[[str], str]) -> Victim:
    if request.param == "command":
        return command_victim()
    if request.param == "shell-with-grandchild":
        return shell_victim()
    return python_victim(worker_file(PID_WORKER))


async def numbers() -> AsyncIterator[int]:
    for i in itertools.count():
        yield i


async def test_kill9_of_a_worker_mid_stream_raises_an_error_naming_it_within_a_second(
    victim: Victim,
) -> None:
    stage = victim.make()
    killed: dict[str, Any] = {}

    def kill_on_first(msg: Any) -> None:
        if not killed:
            grandchild = victim.grandchild(msg)
            killed["pidfd"] = os.pidfd_open(grandchild) if grandchild is not None else None
            killed["pid"] = victim.leader(msg)
            killed["at"] = trio.current_time()
            os.kill(killed["pid"], signal.SIGKILL)

    p = pk.source(numbers) | stage | pk.sink(kill_on_first)
    with trio.fail_after(HANG_GUARD), pytest.raises(pk.ModuleError) as info:
        await p.arun()
    elapsed = trio.current_time() - killed["at"]
    assert elapsed < 1.0, f"the error took {elapsed:.3f} s after the kill"
    assert info.value.module == stage.label
    cause = info.value.__cause__
    assert isinstance(cause, pk.ProcessError)
    assert (cause.kind, cause.signal, cause.pid) == ("terminated", signal.SIGKILL, killed["pid"])
    assert f"(pid {killed['pid']}) was killed by signal SIGKILL" in str(cause)
    assert stage.spec.label in str(cause)
    # Reaped, and nothing left: no zombie, no orphan (the grandchild died with its group).
    assert proc_stat(killed["pid"]) is None
    assert_no_children()
    if killed["pidfd"] is not None:
        await pidfd_exited(killed["pidfd"])


@pytest.mark.parametrize("kind", ["command", "python-worker"])
async def test_restart_on_failure_continues_the_stream_after_kill9(
    kind: str, worker_file: Callable[[str], str]
) -> None:
    victim = command_victim() if kind == "command" else python_victim(worker_file(PID_WORKER))
    stage = victim.make(restart="on-failure", backoff=0)
    before, after = 100, 1000
    killed = trio.Event()
    killed_pids: list[int] = []
    got: list[Any] = []

    async def items() -> AsyncIterator[int]:
        for i in range(before):
            yield i
        await killed.wait()
        # The items from here on are sent after the kill, once the stage restarted.
        await until(lambda: p.stats[stage.label].restarts >= 1)
        for i in range(before, before + after):
            yield i

    def kill_on_first(msg: Any) -> None:
        if not killed_pids:
            killed_pids.append(victim.leader(msg))
            os.kill(killed_pids[0], signal.SIGKILL)
            killed.set()
        got.append(msg)

    p = pk.source(items) | stage | pk.sink(kill_on_first)
    with trio.fail_after(HANG_GUARD):
        await p.arun()
    values = [int(m) if kind == "command" else m[1] for m in got]
    assert values[-after:] == list(range(before, before + after))  # all of them, in order
    assert values == sorted(set(values))  # nothing duplicated or reordered before
    stats = p.stats[stage.label]
    assert stats.restarts == 1 and stats.state == "done"
    assert "SIGKILL" in stats.failures[0]
    if kind == "python-worker":
        assert {m[0] for m in got[-after:]}.isdisjoint(killed_pids)  # a new process
    assert_no_children()


async def test_cancelling_a_running_pipeline_leaves_no_process_behind(victim: Victim) -> None:
    first = trio.Event()
    found: dict[str, Any] = {}

    def note(msg: Any) -> None:
        if not first.is_set():
            found["leader"] = victim.leader(msg)
            grandchild = victim.grandchild(msg)
            found["grandchild"] = os.pidfd_open(grandchild) if grandchild is not None else None
            first.set()

    p = pk.source(numbers) | victim.make() | pk.sink(note)
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(p.arun)
            await first.wait()
            assert proc_stat(found["leader"]) is not None
            nursery.cancel_scope.cancel()
    assert proc_stat(found["leader"]) is None  # terminated and reaped
    assert_no_children()
    if found["grandchild"] is not None:
        await pidfd_exited(found["grandchild"])


# --- backpressure --------------------------------------------------------------------------


async def flood_until_blocked(buffer: int | None, rss: Callable[[], int]) -> tuple[int, int]:
    """Run ``yes`` (bytes) into a sink that never returns; once the child is blocked
    in ``write`` and nothing moves any more, return (bytes it wrote, our RSS growth)."""
    gate = trio.Event()
    received: list[int] = []

    async def hold(chunk: bytes) -> None:
        received.append(len(chunk))
        await gate.wait()

    p = pk.cmd("yes", "flood", mode="bytes") | pk.sink(hold, buffer=buffer)
    before = rss()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(p.arun)
        await until(lambda: len(children()) == 1)
        pid = only_child()
        last = (-1, -1)

        def settled() -> bool:
            nonlocal last
            now = (bytes_written(pid), p.stats["cmd(yes)"].messages_out)
            still, last = now == last, now
            return bool(received) and still and blocked_in_pipe_write(pid)

        await until(settled)
        written = bytes_written(pid)
        growth = rss() - before
        assert blocked_in_pipe_write(pid)
        assert received == [received[0]]  # the sink still holds the first chunk
        nursery.cancel_scope.cancel()
    assert_no_children()
    return written, growth


async def test_flooding_child_is_held_back_by_pipe_backpressure(
    rss: Callable[[], int],
) -> None:
    buffer = 4
    written, growth = await flood_until_blocked(buffer, rss)
    # In flight at most: the pipe's buffer, one chunk the stage holds, ``buffer`` chunks
    # queued for the sink and the batch the sink took (each chunk <= one read).
    assert written <= PIPE_SIZE + (1 + 2 * buffer) * READ_SIZE
    assert growth < 20 * MB


async def test_flooding_child_stays_within_20_mb_with_default_buffers(
    rss: Callable[[], int],
) -> None:
    written, growth = await flood_until_blocked(None, rss)
    # The buffer after a process stage has a byte budget (BULK_BUFFER_BYTES), so with
    # default buffers at most: that budget queued, as much again in the batch the sink
    # took, and one read held by the stage. What the child wrote, less what its pipe
    # holds, is in our memory (RSS alone can hide it when the allocator reuses memory).
    assert written - PIPE_SIZE <= 2 * BULK_BUFFER_BYTES + 2 * READ_SIZE
    assert written - PIPE_SIZE < 20 * MB
    assert growth < 20 * MB


def test_a_python_worker_refuses_stdout_pipe_with_a_clear_reason() -> None:
    with pytest.raises(ValueError, match="print"):
        pk.run("anything.py", stdout="pipe")


def test_a_command_without_stdin_cannot_take_a_previous_stages_messages() -> None:
    with pytest.raises(ValueError, match="stdin='null'"):
        (pk.source([1]) | pk.cmd("cat", stdin="null")).run()


def test_buffer_bytes_bounds_the_stage_after_a_command() -> None:
    stage = pk.sink(lambda chunk: None, buffer_bytes=1024)
    assert stage.options.buffer_bytes == 1024
    with pytest.raises(ValueError, match="buffer_bytes"):
        pk.sink(lambda chunk: None, buffer_bytes=0)


async def test_leaving_a_command_block_with_unread_output_does_not_hang() -> None:
    with trio.fail_after(10):  # a hang guard, not a speed check
        async with pk.cmd("seq", "1", "1000000", mode="lines") as w:
            assert await w.receive() == "1"
    # Its remaining output was discarded and it finished.
    assert w.exit_code == 0


async def test_leaving_an_endless_command_block_stops_it_after_the_grace_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with pk.cmd("yes", mode="lines", kill_grace=2) as w:
        assert await w.receive() == "y"
    # Stopped like a shell's ``yes | head -1``: by SIGPIPE or TERM, not reported as a failure.
    assert w.exit_code in (-signal.SIGPIPE, -signal.SIGTERM)


async def test_leaving_a_worker_block_with_unread_output_lets_the_worker_finish(
    tmp_path: Path,
) -> None:
    script = tmp_path / "chatty.py"
    script.write_text("def main(port):\n    for i in range(200_000):\n        port.send(i)\n")
    with trio.fail_after(10):
        async with pk.run(str(script)) as w:
            assert await w.receive() == 0
    assert w.exit_code == 0


POOL_WORKERS = Path(__file__).with_name("pool_workers.py")


def test_an_item_mode_worker_stage_keeps_order_across_processes() -> None:
    stage = pk.run(f"{POOL_WORKERS}:square", mode="item", workers=2)
    assert (pk.source(range(2000)) | stage).run() == [x * x for x in range(2000)]


def test_an_item_mode_stage_fails_on_a_failing_item_naming_the_stage() -> None:
    from pool_workers import POISON

    stage = pk.run(f"{POOL_WORKERS}:poisoned", mode="item")
    with pytest.raises(pk.ModuleError) as info:
        (pk.source(range(POISON + 10)) | stage).run()
    assert info.value.module == "run(pool_workers.py:poisoned)"
    assert isinstance(info.value.__cause__, pk.WorkerError)
    assert info.value.__cause__.index == POISON


def test_an_item_mode_stage_under_restarts_loses_only_the_failing_item() -> None:
    from pool_workers import POISON

    stage = pk.run(
        f"{POOL_WORKERS}:poisoned", mode="item", workers=2, restart="on-failure", backoff=0
    )
    got = (pk.source(range(POISON * 2)) | stage).run()
    assert got == [x * x for x in range(POISON * 2) if x != POISON]


# --- regressions found in review -------------------------------------------------------


async def test_cancellation_at_block_exit_leaves_no_process_and_a_sane_trio() -> None:
    with trio.move_on_after(0) as scope:  # already expired when the block ends
        async with pk.cmd("sleep", "30", mode="lines", kill_grace=1):
            pass
    assert scope.cancelled_caught
    assert_no_children()
    await trio.lowlevel.checkpoint()  # the cancel-scope stack is intact: trio keeps running


async def test_end_of_output_is_not_held_back_while_the_process_still_reads(
    tmp_path: Path,
) -> None:
    script = "read x; echo got $x; exec >&-; cat >/dev/null"
    with trio.fail_after(HANG_GUARD):
        async with pk.cmd("sh", "-c", script, mode="lines") as w:
            await w.send("a")
            assert await w.receive() == "got a"
            with pytest.raises(trio.EndOfChannel):
                await w.receive()
    assert w.exit_code == 0


async def test_a_crashed_framed_worker_is_reported_with_its_exit_code_and_stderr(
    tmp_path: Path,
) -> None:
    script = tmp_path / "crash.py"
    script.write_text(
        "import os, sys\n"
        "def main(port):\n"
        "    port.receive()\n"
        "    sys.stderr.write('about to crash\\n'); sys.stderr.flush()\n"
        "    os._exit(3)\n"
    )
    with pytest.raises(pk.ProcessError) as info:
        async with pk.run(str(script)) as w:
            await w.send("go")
            with contextlib.suppress(pk.ProcessError, trio.EndOfChannel):
                await w.receive()
            for _ in range(20):  # keep sending into the dead worker
                with contextlib.suppress(pk.ProcessError, trio.BrokenResourceError):
                    await w.send_batch(list(range(10_000)))
    assert info.value.kind == "terminated"
    assert info.value.exit_code == 3
    assert "about to crash" in info.value.stderr


def test_fan_out_copies_that_stop_reading_end_the_input_like_head() -> None:
    stage = pk.cmd("head", "-n", "1", mode="lines", workers=2, ordered=False)
    got = (pk.source(str(i) for i in range(100_000)) | stage).run()
    assert 1 <= len(got) <= 2


def test_a_fan_out_copy_that_fails_reports_its_exit_code() -> None:
    stage = pk.cmd("sh", "-c", "head -n 1; exit 3", mode="lines", workers=2, ordered=False)
    with pytest.raises(pk.ModuleError) as info:
        (pk.source(str(i) for i in range(100_000)) | stage).run()
    assert isinstance(info.value.__cause__, pk.ProcessError)
    assert info.value.__cause__.exit_code == 3


async def test_leaving_a_chain_early_stops_the_upstream_processes_too() -> None:
    from pipekit.adapters.stdio import ProcessSpec, open_chain

    specs = [
        ProcessSpec(("sleep", "30"), mode="lines", kill_grace=0.2),
        ProcessSpec(("cat",), mode="lines", kill_grace=0.2),
    ]
    with trio.fail_after(HANG_GUARD):  # a hang guard: `sleep 30` must not be awaited
        async with open_chain(specs):
            pass
    assert_no_children()


async def test_a_nul_byte_in_argv_is_spawn_failed_and_leaks_nothing() -> None:
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(pk.ProcessError) as info:
        async with pk.cmd("echo", "a\0b"):
            pass
    assert info.value.kind == "spawn_failed"
    assert set(os.listdir("/proc/self/fd")) == before


async def test_terminating_several_processes_takes_one_grace_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from pipekit.adapters.stdio import ProcessSpec, open_chain

    ignore = ("sh", "-c", "trap '' TERM; cat")
    specs = [ProcessSpec(ignore, mode="lines", kill_grace=5) for _ in range(3)]
    start = trio.current_time()
    with trio.move_on_after(1):
        async with open_chain(specs) as chain:
            await chain.send("x")
            assert await chain.receive() == "x"  # every sh has set its trap
            await trio.sleep_forever()
    assert trio.current_time() - start < 1 + 5 + 1  # not 3 x 5 s
    assert_no_children()


# --- processes that must not hang a stage once they are done ---------------------------


@pytest.mark.parametrize("chained", [False, True], ids=["alone", "in-a-chain"])
async def test_a_background_job_holding_stdout_does_not_keep_a_command_stage_open(
    tmp_path: Path, chained: bool
) -> None:
    # The command exits once its input ended, but left a job that holds its stdout: the
    # job gets kill_grace seconds, then TERM (KILL after kill_grace), and the stage ends.
    job = tmp_path / "job.pid"
    script = f"sleep 1000 & echo $! > {job}; exec cat"
    stage = pk.cmd("sh", "-c", script, mode="lines", kill_grace=0.2)
    if chained:
        stage = stage | pk.cmd("cat", mode="lines", kill_grace=0.2)  # type: ignore[assignment]
    with trio.fail_after(HANG_GUARD):
        assert await (pk.source(["a", "b"]) | stage | pk.collect()).arun() == ["a", "b"]
    await exited(int(job.read_text()))  # the job was ended: it does not outlive the stage
    assert_no_children()


async def test_a_finished_commands_own_background_job_is_ended_when_it_leads() -> None:
    # No input of ours: the job holding stdout is ended once the command has exited.
    stage = pk.cmd("sh", "-c", "sleep 1000 & echo $!", mode="lines", kill_grace=0.2)
    with trio.fail_after(HANG_GUARD):
        (job,) = await (stage | pk.collect()).arun()
    await exited(int(job))
    assert_no_children()


# A pipekit/1 peer written from the spec alone, in the style of a Node.js program: it
# answers our END with its own, then waits for its stdin to close before it exits
# (``process.stdin.on('end', ...)``); "stubborn" ignores even that.
FRAMES_PEER = r"""
import json, os, struct, sys, time

def read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(0, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf

def send(kind, payload=b"", flags=0):
    os.write(1, struct.pack(">IHH", len(payload), kind, flags) + payload)

hello = {"protocol": "pipekit/1", "codec": "json", "name": "peer", "max_frame": 1 << 20,
         "high_water": 1000}
while True:
    head = read_exact(8)
    if head is None:  # our stdin closed: only now do we leave
        if sys.argv[1] == "stubborn":
            while True:
                time.sleep(60)
        sys.exit(0)
    length, kind, flags = struct.unpack(">IHH", head)
    payload = read_exact(length) if length else b""
    if kind == 8:
        send(8, json.dumps(hello).encode(), 1)
    elif kind == 1:
        send(1, payload, flags & 1)
    elif kind == 2:
        send(2)  # END answered with END
    elif kind == 4:
        send(5, payload)
"""

NODE_FRAMES_PEER = r"""
let buf = Buffer.alloc(0);
function send(kind, payload = Buffer.alloc(0), flags = 0) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(payload.length, 0);
  head.writeUInt16BE(kind, 4);
  head.writeUInt16BE(flags, 6);
  process.stdout.write(Buffer.concat([head, payload]));
}
const hello = {protocol: "pipekit/1", codec: "json", name: "node-peer",
               max_frame: 1 << 20, high_water: 1000};
process.stdin.on("data", (chunk) => {
  buf = Buffer.concat([buf, chunk]);
  while (buf.length >= 8) {
    const length = buf.readUInt32BE(0), kind = buf.readUInt16BE(4), flags = buf.readUInt16BE(6);
    if (buf.length < 8 + length) break;
    const payload = buf.subarray(8, 8 + length);
    buf = buf.subarray(8 + length);
    if (kind === 8) send(8, Buffer.from(JSON.stringify(hello)), 1);
    else if (kind === 1) send(1, payload, flags & 1);
    else if (kind === 2) send(2);
    else if (kind === 4) send(5, payload);
  }
});
process.stdin.on("end", () => process.exit(0));
"""


def frames_peer(tmp_path: Path, language: str, behaviour: str = "polite") -> pk.Worker:
    if language == "node":
        script = tmp_path / "peer.js"
        script.write_text(NODE_FRAMES_PEER)
        argv = ["node", str(script)]
    else:
        script = tmp_path / "peer.py"
        script.write_text(FRAMES_PEER)
        argv = [sys.executable, str(script), behaviour]
    grace = 0.2 if behaviour == "stubborn" else 1000  # polite: closing stdin must do it
    return pk.cmd(*argv, mode="frames", kill_grace=grace)


@pytest.mark.parametrize(
    "language", ["python", pytest.param("node", marks=pytest.mark.needs("node", "nodejs"))]
)
async def test_a_frames_child_waiting_for_stdin_to_close_ends_the_pipeline(
    tmp_path: Path, language: str
) -> None:
    stage = frames_peer(tmp_path, language)
    with trio.fail_after(HANG_GUARD):
        assert await (pk.source([1, "two", [3]]) | stage | pk.collect()).arun() == [
            1,
            "two",
            [3],
        ]
    assert_no_children()


@pytest.mark.parametrize("behaviour", ["polite", "stubborn"])
async def test_a_frames_handle_is_left_once_both_directions_ended(
    tmp_path: Path, behaviour: str
) -> None:
    # Polite: it exits once its stdin is closed; stubborn: TERM after kill_grace.
    with trio.fail_after(HANG_GUARD):
        async with frames_peer(tmp_path, "python", behaviour) as w:
            assert await w.call({"a": 1}) == {"a": 1}
    assert w.exit_code == (0 if behaviour == "polite" else -signal.SIGTERM)
    assert_no_children()


async def test_a_frames_child_that_never_exits_after_both_ends_is_terminated(
    tmp_path: Path,
) -> None:
    # Both directions ended and its stdin closed, it stays: TERM after kill_grace. Its
    # stream ended cleanly, so the stage does not fail.
    stage = frames_peer(tmp_path, "python", "stubborn")
    with trio.fail_after(HANG_GUARD):
        assert await (pk.source(range(5)) | stage | pk.collect()).arun() == list(range(5))
    assert_no_children()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
async def test_a_command_dies_with_its_program_even_by_sigkill(tmp_path: Path) -> None:
    # Nothing of the program's runs after SIGKILL: the parent-death signal does it.
    async with program_running_a_command(tmp_path) as (program, command):
        program.kill()
        assert await program.wait() == -signal.SIGKILL
        await exited(command)
