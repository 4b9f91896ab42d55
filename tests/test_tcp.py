"""The tcp adapter: the behaviours every socket adapter shares (:class:`NetworkSuite`),
plus TLS, IPv6 and ``serve``."""

from __future__ import annotations

import logging
import socket
import ssl
import sys
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
    samples,
    wait_until,
)

from pipekit.adapters import tcp
from pipekit.adapters._listener import Listener
from pipekit.kernel import FramedPipe, ProtocolError, RemoteError


class TestTcp(NetworkSuite):
    kind = "tcp"


async def test_listener_address_and_label_name_the_bound_port() -> None:
    async with tcp.listen() as listener:
        host, port = listener.address
        assert host == LOCALHOST
        assert port > 0
        assert listener.label == f"tcp://{LOCALHOST}:{port}"


async def test_serve_runs_a_handler_until_cancelled() -> None:
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            listener: Listener = await nursery.start(tcp.serve, echo)
            async with tcp.connect(*listener.address) as pipe:
                assert await exchange(pipe, "served") == "served"
            nursery.cancel_scope.cancel()


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_loopback_round_trip() -> None:
    with trio.fail_after(HANG_GUARD):
        async with tcp.listen("::1", handler=echo) as listener:
            host, port = listener.address
            assert host == "::1"
            assert listener.label == f"tcp://::1:{port}"
            async with tcp.connect("::1", port) as pipe:
                assert await exchange(pipe, {"v": 6}) == {"v": 6}


# -- TLS -------------------------------------------------------------------------------


async def test_tls_round_trip(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    sent = samples(20_000)
    with trio.fail_after(HANG_GUARD):
        async with tcp.listen(handler=echo, ssl_context=server_tls) as listener:
            assert listener.label.startswith("tls://")
            _, port = listener.address
            async with tcp.connect(LOCALHOST, port, ssl_context=client_tls) as pipe:
                assert isinstance(pipe.stream, trio.SSLStream)
                async with trio.open_nursery() as nursery:

                    async def produce() -> None:
                        await pipe.send_batch(sent)
                        await pipe.end()

                    nursery.start_soon(produce)
                    got = [m async for batch in pipe.batches() for m in batch]
        assert got == sent


async def test_tls_server_hostname_can_be_given(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with tcp.listen(handler=echo, ssl_context=server_tls) as listener:
            _, port = listener.address
            # The certificate also names "localhost"; the default would be the host.
            async with tcp.connect(
                LOCALHOST, port, ssl_context=client_tls, server_hostname="localhost"
            ) as pipe:
                assert await exchange(pipe, "named") == "named"


async def test_plaintext_client_against_tls_listener_fails_cleanly_on_both_sides(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    timeout = 2.0
    with trio.fail_after(HANG_GUARD):
        async with tcp.listen(handler=echo, ssl_context=server_tls) as listener:
            _, port = listener.address
            start = trio.current_time()
            with pytest.raises((ProtocolError, trio.BrokenResourceError)):
                async with tcp.connect(LOCALHOST, port, handshake_timeout=timeout):
                    pytest.fail("a plaintext client got through TLS")
            assert trio.current_time() - start < timeout
            refusal = await listener.wait_refused()
            assert refusal.kind == "tls"
            assert "TLS handshake failed" in refusal.reason
            # A TLS peer is still served.
            async with tcp.connect(LOCALHOST, port, ssl_context=client_tls) as pipe:
                assert await exchange(pipe, "tls") == "tls"


async def test_tls_client_against_plaintext_listener_fails_cleanly_on_both_sides(
    client_tls: ssl.SSLContext,
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with tcp.listen(handler=echo) as listener:
            _, port = listener.address
            with pytest.raises(trio.BrokenResourceError) as info:
                async with tcp.connect(
                    LOCALHOST, port, ssl_context=client_tls, handshake_timeout=2
                ):
                    pytest.fail("a TLS client got through to a plaintext listener")
            assert isinstance(info.value.__cause__, ssl.SSLError)
            # The listener read the ClientHello as a pipekit/1 header: which rule it breaks
            # first depends on the ClientHello's length.
            assert (await listener.wait_refused()).kind in ("malformed", "oversize")
            async with tcp.connect(LOCALHOST, port) as pipe:
                assert await exchange(pipe, "plain") == "plain"


async def test_client_that_does_not_trust_the_ca_fails_with_a_certificate_error(
    server_tls: ssl.SSLContext,
) -> None:
    untrusting = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    trustme.CA().configure_trust(untrusting)  # some other CA
    with trio.fail_after(HANG_GUARD):
        async with tcp.listen(handler=echo, ssl_context=server_tls) as listener:
            _, port = listener.address
            with pytest.raises(trio.BrokenResourceError) as info:
                async with tcp.connect(LOCALHOST, port, ssl_context=untrusting):
                    pytest.fail("an untrusted certificate was accepted")
            assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
            refusal = await listener.wait_refused()
            assert refusal.kind == "tls"


async def test_a_certificate_error_is_not_retried(
    server_tls: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pipekit.adapters")
    untrusting = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    trustme.CA().configure_trust(untrusting)  # some other CA
    with trio.fail_after(HANG_GUARD):
        async with tcp.listen(handler=echo, ssl_context=server_tls) as listener:
            _, port = listener.address
            retry = tcp.Reconnect(attempts=5, initial=0.01)
            with pytest.raises(trio.BrokenResourceError):
                async with tcp.connect(LOCALHOST, port, ssl_context=untrusting, reconnect=retry):
                    pytest.fail("an untrusted certificate was accepted")
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


async def test_silent_peer_is_refused_during_the_tls_handshake(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with tcp.listen(
            handler=echo, ssl_context=server_tls, handshake_timeout=0.3, max_peers=1
        ) as listener:
            _, port = listener.address
            async with await trio.open_tcp_stream(LOCALHOST, port) as silent:
                refusal = await listener.wait_refused()
                assert refusal.kind == "handshake_timeout"
                assert await silent.receive_some() == b""  # closed by the listener
            # Its slot (the only one) is free again.
            async with tcp.connect(LOCALHOST, port, ssl_context=client_tls) as pipe:
                assert await exchange(pipe, "next") == "next"


async def test_one_handshake_timeout_covers_tls_and_hello_together(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    # The peer takes 0.7 of the timeout to start TLS, completes it, then never sends
    # HELLO: it is refused one timeout after it connected, not 0.7 + 1 timeouts.
    timeout = 1.0
    with trio.fail_after(HANG_GUARD):
        async with tcp.listen(
            handler=echo, ssl_context=server_tls, handshake_timeout=timeout
        ) as listener:
            _, port = listener.address
            async with await trio.open_tcp_stream(LOCALHOST, port) as plain:
                start = trio.current_time()
                await trio.sleep(0.7 * timeout)  # the slow peer, not a synchronisation
                tls = trio.SSLStream(plain, client_tls, server_hostname=LOCALHOST)
                await tls.do_handshake()
                refusal = await listener.wait_refused()
                waited = trio.current_time() - start
    assert refusal.kind == "handshake_timeout"
    assert timeout * 0.9 <= waited < timeout * 1.5


async def test_tls_server_that_never_answers_times_out_like_any_handshake(
    client_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    # The same ProtocolError (kind handshake_timeout, which reconnect retries) as a
    # plaintext or WebSocket handshake that never completes.
    net = Net("tcp", tmp_path)
    with trio.fail_after(HANG_GUARD):
        async with net.black_hole():
            with pytest.raises(ProtocolError) as info:
                async with tcp.connect(
                    LOCALHOST, net.port, ssl_context=client_tls, handshake_timeout=0.3
                ):
                    pytest.fail("connected to a server that never answers")
    assert info.value.kind == "handshake_timeout"
    assert "TLS handshake did not complete within 0.3 s" in str(info.value)


async def test_peer_hello_is_reported_without_the_token(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    seen: list[str] = []

    async def who(pipe: FramedPipe) -> None:
        seen.append(pipe.peer["name"])
        assert "token" not in pipe.peer
        await echo(pipe)

    with trio.fail_after(HANG_GUARD):
        async with tcp.listen(handler=who, ssl_context=server_tls, token="t") as listener:
            _, port = listener.address
            async with tcp.connect(
                LOCALHOST, port, ssl_context=client_tls, token="t", name="tls-client"
            ) as pipe:
                assert await exchange(pipe, 1) == 1
    assert seen == ["tls-client"]


async def test_tls_listener_refuses_a_busy_peer_inside_tls(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    with trio.fail_after(HANG_GUARD):
        async with tcp.listen(handler=echo, ssl_context=server_tls, max_peers=1) as listener:
            _, port = listener.address
            async with tcp.connect(LOCALHOST, port, ssl_context=client_tls) as first:
                # The TLS client can read why it was turned away.
                with pytest.raises(RemoteError) as info:
                    async with tcp.connect(LOCALHOST, port, ssl_context=client_tls):
                        pytest.fail("a second peer got the only slot")
                assert info.value.kind == "busy"
                assert (await listener.wait_refused()).kind == "busy"
                assert await exchange(first, "first") == "first"


async def test_connections_beyond_every_slot_are_closed_at_once(
    server_tls: ssl.SSLContext,
) -> None:
    # max_peers=1: one connection holds the peer slot, one more may wait to be told
    # "busy"; both stall in the TLS handshake forever (no handshake timeout), so a third
    # is closed at once instead of piling up.
    with trio.fail_after(HANG_GUARD):
        async with tcp.listen(
            handler=echo, ssl_context=server_tls, max_peers=1, handshake_timeout=None
        ) as listener:
            _, port = listener.address
            async with (
                await trio.open_tcp_stream(LOCALHOST, port),
                await trio.open_tcp_stream(LOCALHOST, port),
            ):
                await wait_until(lambda: listener.peers == 1 and listener.refusing == 1)
                async with await trio.open_tcp_stream(LOCALHOST, port) as third:
                    assert await third.receive_some() == b""
                refusal = await listener.wait_refused()
    assert refusal.kind == "busy"
    assert "closed without a reply" in refusal.reason


def test_reconnect_delay_stays_at_max_delay_however_many_attempts() -> None:
    policy = tcp.Reconnect(attempts=10_000, initial=0.1, factor=2.0, max_delay=5.0)
    assert [policy.delay(n) for n in (0, 1, 100, 5000)] == [0.1, 0.2, 5.0, 5.0]


@pytest.mark.skipif(
    sys.platform != "linux" or not hasattr(socket, "TCP_NOTSENT_LOWAT"), reason="Linux option"
)
async def test_both_ends_of_a_connection_queue_unsent_bytes_without_trios_16_kib_limit() -> None:
    with trio.fail_after(HANG_GUARD):
        async with tcp.listen() as listener, tcp.connect(*listener.address) as client:
            server = await listener.accept()
            for pipe in (client, server):
                stream = pipe.stream
                assert isinstance(stream, trio.SocketStream)
                lowat = stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)
                assert lowat == 0  # the system's default: no limit
            await server.aclose()
