"""``pipekit serve``: the demo server and its endpoints."""

from __future__ import annotations

import io
import subprocess
import sys
from functools import partial
from typing import Any

import pytest
import trio
from websockets.exceptions import InvalidStatus

from pipekit.adapters import tcp, websocket
from pipekit.cli.serve import readings, serve_demo

HANG_GUARD = 20


async def transform(pipe: Any) -> int:
    """Act as the demo's module: send back every reading with a field added."""
    count = 0
    async for batch in pipe.batches():
        await pipe.send_batch([{**m, "by": "python"} for m in batch])
        count += len(batch)
    await pipe.end()
    return count


def test_readings_are_numbered_and_reproducible() -> None:
    first = list(readings(100, seed=3))
    assert [r["seq"] for r in first] == list(range(100))
    assert first == list(readings(100, seed=3))


async def test_a_tcp_peer_joins_the_demo_pipeline_and_its_replies_are_counted() -> None:
    out = io.StringIO()
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(
                partial(serve_demo, port=0, tcp_port=0, count=5_000, rate=None, out=out)
            )
            host, port = addresses["tcp"]
            async with tcp.connect(host, port, name="py-peer") as pipe:
                assert await transform(pipe) == 5_000
                # The server ends its side once it has counted every reply.
                with trio.fail_after(HANG_GUARD):
                    async for _ in pipe:
                        pass
            nursery.cancel_scope.cancel()
    log = out.getvalue()
    assert "+ " in log and "joined" in log
    assert "5,000 back (in order)" in log


async def test_the_demo_serves_the_page_and_the_browser_client_over_http() -> None:
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(partial(serve_demo, port=0, out=io.StringIO()))
            host, port = addresses["page"].split("//", 1)[1].rstrip("/").split(":")
            for path, expected in (("/", b"<canvas"), ("/pipekit.js", b"export async function")):
                stream = await trio.open_tcp_stream(host, int(port))
                await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                data = b""
                while b"\r\n\r\n" not in data or expected not in data:
                    chunk = await stream.receive_some()
                    if not chunk:
                        break
                    data += chunk
                await stream.aclose()
                assert data.startswith(b"HTTP/1.1 200"), data[:100]
                assert expected in data
            nursery.cancel_scope.cancel()


async def test_a_websocket_peer_with_the_wrong_token_is_refused() -> None:
    out = io.StringIO()
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(
                partial(serve_demo, port=0, token="right", out=out, count=10, rate=None)
            )
            origin = addresses["page"].rstrip("/")
            url = addresses["websocket"]
            try:
                async with websocket.connect(url, token="wrong", origin=origin):
                    raise AssertionError("the wrong token was accepted")
            except Exception as exc:
                assert getattr(exc, "kind", None) == "auth_failed", exc
            async with websocket.connect(url, token="right", origin=origin) as pipe:
                assert await transform(pipe) == 10
            nursery.cancel_scope.cancel()


def test_pipekit_serve_prints_its_endpoints() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipekit", "serve", "--port", "0", "--exit-after", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "demo page" in result.stdout
    assert "/pipekit.js" in result.stdout
    assert "ws://127.0.0.1:" in result.stdout


async def test_by_default_only_the_demos_own_pages_may_connect() -> None:
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(partial(serve_demo, port=0, out=io.StringIO()))
            url = addresses["websocket"]
            port = url.rsplit(":", 1)[1].split("/")[0]
            for foreign in ("http://evil.example", None, f"http://127.0.0.1:{int(port) + 1}"):
                with pytest.raises(InvalidStatus) as info:
                    async with websocket.connect(url, origin=foreign):
                        pass
                assert info.value.response.status_code == 403
            for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
                async with websocket.connect(url, origin=own) as pipe:
                    await pipe.end()
            nursery.cancel_scope.cancel()
