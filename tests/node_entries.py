"""Entries the ``"process"`` host's child node imports in the node tests."""

from __future__ import annotations

import os

from pipekit.actors import process


async def echo() -> None:
    msgs = process.listen("echo", message=True)
    while True:
        msg = await msgs.receive()
        process.send(msg.sender, "reply", msg.payload)


def os_pid() -> int:
    return os.getpid()


async def crash() -> None:
    raise KeyError("boom")
