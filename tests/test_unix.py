"""The unix adapter: the behaviours every socket adapter shares (:class:`NetworkSuite`),
plus the life of the socket file (permissions, removal, stale and live files)."""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

import pytest
import trio
from net_helpers import HANG_GUARD, NetworkSuite, echo, exchange

from pipekit.adapters import unix
from pipekit.adapters._listener import Listener


class TestUnix(NetworkSuite):
    kind = "unix"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_socket_file_is_private_by_default(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    async with unix.listen(path) as listener:
        assert listener.address == str(path)
        assert listener.label == f"unix:{path}"
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert _mode(path) == 0o600


async def test_socket_file_gets_the_mode_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    old_umask = os.umask(0o077)  # the mode is set explicitly, whatever the umask
    try:
        async with unix.listen(path, mode=0o660, handler=echo):
            assert _mode(path) == 0o660
            async with unix.connect(path) as pipe:
                assert await exchange(pipe, "hi") == "hi"
    finally:
        os.umask(old_umask)


async def test_socket_file_is_removed_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    async with unix.listen(path):
        assert path.exists()
    assert not path.exists()


async def test_socket_file_is_removed_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with pytest.raises(KeyError):
        async with unix.listen(path):
            raise KeyError("boom")
    assert not path.exists()


async def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # a listener that died without removing its file
    dead.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    with trio.fail_after(HANG_GUARD):
        async with unix.listen(path, handler=echo), unix.connect(path) as pipe:
            assert await exchange(pipe, "fresh") == "fresh"


async def test_live_socket_file_raises_address_in_use(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with trio.fail_after(HANG_GUARD):
        async with unix.listen(path, handler=echo):
            with pytest.raises(OSError) as info:
                async with unix.listen(path):
                    pytest.fail("two listeners on one socket file")
            assert info.value.errno == errno.EADDRINUSE
            # The first listener is untouched.
            async with unix.connect(path) as pipe:
                assert await exchange(pipe, "first") == "first"


async def test_live_listener_with_a_full_backlog_is_not_taken_for_stale(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    busy.bind(str(path))
    busy.listen(0)
    queued: list[socket.socket] = []

    def listen_there() -> None:
        async def main() -> None:
            async with unix.listen(path):
                pytest.fail("listened over a live socket")

        trio.run(main)

    try:
        while len(queued) < 64:  # fill the backlog: the next connect would wait
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            queued.append(client)
            try:
                client.connect(str(path))
            except BlockingIOError:
                break
        else:
            pytest.fail("could not fill the listen backlog of 0: the case cannot be set up")
        # In a thread of its own, so that a listen() blocked on the full backlog fails
        # this test instead of hanging the run.
        with trio.fail_after(HANG_GUARD), pytest.raises(OSError) as info:
            await trio.to_thread.run_sync(listen_there, abandon_on_cancel=True)
        assert info.value.errno == errno.EADDRINUSE
    finally:
        for client in queued:
            client.close()
        busy.close()


async def test_regular_file_at_the_path_raises_file_exists(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    path.write_text("precious")
    with pytest.raises(FileExistsError):
        async with unix.listen(path):
            pytest.fail("listened over a regular file")
    assert path.read_text() == "precious"


async def test_exit_leaves_a_newer_listener_socket_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            async with unix.listen(path):
                os.unlink(path)  # someone removed our file and listens there now
                await nursery.start(unix.serve, echo, path)
            assert path.exists()
            async with unix.connect(path) as pipe:
                assert await exchange(pipe, "newer") == "newer"
            nursery.cancel_scope.cancel()


async def test_connect_to_a_missing_socket_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        async with unix.connect(tmp_path / "nobody.sock"):
            pytest.fail("connected to nothing")


async def test_serve_runs_a_handler_until_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            listener: Listener = await nursery.start(unix.serve, echo, path)
            assert listener.address == str(path)
            async with unix.connect(path) as pipe:
                assert await exchange(pipe, "served") == "served"
            nursery.cancel_scope.cancel()
    assert not path.exists()


def _core_limit(name: str) -> int:
    return int(Path(f"/proc/sys/net/core/{name}").read_text())


@pytest.mark.skipif(not os.path.exists("/proc/sys/net/core/wmem_max"), reason="Linux limits")
async def test_both_ends_of_a_connection_get_socket_buffers_of_socket_buffer_bytes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sock"
    caps = {socket.SO_SNDBUF: _core_limit("wmem_max"), socket.SO_RCVBUF: _core_limit("rmem_max")}
    with trio.fail_after(HANG_GUARD):
        async with unix.listen(path) as listener, unix.connect(path) as client:
            server = await listener.accept()
            for pipe in (client, server):
                stream = pipe.stream
                assert isinstance(stream, trio.SocketStream)
                for opt, cap in caps.items():
                    # (Linux reports twice what was set: the doubled bookkeeping allowance.)
                    got = stream.socket.getsockopt(socket.SOL_SOCKET, opt)
                    assert got >= min(unix.SOCKET_BUFFER, cap)
            await server.aclose()
