"""Processes for people: ``pk.run`` (Python workers) and ``pk.cmd`` (any executable).

Both return a :class:`Worker`, which is two things: a handle you drive from trio
(``async with pk.run("app.enrich:main") as w: await w.call(record)``; leaving the block
ENDs the worker's input and waits for it, or kills it if the block raised), and a
pipeline stage (``pk.source(items) | pk.run(a) | pk.cmd("jq", "-c", ".x") | pk.sink(f)``;
adjacent raw-mode commands are joined by an OS pipe, as a shell does). ``a.then(b)``,
``a.otherwise(b)`` and ``a.background()`` compose workers as a shell's ``&&``, ``||``
and ``&`` do. :func:`worker_spec` is the process spec of a Python worker, for the stdio
adapter.
"""

from ._handle import OUTPUT_BYTES, OUTPUT_MESSAGES, ProcessChain, Worker
from ._launch import worker_spec
from ._process import cmd, run

__all__ = [
    "OUTPUT_BYTES",
    "OUTPUT_MESSAGES",
    "ProcessChain",
    "Worker",
    "cmd",
    "run",
    "worker_spec",
]
