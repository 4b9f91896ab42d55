"""The fast way into a worker process: ``python -c BOOT boot.py TARGET --mode M [--init I]``
does what ``python -m pipekit worker`` does, importing only what the child runtime needs.

``python -m pipekit worker`` first runs ``pipekit/__init__.py``, which imports every floor
(pipelines, the pool, process handles, the CLI): most of a worker's start-up, for code
it never uses. Here this file is run by path (so nothing of ``pipekit`` is imported to
find it), registers ``pipekit``, ``pipekit.kernel`` and ``pipekit.workers`` as *lazy*
packages - their submodules import as usual, and their own ``__init__`` runs on the
first use of a name it defines (``pk.source`` in worker code still works) - and then
imports the child runtime, which imports kernel modules by name. What is left is
mostly trio's own import. Only the standard library is imported at module level.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

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


def _lazy_package(name: str, directory: Path) -> ModuleType:
    """Register package ``name`` (in ``directory``) without running its
    ``__init__.py``: that runs on the first lookup of a name the module lacks (a
    submodule is imported instead, if there is one of that name)."""
    init = directory / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(directory)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot find the {name} package in {directory}")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    running = False

    def __getattr__(attr: str) -> Any:
        nonlocal running
        if running:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        if importlib.util.find_spec(f"{name}.{attr}") is not None:
            return importlib.import_module(f"{name}.{attr}")
        running = True
        del module.__dict__["__getattr__"]  # from now on an ordinary module
        loader.exec_module(module)
        return getattr(module, attr)

    module.__dict__["__getattr__"] = __getattr__
    sys.modules[name] = module
    return module


def main(argv: list[str]) -> int:
    """``pipekit worker TARGET --mode M [--init I]`` with lazy packages; the exit code."""
    target, mode, init = _parse(argv)
    if "pipekit" not in sys.modules:
        parent = _lazy_package("pipekit", _PACKAGE)
        for floor in ("kernel", "workers"):
            parent.__dict__[floor] = _lazy_package(f"pipekit.{floor}", _PACKAGE / floor)
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
