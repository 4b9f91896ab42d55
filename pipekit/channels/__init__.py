"""Channels between trio tasks, and ``select`` over them: the one implementation that
the concurrency helpers and the actors share.

- :func:`channel` (``capacity=0``: a rendezvous) makes a :class:`Channel`, with trio's
  semantics: ``send``, ``receive``, ``close``, then :class:`trio.EndOfChannel` once
  drained; ``async for`` over it.
- :func:`select` performs the first ready of several cases (``ch.case_receive()``,
  ``ch.case_send(v)``), fairly and cancel-safely, with an optional ``default``.
- :func:`after` is a timeout channel (``after("5s")``, ``after(0.1)``) for ``select``.

Example::

    import trio
    from pipekit.channels import after, channel, select

    async def main():
        ch = channel()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ch.send, "hi")
            got = await select([ch.case_receive(), after("1s").case_receive()])
            print(got.channel is ch, got.value)      # True hi

    trio.run(main)
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._after import after
    from ._channel import Case, Channel, channel
    from ._duration import parse_duration
    from ._select import Selected, select
else:
    from .._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "._after": ["after"],
            "._channel": ["Case", "Channel", "channel"],
            "._duration": ["parse_duration"],
            "._select": ["Selected", "select"],
        },
    )

__all__ = ["Case", "Channel", "Selected", "after", "channel", "parse_duration", "select"]
