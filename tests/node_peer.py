"""A node in an OS process of its own, for the node tests.

``python tests/node_peer.py NAME listen ADDRESS``: listen at ADDRESS and print the
address to connect to; ``python tests/node_peer.py NAME connect ADDRESS``: connect there
and print ``joined PEER``. Either way the node runs an echo process registered as
``"<NAME>-echo"`` (each message's payload back to its sender on topic ``"reply"``) and
a ``"<NAME>-idle"`` process that waits forever, and it exits when its stdin closes.
"""

from __future__ import annotations

import sys

import trio

from pipekit.actors import open_node, process


async def echo() -> None:
    msgs = process.listen("echo", message=True)
    while True:
        msg = await msgs.receive()
        process.send(msg.sender, "reply", msg.payload)


async def idle() -> None:
    await trio.sleep_forever()


async def main(name: str, mode: str, address: str) -> None:
    async with open_node(name) as node:
        node.registry.register(f"{name}-echo", node.spawn(echo))
        node.registry.register(f"{name}-idle", node.spawn(idle))
        if mode == "listen":
            print(await node.listen(address), flush=True)
        else:
            print("joined", await node.connect(address), flush=True)
        stdin = trio.lowlevel.FdStream(0)
        while await stdin.receive_some(1024):
            pass


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
