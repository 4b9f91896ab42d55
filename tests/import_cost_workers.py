"""Worker targets for ``tests/test_import_cost.py``: standard library only, so what a
worker has imported is the runtime's doing, not theirs."""

from __future__ import annotations

import sys


def loaded(_: object) -> list[str]:
    """The modules this worker process has imported: trio's and pipekit's."""
    return sorted(m for m in sys.modules if m.split(".")[0] in ("trio", "pipekit"))
