"""``pipekit serve``: the demo server and its endpoints."""

from __future__ import annotations

import contextlib
import io
import re
import signal
import socket
import subprocess
import sys
from functools import partial
from typing import Any

import pytest
import trio
from websockets.exceptions import InvalidStatus

from pipekit.adapters import tcp, websocket
from pipekit.cli import main
from pipekit.cli.serve import readings, serve_demo
from pipekit.kernel import PipekitError

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


def _serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipekit", "serve", *args]


def _default_sigint() -> None:
    # A child inherits an ignored SIGINT (a shell's background job, say), and Python
    # then installs no KeyboardInterrupt handler: give it the default, as a terminal does.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def _read_until(stream: trio.abc.ReceiveStream, marker: bytes | None = None) -> bytes:
    """What ``stream`` brings until ``marker`` has arrived, or EOF."""
    data = b""
    while marker is None or marker not in data:
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data


async def test_ctrl_c_stops_pipekit_serve_with_one_line_and_exit_code_130() -> None:
    with trio.fail_after(HANG_GUARD):
        server = await trio.lowlevel.open_process(
            _serve_command("--port", "0", "--tcp-port", "0"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_default_sigint,
        )
        try:
            assert server.stdout is not None and server.stderr is not None
            # The endpoints are printed once every listener is up.
            banner = (await _read_until(server.stdout, b"Ctrl-C stops")).decode()
            page = re.search(r"demo page +(http://\S+)/", banner)
            url = re.search(r"WebSocket +(ws://\S+)", banner)
            tcp_address = re.search(r"TCP +(\S+):(\d+)", banner)
            assert page and url and tcp_address, banner
            # Ctrl-C while a TCP peer and a WebSocket peer are being served.
            with contextlib.suppress(PipekitError, trio.BrokenResourceError):
                async with (
                    tcp.connect(tcp_address[1], int(tcp_address[2])) as by_tcp,
                    websocket.connect(url[1], origin=page[1]) as by_websocket,
                ):
                    for pipe in (by_tcp, by_websocket):
                        await pipe.send_batch(await pipe.receive_batch())
                    server.send_signal(signal.SIGINT)
                    for pipe in (by_tcp, by_websocket):
                        with contextlib.suppress(PipekitError, trio.BrokenResourceError):
                            async for _ in pipe:
                                pass
            stderr = (await _read_until(server.stderr)).decode()  # to EOF
            await server.wait()
        finally:
            if server.returncode is None:
                server.kill()
                with trio.CancelScope(shield=True):
                    await server.wait()
    assert server.returncode == 130, stderr
    assert stderr.splitlines() == ["pipekit serve: stopped (Ctrl-C)"]


@pytest.mark.parametrize("option", ["--port", "--tcp-port"])
def test_a_busy_port_is_one_line_and_exit_code_1(option: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--port", "0", "--tcp-port", "0"]
        args[args.index(option) + 1] = str(port)
        result = subprocess.run(
            _serve_command(*args, "--exit-after", "5"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"pipekit serve: cannot listen on 127.0.0.1:{port}: "), line
    assert "in use" in line


def test_a_port_out_of_range_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--port", "99999"])
    assert info.value.code == 2
    assert "not a port number (0-65535): '99999'" in capsys.readouterr().err
