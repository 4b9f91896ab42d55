"""Human-readable per-stage statistics for the CLI."""

from __future__ import annotations

from collections.abc import Mapping

from ..kernel import ModuleStats

__all__ = ["format_progress", "format_stats"]


def _rate(count: int, seconds: float | None) -> str:
    if not seconds or seconds <= 0:
        return "-"
    return f"{count / seconds:,.0f}"


def format_stats(stats: Mapping[str, ModuleStats]) -> str:
    """A table: one row per stage with messages in/out, time, rate, time paused
    (blocked on a full downstream buffer), restarts and state."""
    headers = ("stage", "in", "out", "elapsed s", "out msg/s", "paused s", "restarts", "state")
    rows = [headers]
    for name, st in stats.items():
        elapsed = st.elapsed
        rows.append(
            (
                name,
                f"{st.messages_in:,}",
                f"{st.messages_out:,}",
                f"{elapsed:.3f}" if elapsed is not None else "-",
                _rate(st.messages_out or st.messages_in, elapsed),
                f"{st.paused_seconds:.3f}",
                str(st.restarts),
                st.state,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_progress(stats: Mapping[str, ModuleStats]) -> str:
    """One line: messages that reached each stage so far."""
    return " | ".join(
        f"{name}: {st.messages_in or st.messages_out:,}" for name, st in stats.items()
    )
