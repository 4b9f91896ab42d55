"""What importing pipekit costs: package ``__init__`` files import their names lazily
(PEP 562, ``pipekit/_lazy.py``), the I/O-free protocol imports no trio, and an item-mode
worker (the blocking runtime) serves calls without ever importing trio.

Each import is checked in a fresh interpreter (this one has imported everything)."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio

import pipekit
import pipekit as pk
from pipekit.kernel import errors

PACKAGE_DIR = Path(pipekit.__file__).parent
WORKERS = Path(__file__).with_name("import_cost_workers.py")
GUARD = 60.0  # seconds any child interpreter may take


def lazy_packages() -> list[str]:
    """Every package whose ``__init__`` re-exports through ``lazy_exports``."""
    found = []
    for directory, _, files in os.walk(PACKAGE_DIR, followlinks=True):  # kernel/ is a link
        init = Path(directory, "__init__.py")
        if "__init__.py" in files and "lazy_exports(" in init.read_text():
            found.append(".".join(init.parent.relative_to(PACKAGE_DIR.parent).parts))
    return sorted(found)


LAZY = lazy_packages()


def fresh(code: str) -> Any:
    """Run ``code`` in a fresh interpreter; what it printed, as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


LOADED = "sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'pipekit'))"


def test_the_packages_found_are_the_public_floors_and_their_helpers() -> None:
    assert {"pipekit", "pipekit.kernel", "pipekit.workers", "pipekit.actors"} <= set(LAZY)
    assert "pipekit.adapters.stdio" in LAZY


def test_import_pipekit_imports_no_floor_and_no_trio() -> None:
    assert fresh(f"import json, sys, pipekit\nprint(json.dumps({LOADED}))") == [
        "pipekit",
        "pipekit._lazy",
    ]


def test_the_command_line_imports_no_trio_before_a_command_runs() -> None:
    # (pipekit --help and --version parse arguments only.)
    loaded = fresh(
        f"""
        import json, sys, pipekit.cli
        pipekit.cli.build_parser()
        print(json.dumps({LOADED}))
        """
    )
    assert "pipekit.cli" in loaded
    assert not [m for m in loaded if m == "trio" or m.startswith(("trio.", "pipekit.cli._"))]


def test_importing_every_lazy_package_runs_only_their_init_files() -> None:
    loaded = fresh(
        f"""
        import importlib, json, sys
        for name in {LAZY!r}:
            importlib.import_module(name)
        print(json.dumps({LOADED}))
        """
    )
    parents = {p.rpartition(".")[0] for p in LAZY} - {""}  # pipekit.adapters: a docstring
    assert loaded == sorted({*LAZY, *parents, "pipekit._lazy"})


def test_the_io_free_protocol_and_codecs_import_no_trio() -> None:
    loaded = fresh(
        f"""
        import json, sys
        from pipekit.kernel import codecs, errors, options, protocol
        conn = protocol.Connection(initiator=True)
        errors.ErrorKind.OVERSIZE, errors.ProtocolError, errors.PipekitError
        print(json.dumps({LOADED}))
        """
    )
    assert isinstance(loaded, list)
    assert "trio" not in loaded
    assert "pipekit.kernel.protocol" in loaded


def test_remote_error_imports_trio_on_first_use_only() -> None:
    before, after, is_trios = fresh(
        """
        import json, sys
        from pipekit.kernel import errors
        before = "trio" in sys.modules
        import trio
        print(json.dumps([before, "trio" in sys.modules,
                          issubclass(errors.RemoteError, trio.BrokenResourceError)]))
        """
    )
    assert (before, after, is_trios) == (False, True, True)


def test_remote_error_keeps_its_place_in_the_hierarchy() -> None:
    assert pk.RemoteError is errors.RemoteError is pipekit.kernel.RemoteError
    assert issubclass(pk.RemoteError, pk.PipekitError)
    assert issubclass(pk.RemoteError, trio.BrokenResourceError)
    assert pk.RemoteError.__module__ == "pipekit.kernel.errors"
    assert "RemoteError" in dir(errors)
    with pytest.raises(trio.BrokenResourceError):
        raise pk.RemoteError("boom", "the peer failed", {"where": "there"})


def test_an_unknown_name_of_the_errors_module_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"'pipekit\.kernel\.errors' has no attribute 'Nope'"):
        errors.Nope  # type: ignore[attr-defined]  # noqa: B018


@pytest.mark.parametrize("package", LAZY)
def test_the_lazy_table_matches_the_type_checking_imports(package: str) -> None:
    """What mypy, editors and lint-imports read (``if TYPE_CHECKING:``) is what runs."""
    module = importlib.import_module(package)
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    (branch,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    ]
    typed: dict[str, list[str]] = {}
    for node in branch.body:
        assert isinstance(node, ast.ImportFrom), ast.unparse(node)
        for alias in node.names:
            assert alias.asname in (None, alias.name), ast.unparse(node)
            source = "." * node.level + (node.module or "")
            typed.setdefault(source, []).append(alias.name)
    (call,) = [
        node
        for node in ast.walk(ast.Module(body=branch.orelse, type_ignores=[]))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "lazy_exports"
    ]
    table = ast.literal_eval(call.args[1])
    assert {k: sorted(v) for k, v in table.items()} == {k: sorted(v) for k, v in typed.items()}


@pytest.mark.parametrize("package", LAZY)
def test_a_lazy_name_is_the_object_of_its_source_module(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        assert value is vars(module)[name]  # kept: later uses are plain lookups
        assert name in dir(module)


def test_names_of_other_packages_and_submodules_resolve_through_the_package() -> None:
    assert pk.select is pipekit.channels.select  # re-exported from a sibling floor
    assert pipekit.actors.select is pk.select
    assert pipekit.actors.process.__name__ == "pipekit.actors.process"  # a submodule
    assert pipekit.kernel.protocol.__name__ == "pipekit.kernel.protocol"


def test_an_unknown_name_of_a_lazy_package_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"'pipekit' has no attribute 'no_such_name'"):
        pk.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(pipekit.workers, "__wrapped__")


def test_a_fresh_interpreter_reaches_floors_through_attributes() -> None:
    got = fresh(
        """
        import json, pipekit
        print(json.dumps([pipekit.actors.process.__name__, pipekit.map.__name__,
                          pipekit.child.__name__]))
        """
    )
    assert got == ["pipekit.actors.process", "map", "pipekit.child"]


async def test_the_blocking_worker_serves_calls_without_trio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An item-mode worker (the default, blocking runtime) imports the I/O-free protocol,
    codecs, its own helpers and the function: asked what it had loaded while serving
    its second call (after answering the first), it names no trio and no other floor."""
    monkeypatch.delenv("PIPEKIT_ITEM_RUNTIME", raising=False)
    with trio.fail_after(GUARD):
        async with pk.WorkerPool(f"{WORKERS}:loaded", size=1) as pool:
            await pool.map([0])
            (loaded,) = await pool.map([1])
    assert not [m for m in loaded if m.split(".")[0] == "trio"]
    floors = {".".join(m.split(".")[:2]) for m in loaded}
    assert floors <= {"pipekit", "pipekit._lazy", "pipekit.kernel", "pipekit.workers"}
    assert "pipekit.kernel.protocol" in loaded
    assert not {m for m in loaded if m.startswith("pipekit.workers.") and "_child" not in m} - {
        "pipekit.workers._wire"
    }


async def test_the_trio_runtime_is_still_chosen_by_the_environment() -> None:
    """``PIPEKIT_ITEM_RUNTIME=trio`` keeps item-mode workers on the trio runtime."""
    env = {**os.environ, "PIPEKIT_ITEM_RUNTIME": "trio"}
    with trio.fail_after(GUARD):
        async with pk.WorkerPool(f"{WORKERS}:loaded", size=1, env=env) as pool:
            (loaded,) = await pool.map([0])
    assert "trio" in loaded
