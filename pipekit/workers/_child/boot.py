"""The fast way into a worker process: ``python -c BOOT boot.py TARGET --mode M [--init I]``
does what ``python -m pipekit worker`` does, importing only what the child runtime needs.

``python -m pipekit worker`` runs the CLI (argument parsing, every command's imports)
for code a worker never uses. Here this file is run by path (so nothing of ``pipekit`` is
imported to find it), imports the ``pipekit`` package from the directory it belongs to
(the checkout the parent runs, whatever the child's ``sys.path``) and then the child
runtime. Package ``__init__`` files import their names lazily, so that is all that
runs: an item-mode worker's blocking runtime imports the I/O-free protocol, codecs and
its own helpers, never trio (``tests/test_import_cost.py``). Only the standard library
is imported at module level.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["BOOT", "boot_argv", "main"]

BOOT = (
    "import importlib.util as u, sys\n"
    "s = u.spec_from_file_location('_pipekit_boot', sys.argv[1])\n"
    "m = u.module_from_spec(s)\n"
    "s.loader.exec_module(m)\n"
    "sys.exit(m.main(sys.argv[2:]))\n"
)
"""The ``-c`` program that runs this file's :func:`main` (argv: this file's path, then
``pipekit worker``'s arguments)."""

_HERE = Path(__file__).resolve()
_PACKAGE = Path(__file__).parent.parent.parent  # .../pipekit (as found, not resolved)


def boot_argv(python: str, args: list[str]) -> list[str]:
    """The command line of a worker started this way: ``args`` as for ``pipekit
    worker`` (``TARGET --mode M [--init I]``)."""
    return [python, "-c", BOOT, str(_HERE), *args]


def _import_package(name: str, directory: Path) -> ModuleType:
    """Import package ``name`` from ``directory`` (its ``__init__.py`` runs as usual)."""
    spec = importlib.util.spec_from_file_location(
        name, directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot find the {name} package in {directory}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def main(argv: list[str]) -> int:
    """``pipekit worker TARGET --mode M [--init I]``; the exit code."""
    target, mode, init = _parse(argv)
    if "pipekit" not in sys.modules:
        _import_package("pipekit", _PACKAGE)
    from pipekit.workers._child.blocking import run_blocking_items, use_blocking

    if use_blocking(mode):
        return run_blocking_items(target, init)
    from pipekit.workers._child.runtime import run_worker

    return run_worker(target, mode=mode, init=init)  # type: ignore[arg-type]


def _parse(argv: list[str]) -> tuple[str, str, str | None]:
    options = {"--mode": "stream", "--init": None}
    rest = list(argv)
    if not rest or rest[0].startswith("--"):
        raise SystemExit("usage: boot.py TARGET [--mode stream|item] [--init INIT]")
    target = rest.pop(0)
    while rest:
        key = rest.pop(0)
        if key not in options or not rest:
            raise SystemExit(f"boot.py: unexpected argument {key!r}")
        options[key] = rest.pop(0)
    mode = options["--mode"]
    assert mode is not None
    return target, mode, options["--init"]
