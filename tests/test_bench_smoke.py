"""Smoke tests of the benchmarks: each runs (``--quick``) and prints every row.

They assert nothing about speed: timings depend on the machine and its load, so a
benchmark is never a timed test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ROWS = {
    "bench/actors.py": [
        "messages: await send_wait() -> receive()",
        "messages: send() (MailboxFull: send_wait) -> receive()",
        "baseline trio memory channel: send() -> receive()",
        "spawn: node.spawn() to exit",
        "baseline nursery.start_soon() to exit",
        "nodes: unix, send_wait() one way",
        "nodes: tcp, send_wait() one way",
        "baseline mp.Pipe: send() one way",
        "nodes: unix, round trip p50 (us)",
        "nodes: tcp, round trip p50 (us)",
        'nodes: "process" host (stdio), round trip p50 (us)',
        "baseline trio <-> trio socket echo p50 (us)",
        "baseline mp.Pipe echo p50 (us)",
        "stage: pk.actor (listen -> emit, one at a time)",
        "stage: pk.map(async def), one await per message",
        "baseline stage: pk.map(def), batch by batch",
    ],
    "bench/concurrency.py": [
        "asyncio.gather (a coroutine per item)",
        "trio-nursery (a task per item)",
        "pk.parallel_map task backend, 100 at once",
        "ThreadPoolExecutor(16).map",
        "pk.parallel_map thread backend, 16 threads",
        "pipekit.channels.channel(0)",
        "pk.select over channel(100) and an idle one",
        "mp-spawn: multiprocessing.Pool(2).map [spawn]",
        "mp-fork: multiprocessing.Pool(2).map [fork]",
        "mpire: mpire.WorkerPool(2).map [fork]",
        "pk.parallel_map process backend, 2 workers",
        "mpire: mpire.WorkerPool(2, keep_alive).map [fork], started",
        "pk.WorkerPool(2).map (the process backend's pool), started",
    ],
    "bench/latency.py": [
        "floor: trio <-> trio socketpair echo",
        "floor: mp.Pipe send()/recv() echo",
        "floor: OS pipes, python readline",
        "in-process pipe: send() -> receive()",
        "thread port: echo thread",
        "Worker.call(): async worker",
        "Worker.call(): port worker",
        "unix: send() -> receive()",
        "tcp 127.0.0.1: send() -> receive()",
        "websocket: send() -> receive()",
    ],
    "bench/network.py": [
        "small msgs: unix (adapters.unix)",
        "small msgs: tcp 127.0.0.1 (adapters.tcp)",
        "small msgs: websocket (adapters.websocket)",
        "small msgs: plain websockets.trio, 1 msg/message",
        "small msgs: mp.Pipe send()/recv() per msg",
        "one at a time: unix send() -> receive()",
        "one at a time: tcp send() -> receive()",
        "one at a time: websocket send() -> receive()",
        "size 16 B: unix send(bytes) -> receive()",
        "size 64 KiB: tcp send(bytes) -> receive()",
        "size 1 MiB: websocket send(bytes) -> receive()",
        "size 1 MiB: mp.Pipe send_bytes()/recv_bytes()",
        "bulk bytes: unix (adapters.unix)",
        "bulk bytes: unix raw, blocking sockets",
        "bulk bytes: unix raw, trio SocketStream",
        "bulk bytes: tcp (adapters.tcp)",
        "bulk bytes: tcp raw, blocking sockets",
        "bulk bytes: tcp raw, trio SocketStream",
    ],
    "bench/throughput.py": [
        "in-process pipe: send_batch(256) -> batches()",
        "in-process pipe: send() -> async for (per msg)",
        "baseline trio memory channel: send() -> async for",
        "pipeline: pk.source(gen) | pk.sink(fn)",
        "thread port: thread send() -> trio batches()",
        "thread port: trio send_batch(256) -> thread iter",
        "thread port: thread send() -> trio async for (per msg)",
        "thread port: trio send() -> thread iter (per msg)",
        "framed socketpair: 1 process, 1 loop (1 core)",
        "framed socketpair: child -> parent (2 cores)",
        "baseline mp.Pipe: send()/recv() per msg",
        "baseline mp.Pipe: send(list of 256)",
    ],
    "bench/item_runtime.py": [
        "pk blocking child",
        "pk trio child",
        "mp.Pool fork",
        "mp.Pool spawn",
        "blocking / pk trio child",
        "import the blocking child",
        "import pipekit",
    ],
    "bench/pool.py": [
        "serial (this process)",
        "pk.WorkerPool(2).map",
        "multiprocessing.Pool(2).map [fork]",
        "serial calls (this process)",
        "pk.WorkerPool(2).map calls",
        "multiprocessing.Pool(2).map calls [fork]",
        "pk.WorkerPool(2).map noop",
        "multiprocessing.Pool(2).map noop [fork]",
        "multiprocessing.Pool(2).imap noop chunksize=1 [fork]",
        "start-up: pk.WorkerPool(2)",
        "start-up: multiprocessing.Pool(2) [spawn]",
        "start-up: multiprocessing.Pool(2) [fork]",
    ],
    "bench/processes.py": [
        "frames echo: worker_spec port echo",
        "frames echo: mp.Pipe echo per msg",
        "frames echo one at a time: parent send() each",
        "size 16 B: worker echo, send(bytes) each",
        "size 64 KiB: async worker echo, send(bytes) each",
        "size 1 MiB: mp.Pipe send_bytes() echo",
        "bytes through cat: open_process(bytes)",
        "bytes through cat: os.pipe blocking r/w",
        "spawn to first reply: pk.run",
        "spawn to first reply: mp spawn",
        "spawn to first reply: mp fork",
        "spawn to first reply: bare python child",
        "round trip: pk.run call(), port worker",
        "round trip: pk.run call(), async worker",
        "round trip: trio <-> trio socket echo",
        "round trip: OS pipes, python readline",
        "round trip: OS pipes, cat",
        "WorkerPool: bench/pool.py",
    ],
    "bench/threads.py": [
        "sleep 10 ms, 16 threads: pk.thread",
        "sleep 10 ms, 16 threads: ThreadPoolExecutor.map",
        "failure to caller: pk.thread",
        "failure to caller: ThreadPoolExecutor.map",
        "cheap items, 4 threads: pk.thread",
        "cheap items: pk.map (event loop)",
        "cheap items, 4 threads: ThreadPoolExecutor.map",
    ],
}


@pytest.mark.parametrize("script", sorted(ROWS))
def test_quick_run_prints_every_row(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, script, "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    report = f"exit code {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, report
    assert "machine: nproc=" in proc.stdout, report
    for row in ROWS[script]:
        assert row in proc.stdout, f"row {row!r} missing\n{report}"
