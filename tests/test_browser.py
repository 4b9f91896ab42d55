"""A real headless Chromium runs the demo page as a module of a Python pipeline.

The page (``/`` from :func:`pipekit.cli.serve.demo_resources`) imports the browser client
``/pipekit.js``, connects to the WebSocket endpoint, transforms every reading it receives
and sends it back. Chromium is Debian's ``chromium`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from pipekit.adapters import websocket
from pipekit.cli.serve import demo_resources, readings, stream_through_peer
from pipekit.kernel import FramedPipe

pytestmark = pytest.mark.needs("chromium", "chromium")

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
PAGE_GUARD = 90  # seconds for a page to load, run and report; a guard, never a sync


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is on PATH for the needs mark but could not be found again")
    return found


@asynccontextmanager
async def headless_chromium(url: str, profile: Path) -> AsyncIterator[trio.Process]:
    """Chromium showing ``url`` with a fresh profile; its whole process group is killed
    (TERM, then KILL) when the block exits."""
    process = await trio.lowlevel.open_process(
        [chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                with trio.move_on_after(grace):
                    await process.wait()
                    break
            await process.wait()


def page_url(listener: websocket.Listener, **query: Any) -> str:
    assert listener.url is not None
    base = listener.url.replace("ws://", "http://", 1).rsplit("/", 1)[0]
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{base}/?{params}" if params else f"{base}/"


async def test_a_browser_page_transforms_10000_messages_in_order(tmp_path: Path) -> None:
    back: list[Any] = []
    finished = trio.Event()

    async def handler(pipe: FramedPipe) -> None:
        await stream_through_peer(pipe, count=10_000, on_message=back.append)
        finished.set()

    async with (
        websocket.listen(handler=handler, token="tok", http=demo_resources()) as listener,
        headless_chromium(page_url(listener, token="tok"), tmp_path / "profile"),
    ):
        with trio.fail_after(PAGE_GUARD):
            await finished.wait()
    sent = list(readings(10_000))
    assert [m["seq"] for m in back] == list(range(10_000))
    assert all(m["by"] == "browser" for m in back)
    for m, r in zip(back, sent, strict=True):
        assert (m["value"], m["double"]) == (r["value"], r["value"] * 2)
    running_mean = sum(r["value"] for r in sent) / len(sent)
    assert back[-1]["avg"] == pytest.approx(running_mean)


async def test_a_page_that_stops_reading_blocks_the_python_producer(tmp_path: Path) -> None:
    send_buffer = 16 * 1024
    stall_after = 100
    pause_slack = 1024 * 1024
    accepted = 0
    in_send = False
    stalled: dict[str, Any] = {}
    report = trio.Event()

    async def handler(pipe: FramedPipe) -> None:
        nonlocal accepted, in_send

        async def produce() -> None:
            nonlocal accepted, in_send
            for reading in readings(None):
                in_send = True
                await pipe.send(reading)
                in_send = False
                accepted += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async for message in pipe:
                if isinstance(message, dict) and message.get("stalled"):
                    stalled.update(message)
                    report.set()
            nursery.cancel_scope.cancel()

    async with (
        websocket.listen(handler=handler, http=demo_resources(), send_buffer=send_buffer) as lst,
        headless_chromium(
            page_url(lst, stall_after=stall_after, pause_slack=pause_slack),
            tmp_path / "profile",
        ),
    ):
        with trio.fail_after(PAGE_GUARD):
            await report.wait()
        assert stalled["received"] == stall_after
        # The producer must come to a stop: wait (bounded) until the count is stable.
        previous = -1
        for _ in range(100):
            if accepted == previous and in_send:
                break
            previous = accepted
            await trio.sleep(0.1)
        assert in_send, "the producer never blocked"
        # What a producer can get accepted while the page does not read: what the page
        # took (stall_after), its receive high-water (1024), what was in flight when its
        # PAUSE arrived, and our send buffer, at >= 20 bytes per encoded reading. What is
        # in flight depends on the socket buffers and on timing (it once measured ~100
        # KiB); the protocol bounds it by the page's pause slack, which the page enforces
        # (more would fail the connection with flow_control), so that is the bound.
        bound = stall_after + 1024 + (pause_slack + send_buffer) // 20
        assert accepted <= bound, f"{accepted} readings accepted, bound {bound}"
        held = accepted
        for _ in range(5):
            await trio.sleep(0.1)
            assert accepted == held


# -- pipekit.js against a scripted WebSocket -------------------------------------------

FAKE_SOCKET_PAGE = """<!doctype html>
<script type="module">
import { connect } from "/pipekit.js";

// A WebSocket stand-in driven by the script: records what the client writes, and
// delivers frames to it synchronously (all within one task).
class ScriptedSocket {
  constructor() {
    this.readyState = 0;
    this.bufferedAmount = 0;
    this.sent = [];
    ScriptedSocket.last = this;
  }
  send(data) { this.sent.push(new Uint8Array(data)); }
  close() { this.readyState = 3; }
  deliver(type, payload = new Uint8Array(0), flags = 0) {
    const bytes = new Uint8Array(8 + payload.byteLength);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, payload.byteLength);
    view.setUint16(4, type);
    view.setUint16(6, flags);
    bytes.set(payload, 8);
    this.onmessage({ data: bytes.buffer });
  }
  types() { return this.sent.map((f) => new DataView(f.buffer, f.byteOffset).getUint16(4)); }
}

async function scenario() {
  const connecting = connect("ws://scripted/", { ...OPTIONS, WebSocket: ScriptedSocket });
  const ws = ScriptedSocket.last;
  ws.readyState = 1;
  ws.onopen();
  const answer = {
    protocol: "pipekit/1", codec: "json", name: "scripted", max_frame: 65536, high_water: 8,
  };
  ws.deliver(8, new TextEncoder().encode(JSON.stringify(answer)), 1);
  const pipe = await connecting;
  SCENARIO
}

let result;
try {
  result = await scenario();
} catch (exc) {
  result = { error: String(exc && exc.stack || exc) };
}
const report = await connect("/ws");
await report.send(result);
await report.close();
</script>
"""


async def run_scripted_page(scenario: str, profile: Path, options: str = "{}") -> Any:
    """Run ``scenario`` (JavaScript, the body of an async function with ``pipe`` and
    ``ws`` in scope) in Chromium against a scripted WebSocket, the client connected with
    ``options`` (a JavaScript object literal); return what the scenario returns."""
    results: list[Any] = []
    reported = trio.Event()

    async def handler(pipe: FramedPipe) -> None:
        results.append(await pipe.receive())
        reported.set()

    source = FAKE_SOCKET_PAGE.replace("SCENARIO", scenario).replace("OPTIONS", options)
    page = websocket.HttpResource(source.encode())
    async with (
        websocket.listen(handler=handler, http={"/": page}) as listener,
        headless_chromium(page_url(listener), profile),
    ):
        with trio.fail_after(PAGE_GUARD):
            await reported.wait()
    [result] = results
    assert not (isinstance(result, dict) and "error" in result), result["error"]
    return result


async def test_a_violation_never_delivers_end_without_the_data_queued_before_it(
    tmp_path: Path,
) -> None:
    # The page sends a message and END while the server has it paused (both wait in the
    # queue), then the server breaks the protocol. END may go out only behind the DATA
    # queued before it, or not at all: END alone would be a clean end that lost data.
    types = await run_scripted_page(
        """
        const sent = pipe.send("queued before END");
        const ended = pipe.end().then(() => "written", (e) => "rejected: " + e.kind);
        ws.deliver(6);                                 // PAUSE: nothing more is written
        ws.deliver(1, new Uint8Array(0), 0x0002);      // reserved flag: a violation
        await sent;
        await ended;
        return ws.types().slice(1);                    // after our HELLO
        """,
        tmp_path / "profile",
    )
    assert types in ([1, 2], []), f"frames written after the violation: {types}"


async def test_large_messages_pause_the_server_at_the_byte_high_water_mark(
    tmp_path: Path,
) -> None:
    # Two DATA frames of one 62-byte JSON string each: far below highWater (1024
    # messages) but at highWaterBytes (100), so the client PAUSEs; taking one message
    # leaves 62 bytes (above lowWaterBytes, 50), taking the second RESUMEs.
    types = await run_scripted_page(
        """
        const text = new TextEncoder();
        ws.deliver(1, text.encode(JSON.stringify("a".repeat(60))), 1);
        const afterOne = ws.types().slice(1);
        ws.deliver(1, text.encode(JSON.stringify("b".repeat(60))), 1);
        const afterTwo = ws.types().slice(1);
        await pipe.receive();
        const afterTake = ws.types().slice(1);
        await pipe.receive();
        return [afterOne, afterTwo, afterTake, ws.types().slice(1)];
        """,
        tmp_path / "profile",
        options="{ highWaterBytes: 100, lowWaterBytes: 50 }",
    )
    assert types == [[], [6], [6], [6, 7]], types


async def test_messages_taken_by_a_waiting_receive_do_not_count_towards_the_byte_mark(
    tmp_path: Path,
) -> None:
    # One frame of two 62-byte messages while a receive() waits: the first is taken at
    # once, only the second (half the frame's bytes) is buffered; a second frame of 62
    # bytes reaches the mark (124 >= 100) and PAUSEs; RESUME once both are taken.
    types = await run_scripted_page(
        """
        const text = new TextEncoder();
        const first = pipe.receive();
        const two = JSON.stringify("a".repeat(60)) + "\\n" + JSON.stringify("b".repeat(60));
        ws.deliver(1, text.encode(two), 1);
        const taken = await first;
        const afterOne = ws.types().slice(1);
        ws.deliver(1, text.encode(JSON.stringify("c".repeat(60))), 1);
        const afterTwo = ws.types().slice(1);
        await pipe.receive();
        const afterTake = ws.types().slice(1);
        await pipe.receive();
        return [taken.length, afterOne, afterTwo, afterTake, ws.types().slice(1)];
        """,
        tmp_path / "profile",
        options="{ highWaterBytes: 100, lowWaterBytes: 50 }",
    )
    assert types == [60, [], [6], [6], [6, 7]], types
