"""Process identifiers."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["Pid"]

_FORM = re.compile(r"\{(?:([^@|{}]+)@)?([^@|{}]+)\|([^|{}]+)\|([^|{}]+)\}")
_PART = re.compile(r"[^@|{}]+")


class Pid:
    """The identity of one process: prints as ``{node@host|namespace:name|procname}``
    (``{host|namespace:name|procname}`` without a node), parses back with
    :meth:`parse`, compares and hashes by its four parts.

    ``node`` is the node that runs it, ``host`` where on that node (``"local"``: a trio
    task; ``"thread"``: a thread of its own), ``name`` the entry it runs
    (``"package.module:function"`` or a name registered with the node), ``proc`` the
    instance, unique on its node.

    A Pid travels inside messages as itself. Between nodes it is its string form: in a
    payload the one-key map ``{"$pid": str(pid)}``, read back with :meth:`parse` (see
    ``docs/protocol.md``, section 15.3); pickle uses :meth:`__reduce__`.

    Example::

        pid = Pid.parse("{app@local|shop.cart:main|42}")
        assert str(pid) == "{app@local|shop.cart:main|42}" and pid.node == "app"
    """

    __slots__ = ("_hash", "_text", "host", "name", "node", "proc")

    node: str | None
    host: str
    name: str
    proc: str

    def __init__(self, node: str | None, host: str, name: str, proc: str) -> None:
        for label, part in (("host", host), ("name", name), ("proc", proc)):
            if not isinstance(part, str) or not _PART.fullmatch(part):
                raise ValueError(
                    f"a Pid's {label} must be a non-empty string without '@', '|', "
                    f"'{{' or '}}': got {part!r}"
                )
        if node is not None and (not isinstance(node, str) or not _PART.fullmatch(node)):
            raise ValueError(f"a Pid's node must be None or a plain name: got {node!r}")
        self.node = node
        self.host = host
        self.name = name
        self.proc = proc
        self._hash: int | None = None
        self._text: str | None = None

    @classmethod
    def parse(cls, text: str) -> Pid:
        """The Pid that ``text`` (``str(pid)``) prints. ``ValueError`` if it is not one.

        Example::

            Pid.parse("{local|app:worker|7}").node        # None
        """
        if not isinstance(text, str):
            raise TypeError(f"Pid.parse expects a str, got {type(text).__name__}")
        found = _FORM.fullmatch(text)
        if found is None:
            raise ValueError(
                f"not a pid: {text!r} (expected {{node@host|namespace:name|procname}})"
            )
        return cls(found[1], found[2], found[3], found[4])

    def __str__(self) -> str:
        text = self._text
        if text is None:
            node = f"{self.node}@" if self.node is not None else ""
            text = self._text = f"{{{node}{self.host}|{self.name}|{self.proc}}}"
        return text

    def __repr__(self) -> str:
        return f"Pid({str(self)!r})"

    def __hash__(self) -> int:
        h = self._hash
        if h is None:  # made on first use: most Pids a spawn returns are never hashed
            h = self._hash = hash((self.node, self.host, self.name, self.proc))
        return h

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if type(other) is not Pid:
            return NotImplemented
        return (
            self.proc == other.proc
            and self.name == other.name
            and self.host == other.host
            and self.node == other.node
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pid.parse, (str(self),))


def make_pid(node: str | None, host: str, name: str, proc: str) -> Pid:
    """A Pid from parts already known to be valid (the runtime's own: no checks)."""
    pid = object.__new__(Pid)
    pid.node = node
    pid.host = host
    pid.name = name
    pid.proc = proc
    pid._hash = None
    pid._text = None
    return pid


def check_part(label: str, part: object) -> str:
    """``part`` if it may stand in a Pid, else ``ValueError`` naming ``label``."""
    if not isinstance(part, str) or not _PART.fullmatch(part):
        raise ValueError(
            f"{label} must be a non-empty str without '@', '|', '{{' or '}}': got {part!r}"
        )
    return part
