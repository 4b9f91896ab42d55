"""What the benchmark scripts share."""

from __future__ import annotations

import sys
from collections.abc import Callable


def interrupted(exc: BaseException) -> bool:
    """Ctrl-C, possibly wrapped in the exception group of a trio nursery."""
    if isinstance(exc, BaseExceptionGroup):
        return any(interrupted(e) for e in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


def run_main(main: Callable[[], int]) -> None:
    """Run a benchmark's ``main`` and exit with its code; Ctrl-C exits with 130."""
    try:
        code = main()
    except BaseException as exc:
        if not interrupted(exc):
            raise
        print("\ninterrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
