"""The websocket adapter: the behaviours every socket adapter shares (:class:`NetworkSuite`),
plus what WebSocket adds: one frame per binary message, the HTTP side (origins, paths,
the browser client), compression and ``wss:``."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest
import trio
import trustme
from net_helpers import (
    HANG_GUARD,
    LOCALHOST,
    Net,
    NetworkSuite,
    echo,
    exchange,
    raw_websocket_peer,
    wait_until,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.trio.client import connect as ws_connect
from websockets.trio.connection import Connection as WebSocket
from websockets.typing import Origin

from pipekit.adapters import websocket
from pipekit.adapters._listener import Listener
from pipekit.kernel import FramedPipe, ProtocolError, RemoteError
from pipekit.kernel.protocol import EndReceived, FrameType, encode_frame


class TestWebSocket(NetworkSuite):
    kind = "websocket"

    def check_oversize_seen_by_sender(self, exc: BaseException) -> None:
        # The listener's WebSocket layer refuses the message (close code 1009, "message
        # too big") before pipekit/1 sees it; the sender gets that as an ERROR all the same.
        assert isinstance(exc, RemoteError), repr(exc)
        assert exc.kind == "oversize"
        assert "4104 bytes" in exc.message  # max_frame + the 8-byte header


def ws_of(pipe: FramedPipe) -> WebSocket:
    assert isinstance(pipe.stream, websocket.WebSocketTransport)
    return pipe.stream.ws


async def http_get(listener: Listener, path: str) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 GET: status, headers (lower-case names) and body."""
    host, port = listener.address
    async with await trio.open_tcp_stream(host, port) as stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
    return int(status_line.split()[1]), headers, body


# -- the HTTP side ---------------------------------------------------------------------


async def test_listener_url_names_the_bound_port() -> None:
    async with websocket.listen(path="/pk") as listener:
        host, port = listener.address
        assert listener.url == f"ws://{host}:{port}/pk"
        assert listener.label == listener.url


async def test_browser_client_is_served_as_javascript() -> None:
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen() as listener:
            status, headers, body = await http_get(listener, "/pipekit.js")
    assert status == 200
    assert headers["content-type"] == "text/javascript"
    assert int(headers["content-length"]) == len(body)
    assert body == websocket.browser_client()
    assert b"pipekit/1" in body


async def test_unknown_http_path_is_404() -> None:
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen() as listener:
            status, _, _ = await http_get(listener, "/nothing-here")
            assert status == 404
            assert listener.refused == 0  # a plain GET is not a refused peer


async def test_extra_http_resources_are_served() -> None:
    page = websocket.HttpResource(b"<h1>demo</h1>")
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(http={"/": page}) as listener:
            status, headers, body = await http_get(listener, "/?x=1")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert body == b"<h1>demo</h1>"


async def test_disallowed_origin_is_refused_403_while_others_keep_working() -> None:
    origins = ["https://app.example"]
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo, origins=origins) as listener:
            url = listener.url
            assert url is not None
            async with websocket.connect(url, origin="https://app.example") as pipe:
                with pytest.raises(InvalidStatus) as info:
                    async with websocket.connect(url, origin="https://evil.example"):
                        pytest.fail("a disallowed origin got through")
                assert info.value.response.status_code == 403
                assert b"not allowed" in info.value.response.body
                refusal = await listener.wait_refused()
                assert refusal.kind == "origin"
                assert "https://evil.example" in refusal.reason
                assert await exchange(pipe, "allowed") == "allowed"


async def test_by_default_only_its_own_pages_and_clients_without_origin_may_connect() -> None:
    # Another site open in the same browser must not reach a listener (one on loopback
    # included) unless the listener says so.
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo) as listener:
            assert listener.url is not None
            _, port = listener.address
            for foreign in ("https://evil.example", f"http://127.0.0.1:{port + 1}"):
                with pytest.raises(InvalidStatus) as info:
                    async with websocket.connect(listener.url, origin=foreign):
                        pytest.fail(f"a page of {foreign} got through")
                assert info.value.response.status_code == 403
            assert (await listener.wait_refused(2)).kind == "origin"
            for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", None):
                async with websocket.connect(listener.url, origin=own) as pipe:
                    assert await exchange(pipe, own) == own
        async with websocket.listen(handler=echo, origins=None) as anyone:
            assert anyone.url is not None
            async with websocket.connect(anyone.url, origin="https://evil.example") as pipe:
                assert await exchange(pipe, "admitted") == "admitted"


async def test_client_without_origin_is_admitted_only_if_none_is_allowed() -> None:
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo, origins=["https://app.example"]) as strict:
            assert strict.url is not None
            with pytest.raises(InvalidStatus) as info:
                async with websocket.connect(strict.url):
                    pytest.fail("a client without Origin got through")
            assert info.value.response.status_code == 403
            assert (await strict.wait_refused()).kind == "origin"
        async with websocket.listen(handler=echo, origins=["https://app.example", None]) as lax:
            assert lax.url is not None
            async with websocket.connect(lax.url) as pipe:
                assert await exchange(pipe, "no origin") == "no origin"


async def test_upgrade_with_two_origin_headers_is_refused_403() -> None:
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo, origins=["https://app.example"]) as listener:
            assert listener.url is not None
            with pytest.raises(InvalidStatus) as info:
                async with ws_connect(
                    listener.url,
                    origin=Origin("https://app.example"),
                    additional_headers=[("Origin", "https://evil.example")],
                ):
                    pytest.fail("an upgrade with two origins got through")
            assert info.value.response.status_code == 403
            refusal = await listener.wait_refused()
    assert refusal.kind == "origin"
    assert "more than one Origin" in refusal.reason


async def test_wrong_websocket_path_is_404() -> None:
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo) as listener:
            host, port = listener.address
            with pytest.raises(InvalidStatus) as info:
                async with websocket.connect(f"ws://{host}:{port}/elsewhere"):
                    pytest.fail("connected to a path nobody serves")
            assert info.value.response.status_code == 404
            refusal = await listener.wait_refused()
            assert refusal.kind == "not_found"
            assert "/ws" in refusal.reason


async def test_compression_is_off_by_default_even_if_the_client_asks() -> None:
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo) as listener:
            assert listener.url is not None
            async with websocket.connect(listener.url, compression=True) as pipe:
                assert ws_of(pipe).protocol.extensions == []
                assert await exchange(pipe, "x" * 1000) == "x" * 1000


async def test_compression_when_both_sides_ask() -> None:
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo, compression=True) as listener:
            assert listener.url is not None
            async with websocket.connect(listener.url, compression=True) as pipe:
                [extension] = ws_of(pipe).protocol.extensions
                assert isinstance(extension, PerMessageDeflate)
                assert await exchange(pipe, "x" * 1000) == "x" * 1000


async def test_connection_that_never_upgrades_is_refused_after_the_handshake_timeout() -> None:
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo, handshake_timeout=0.3) as listener:
            host, port = listener.address
            assert listener.url is not None
            async with (
                websocket.connect(listener.url) as other,
                await trio.open_tcp_stream(host, port) as silent,
            ):
                start = trio.current_time()
                assert await silent.receive_some() == b""  # closed by the listener
                assert trio.current_time() - start >= 0.3 * 0.9
                refusal = await listener.wait_refused()
                assert refusal.kind == "handshake_timeout"
                assert await exchange(other, "other") == "other"


async def test_one_handshake_timeout_covers_the_upgrade_and_hello_together() -> None:
    # The peer takes 0.7 of the timeout to send its upgrade request, is upgraded, then
    # never sends HELLO: it is refused one timeout after it connected.
    timeout = 1.0
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo, handshake_timeout=timeout) as listener:
            host, port = listener.address
            async with await trio.open_tcp_stream(host, port) as slow:
                start = trio.current_time()
                await trio.sleep(0.7 * timeout)  # the slow peer, not a synchronisation
                await slow.send_all(
                    f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += await slow.receive_some()
                head, _, rest = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101")
                if not rest:  # the next WebSocket message: the ERROR frame
                    rest = await slow.receive_some()
                waited = trio.current_time() - start
                assert b"handshake_timeout" in rest
                refusal = await listener.wait_refused()
    assert refusal.kind == "handshake_timeout"
    assert timeout * 0.9 <= waited < timeout * 1.5


async def test_connection_closed_before_the_upgrade_is_recorded() -> None:
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo) as listener:
            host, port = listener.address
            stream = await trio.open_tcp_stream(host, port)
            await stream.aclose()
            refusal = await listener.wait_refused()
            assert refusal.kind == "handshake"
            assert refusal.peer.startswith(f"{LOCALHOST}:")


async def test_connection_that_is_not_http_is_refused_as_malformed() -> None:
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo) as listener:
            host, port = listener.address
            async with await trio.open_tcp_stream(host, port) as stream:
                await stream.send_all(b"\x00\x01 not http at all\r\n\r\n")
                assert await stream.receive_some() == b""
            refusal = await listener.wait_refused()
            assert refusal.kind == "malformed"
            assert "HTTP" in refusal.reason


async def test_connections_beyond_every_slot_are_closed_at_once() -> None:
    # max_peers=1: one connection holds the peer slot, one more may wait to be told
    # "busy"; with no handshake timeout both could stall forever, so a third is closed
    # at once instead of piling up.
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo, max_peers=1, handshake_timeout=None) as lst:
            host, port = lst.address
            async with (
                await trio.open_tcp_stream(host, port),
                await trio.open_tcp_stream(host, port),
            ):
                await wait_until(lambda: lst.peers == 1 and lst.refusing == 1)
                async with await trio.open_tcp_stream(host, port) as third:
                    assert await third.receive_some() == b""
                refusal = await lst.wait_refused()
    assert refusal.kind == "busy"
    assert "closed without a reply" in refusal.reason


# -- one frame per binary message ------------------------------------------------------


@pytest.fixture
def net(tmp_path: Path) -> Net:
    return Net("websocket", tmp_path)


async def test_text_message_is_refused_as_malformed(net: Net) -> None:
    with trio.fail_after(HANG_GUARD):
        async with net.listen(handler=echo) as listener, net.raw(listener) as raw:
            await raw.send_raw('{"protocol": "pipekit/1"}')
            await raw.read_to_end()
            refusal = await listener.wait_refused()
    assert refusal.kind == "malformed"
    assert "text WebSocket message" in refusal.reason
    assert [(e.kind, e.message) for e in raw.errors()] == [(refusal.kind, refusal.reason)]


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"\x00\x00\x00", id="shorter-than-a-header"),
        # 7 bytes: one short of a header, whose "length" would make it exactly one frame.
        pytest.param(encode_frame(FrameType.END)[:7], id="seven-bytes"),
        pytest.param(encode_frame(FrameType.HELLO, b"{}", json_flag=True)[:-1], id="cut-short"),
        pytest.param(encode_frame(FrameType.PING) * 2, id="two-frames"),
    ],
)
async def test_binary_message_that_is_not_one_frame_is_refused_as_malformed(
    net: Net, message: bytes
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with net.listen(handler=echo) as listener, net.raw(listener) as raw:
            await raw.send_raw(message)
            await raw.read_to_end()
            refusal = await listener.wait_refused()
    assert refusal.kind == "malformed"
    assert "exactly one frame" in refusal.reason
    assert [e.kind for e in raw.errors()] == ["malformed"]


async def test_seven_then_one_byte_messages_are_refused_not_joined_into_an_end(
    net: Net,
) -> None:
    # The two messages together are an END frame; each alone is not a frame at all. The
    # listener refuses the first (ERROR, then close), and its pipe fails rather than
    # seeing a clean end.
    end = encode_frame(FrameType.END)
    with trio.fail_after(HANG_GUARD):
        async with net.listen() as listener, net.raw(listener) as raw:
            await raw.handshake()
            async with await listener.accept() as pipe:
                await raw.send_raw(end[:7])
                with contextlib.suppress(ConnectionClosed):  # it may be closed by then
                    await raw.send_raw(end[7:])
                with pytest.raises(ProtocolError) as info:
                    await pipe.receive()
                assert info.value.kind == "malformed"
            await raw.read_to_end()
    assert [e.kind for e in raw.errors()] == ["malformed"]
    assert raw.close_code == 1000


async def test_oversize_message_gets_an_oversize_error_before_close_1009(net: Net) -> None:
    with trio.fail_after(HANG_GUARD):
        async with net.listen(max_frame=4096) as listener, net.raw(listener) as raw:
            await raw.handshake()
            async with await listener.accept() as pipe:
                # A whole frame, but 10,008 bytes: more than max_frame + 8 = 4104.
                await raw.send_raw(encode_frame(FrameType.DATA, b"x" * 10_000))
                with pytest.raises(ProtocolError) as info:
                    await pipe.receive()
                assert info.value.kind == "oversize"
            await raw.read_to_end()
    [error] = raw.errors()
    assert error.kind == "oversize"
    assert "10008 bytes exceeds limit of 4104 bytes" in error.message
    assert raw.close_code == 1009


async def test_the_client_too_tells_an_oversize_sender_why_before_1009() -> None:
    seen: list[BaseException] = []

    async def rogue(pipe: FramedPipe) -> None:
        pipe.conn.peer_max_frame = 1 << 20  # a peer that ignores the announced limit
        await pipe.send(b"x" * 10_000)
        try:
            await pipe.receive()
        except (RemoteError, trio.BrokenResourceError) as exc:
            seen.append(exc)

    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=rogue) as listener:
            assert listener.url is not None
            async with websocket.connect(listener.url, max_frame=4096) as pipe:
                with pytest.raises(ProtocolError) as info:
                    await pipe.receive()
                assert info.value.kind == "oversize"
            await wait_until(lambda: bool(seen))
    [error] = seen
    assert isinstance(error, RemoteError), repr(error)
    assert error.kind == "oversize"
    # The client's own ERROR, not the stand-in for a bare close 1009.
    assert error.message.startswith("WebSocket message too big: ")
    assert "exceeds limit of 4104 bytes" in error.message


async def test_after_its_own_end_the_listener_closes_1009_without_an_error(net: Net) -> None:
    # An ERROR after END in the same direction would be malformed: the close alone says it.
    with trio.fail_after(HANG_GUARD):
        async with net.listen(max_frame=4096) as listener, net.raw(listener) as raw:
            await raw.handshake()
            async with await listener.accept() as pipe:
                await pipe.end()
                while not any(isinstance(e, EndReceived) for e in raw.events):
                    await raw.read_once()
                await raw.send_raw(encode_frame(FrameType.DATA, b"x" * 10_000))
                with pytest.raises(ProtocolError) as info:
                    await pipe.receive()
                assert info.value.kind == "oversize"
            await raw.read_to_end()
    assert raw.errors() == []
    assert raw.close_code == 1009


async def test_text_message_after_the_handshake_fails_the_pipe(net: Net) -> None:
    with trio.fail_after(HANG_GUARD):
        async with net.listen() as listener, net.raw(listener) as raw:
            await raw.handshake()
            async with await listener.accept() as pipe:
                await raw.send_raw("hello")
                with pytest.raises(ProtocolError) as info:
                    await pipe.receive()
                assert info.value.kind == "malformed"
            await raw.read_to_end()
    assert [e.kind for e in raw.errors()] == ["malformed"]


async def test_raw_websocket_peer_sees_the_listener_answer_hello() -> None:
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo) as listener:
            assert listener.url is not None
            async with raw_websocket_peer(listener.url) as raw:
                await raw.handshake()
                assert raw.conn.codec_name == "msgpack"


# -- the listener's block --------------------------------------------------------------


async def test_exception_in_the_listener_block_comes_out_as_itself() -> None:
    with pytest.raises(KeyError):
        async with websocket.listen():
            raise KeyError("boom")


async def test_serve_runs_a_handler_until_cancelled() -> None:
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            listener: Listener = await nursery.start(websocket.serve, echo)
            assert listener.url is not None
            async with websocket.connect(listener.url) as pipe:
                assert await exchange(pipe, "served") == "served"
            nursery.cancel_scope.cancel()


# -- wss: ------------------------------------------------------------------------------


async def test_wss_round_trip(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo, ssl_context=server_tls) as listener:
            assert listener.url is not None
            assert listener.url.startswith("wss://")
            async with websocket.connect(listener.url, ssl_context=client_tls) as pipe:
                assert await exchange(pipe, {"secure": True}) == {"secure": True}


async def test_plaintext_client_against_wss_listener_is_refused_as_tls(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo, ssl_context=server_tls) as listener:
            assert listener.url is not None
            plain_url = "ws://" + listener.url.removeprefix("wss://")
            with pytest.raises(ProtocolError) as info:
                async with websocket.connect(plain_url, handshake_timeout=2):
                    pytest.fail("a plaintext client got through TLS")
            assert info.value.kind == "handshake"
            assert "did not answer the WebSocket upgrade" in str(info.value)
            refusal = await listener.wait_refused()
            assert refusal.kind == "tls"
            assert "TLS handshake failed" in refusal.reason
            # A TLS peer is still served.
            async with websocket.connect(listener.url, ssl_context=client_tls) as pipe:
                assert await exchange(pipe, "tls") == "tls"


async def test_wss_client_that_does_not_trust_the_ca_is_refused_as_tls(
    server_tls: ssl.SSLContext,
) -> None:
    untrusting = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    trustme.CA().configure_trust(untrusting)  # some other CA
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(handler=echo, ssl_context=server_tls) as listener:
            assert listener.url is not None
            with pytest.raises((trio.BrokenResourceError, ssl.SSLError)):
                async with websocket.connect(listener.url, ssl_context=untrusting):
                    pytest.fail("an untrusted certificate was accepted")
            refusal = await listener.wait_refused()
            assert refusal.kind == "tls"


async def test_peer_silent_during_the_wss_tls_handshake_is_refused_after_the_timeout(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    timeout = 0.3
    with trio.fail_after(HANG_GUARD):
        async with websocket.listen(
            handler=echo, ssl_context=server_tls, handshake_timeout=timeout
        ) as listener:
            host, port = listener.address
            assert listener.url is not None
            async with await trio.open_tcp_stream(host, port) as silent:
                start = trio.current_time()
                assert await silent.receive_some() == b""  # closed by the listener
                assert trio.current_time() - start >= timeout * 0.9
            refusal = await listener.wait_refused()
            assert refusal.kind == "handshake_timeout"
            assert "TLS handshake not completed" in refusal.reason
            async with websocket.connect(listener.url, ssl_context=client_tls) as pipe:
                assert await exchange(pipe, "after") == "after"


async def test_messages_larger_than_the_socket_buffers_arrive_whole_and_in_order() -> None:
    # A write the socket takes only part of is finished by send_all under websockets'
    # lock, ahead of anything else (a reply, a pong) written to the connection.
    sizes = [1, 3 << 20, 10, 2 << 20, 5]

    async def echo(pipe: FramedPipe) -> None:
        async for msg in pipe:
            await pipe.send(msg)

    got: list[bytes] = []
    with trio.fail_after(HANG_GUARD):
        async with (
            websocket.listen(handler=echo) as listener,
            websocket.connect(f"ws://127.0.0.1:{listener.address[1]}/ws") as pipe,
        ):

            async def produce() -> None:
                for i, size in enumerate(sizes):
                    await pipe.send(bytes([i]) * size)
                    await pipe.ping(b"between")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                for _ in sizes:
                    got.append(await pipe.receive())
    assert [(len(m), m[:1]) for m in got] == [(s, bytes([i])) for i, s in enumerate(sizes)]
    assert all(m == m[:1] * len(m) for m in got)
