"""What the kernel is configured with and reports: restart policies, port references,
module states and statistics, and its wiring as data (JSON, DOT, Mermaid)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import trio

__all__ = [
    "ModuleState",
    "ModuleStats",
    "PortRef",
    "Restart",
    "RestartPolicy",
    "Topology",
]

Restart = Literal["never", "on-failure", "always"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When a module is restarted, and how often.

    ``restart``: ``never``; ``on-failure`` (after an exception); ``always`` (also after a
    normal return, unless every input has ended). At most ``max_restarts`` restarts
    (within the last ``window`` seconds, if given); the wait before restart *n* is
    ``backoff * backoff_factor**(n-1)``, capped at ``backoff_max``.
    """

    restart: Restart = "never"
    max_restarts: int = 3
    backoff: float = 0.1
    backoff_factor: float = 2.0
    backoff_max: float = 10.0
    window: float | None = None

    def __post_init__(self) -> None:
        if self.restart not in ("never", "on-failure", "always"):
            raise ValueError(f"restart must be never, on-failure or always, not {self.restart!r}")
        if (
            self.max_restarts < 0
            or self.backoff < 0
            or self.backoff_factor < 1
            or self.backoff_max < 0
        ):
            raise ValueError("max_restarts and backoff must be >= 0 and backoff_factor >= 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before restart number ``attempt`` (1-based)."""
        return min(self.backoff * self.backoff_factor ** (attempt - 1), self.backoff_max)


@dataclass(frozen=True, slots=True)
class PortRef:
    """One port of one module: ``kernel_handle["out"]`` or ``PortRef("src", "out")``."""

    module: str
    port: str

    def __str__(self) -> str:
        return f"{self.module}.{self.port}"


class ModuleState(StrEnum):
    """Where a module is in its life; each member equals its value (``"done"``, ...)."""

    PENDING = "pending"
    RUNNING = "running"
    RESTARTING = "restarting"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class ModuleStats:
    """Live statistics of one module, summed over its restarts."""

    name: str
    state: ModuleState = ModuleState.PENDING
    restarts: int = 0
    messages_in: int = 0
    messages_out: int = 0
    paused_seconds: float = 0.0
    """Time spent blocked because a downstream buffer was full (``blocked_seconds``)."""
    started_at: float | None = None
    finished_at: float | None = None
    failures: list[str] = field(default_factory=list)
    """``repr`` of every exception that caused a restart or the final failure."""
    starved_seconds: float = 0.0
    """Time spent waiting for input: the module's input buffer was empty. Measured for
    pipeline stages (``Pipeline.stats``); 0 in a kernel's own :meth:`Kernel.stats`."""
    busy_seconds: float = 0.0
    """Time spent working: neither starved nor blocked (inside the user's function, a
    process or a peer doing the stage's work, a throttle pacing it). Measured for
    pipeline stages, like :attr:`starved_seconds`."""
    bottleneck: bool = False
    """True for the stage that sets the pipeline's pace: of the stages busy for at
    least a tenth of their time (and 10 ms), the one busy for the largest share of it."""

    @property
    def elapsed(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else trio.current_time()
        return end - self.started_at

    @property
    def blocked_seconds(self) -> float:
        """:attr:`paused_seconds`, by the name the statistics tables give it."""
        return self.paused_seconds


@dataclass(frozen=True)
class Topology:
    """The kernel's wiring, exportable as JSON, Graphviz DOT or Mermaid."""

    modules: list[dict[str, Any]]
    edges: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"modules": self.modules, "edges": self.edges}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent)

    def to_dot(self) -> str:
        lines = ["digraph pipekit {", "  rankdir=LR;", "  node [shape=box];"]
        for m in self.modules:
            label = _dot_quote(m["name"])
            if m["restart"] != "never":
                label = label[:-1] + "\\n(" + m["restart"] + ')"'  # a DOT line break
            lines.append(f"  {_dot_quote(m['name'])} [label={label}];")
        for e in self.edges:
            label = _dot_quote(f"{e['from_port']}->{e['to_port']}")
            lines.append(f"  {_dot_quote(e['from'])} -> {_dot_quote(e['to'])} [label={label}];")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_mermaid(self) -> str:
        ids = {m["name"]: f"m{i}" for i, m in enumerate(self.modules)}
        lines = ["flowchart LR"]
        for m in self.modules:
            text = m["name"].replace('"', "'")
            lines.append(f'  {ids[m["name"]]}["{text}"]')
        for e in self.edges:
            lines.append(f"  {ids[e['from']]} -->|{e['from_port']}->{e['to_port']}| {ids[e['to']]}")
        return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    """A DOT double-quoted string (only ``"`` and ``\\`` need escaping)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
