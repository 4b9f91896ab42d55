"""Human-readable per-stage statistics for the CLI."""

from __future__ import annotations

from collections.abc import Mapping

from ..kernel import ModuleStats

__all__ = ["format_progress", "format_stats"]


def _rate(count: int, seconds: float | None) -> str:
    if not seconds or seconds <= 0:
        return "-"
    return f"{count / seconds:,.0f}"


def _share(part: float, whole: float | None) -> str:
    if not whole or whole <= 0:
        return "-"
    return f"{min(100.0, 100.0 * part / whole):.0f}%"


def format_stats(stats: Mapping[str, ModuleStats], width: int | None = None) -> str:
    """A table: one row per stage with messages in and out, its rate, the share of its
    time it was busy, starved (waiting for input) and blocked (waiting for room
    downstream), its restarts (if any stage restarted) and its state; the bottleneck
    is marked. With ``width`` (a terminal's), stage names are cut so that rows fit.

    Example::

        p = pk.source(range(100)) | pk.map(str)
        p.run()
        print(format_stats(p.stats))
    """
    restarts = any(st.restarts for st in stats.values())
    headers = ["stage", "in", "out", "msg/s", "busy", "starved", "blocked"]
    headers += ["restarts", "state"] if restarts else ["state"]
    rows = [headers]
    marks = [""]
    for name, st in stats.items():
        elapsed = st.elapsed if st.started_at is not None else None
        row = [
            name,
            f"{st.messages_in:,}",
            f"{st.messages_out:,}",
            _rate(st.messages_out or st.messages_in, elapsed),
            _share(st.busy_seconds, elapsed),
            _share(st.starved_seconds, elapsed),
            _share(st.paused_seconds, elapsed),
        ]
        row += [str(st.restarts), str(st.state)] if restarts else [str(st.state)]
        rows.append(row)
        marks.append("<- bottleneck" if st.bottleneck else "")
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    if width is not None:
        marked = 15 if any(marks) else 0
        room = max(8, width - sum(w + 2 for w in widths[1:]) - marked)
        if widths[0] > room:
            widths[0] = room
            for row in rows[1:]:
                if len(row[0]) > room:
                    row[0] = row[0][: room - 1] + "\u2026"
    lines = []
    for i, (row, mark) in enumerate(zip(rows, marks, strict=True)):
        cells = [row[0].ljust(widths[0])]
        for j, (cell, w) in enumerate(zip(row[1:], widths[1:], strict=True), start=1):
            cells.append(cell.ljust(w) if headers[j] == "state" else cell.rjust(w))
        lines.append(("  ".join(cells) + "  " + mark).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_progress(stats: Mapping[str, ModuleStats]) -> str:
    """One line: messages that reached each stage so far."""
    return " | ".join(
        f"{name}: {st.messages_in or st.messages_out:,}" for name, st in stats.items()
    )
