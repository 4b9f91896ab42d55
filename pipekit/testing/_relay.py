"""The child side of the stdio conformance row: a two-way pipekit/1 relay.

``python -m pipekit.testing._relay SOCKET_PATH [--high-water N] [--send-buffer N]
[--pause-slack N] [--batch N]`` accepts pipekit/1 from its parent on stdin/stdout
("up"), connects to the Unix socket ``SOCKET_PATH`` and initiates pipekit/1 there
("down"), and forwards messages both ways in batches of at most ``--batch``. An END or
an ERROR (its kind, message and details) is forwarded as such; a broken side fails the
other direction. Buffering is bounded: one batch in hand per direction plus the framed
pipes' own buffers (the ``--high-water``, ``--send-buffer`` and ``--pause-slack`` of
both). Exits 0 once both directions are finished, however they ended; 1 if a handshake
failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from collections.abc import Awaitable
from typing import Any

import trio

from ..kernel import PipekitError, RemoteError, framed_pipe
from ..kernel.framed import FramedPipe

__all__ = ["main"]


class _Relayed(Exception):
    """An ERROR received on one side, failing the other with the same kind/message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


async def _forward(src: FramedPipe, dst: FramedPipe, batch: int) -> None:
    """Move messages from ``src`` to ``dst`` until ``src`` ends (END is forwarded) or
    fails (the failure is forwarded), or ``dst`` stops accepting."""
    try:
        async for messages in src.batches(batch):
            try:
                await dst.send_batch(messages)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the far side is gone; leaving closes this side too
    except RemoteError as exc:
        await _quietly(dst.fail(_Relayed(exc.kind, exc.message), **_details(exc.details)))
        return
    except (PipekitError, trio.BrokenResourceError) as exc:
        await _quietly(dst.fail(exc))
        return
    except trio.ClosedResourceError:
        return
    await _quietly(dst.end())


def _details(details: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in details.items() if k not in ("kind", "message")}


async def _quietly(op: Awaitable[None]) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, PipekitError):
        await op


async def _run(args: argparse.Namespace) -> None:
    options: dict[str, Any] = {
        "high_water": args.high_water,
        "send_buffer": args.send_buffer,
        "pause_slack": args.pause_slack,
    }
    up_stream = trio.StapledStream(
        trio.lowlevel.FdStream(os.dup(1)), trio.lowlevel.FdStream(os.dup(0))
    )
    # Nothing else may write to the frames channel.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)
    os.close(null)
    async with framed_pipe(up_stream, initiator=False, name="relay-up", **options) as up:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.connect(args.socket_path)
        async with (
            framed_pipe(
                trio.SocketStream(sock), initiator=True, name="relay-down", **options
            ) as down,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(_forward, up, down, args.batch)
            nursery.start_soon(_forward, down, up, args.batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipekit.testing._relay")
    parser.add_argument("socket_path")
    parser.add_argument("--high-water", type=int, default=64)
    parser.add_argument("--send-buffer", type=int, default=16 * 1024)
    parser.add_argument("--pause-slack", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        trio.run(_run, args)
    except (PipekitError, trio.BrokenResourceError, OSError) as exc:
        print(f"relay: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
