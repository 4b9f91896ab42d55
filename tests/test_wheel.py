"""The installed wheel works outside the checkout: it holds only the ``pipekit``
namespace (the kernel and the adapters inside it), ships the browser client, imports
without the repository on the path and installs the ``pipekit`` console script."""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        cwd=out,
        capture_output=True,
    )
    (found,) = out.glob("pipekit-*.whl")
    return found


def venv_with_our_dependencies(env_dir: Path) -> Path:
    """A new virtualenv that sees the dependencies (trio, msgpack, cbor2, ...) of the
    interpreter running the tests, wherever they are installed (the base interpreter or
    a virtualenv), without a download, but not pipekit itself: the running
    interpreter's site directories are appended to the new one's path by a ``.pth``
    file, which adds them as plain paths (their own ``.pth`` files, such as an editable
    install's finder of this checkout, are not run). Returns its ``python``."""
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    ours.update(site.getsitepackages())
    (Path(purelib) / "_running_interpreter_deps.pth").write_text(
        "".join(f"{d}\n" for d in sorted(ours) if Path(d).is_dir())
    )
    return python


def install_wheel(python: Path, wheel: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run(
        [*pip, "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
    )


def test_wheel_holds_only_the_pipekit_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {
        "pipekit",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }
    assert "pipekit/kernel/protocol.py" in names
    assert "pipekit/adapters/thread.py" in names
    assert "pipekit/py.typed" in names


def test_wheel_ships_the_browser_client_and_demo_page(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "pipekit/adapters/web/pipekit.js" in names
    assert "pipekit/adapters/web/demo.html" in names


def test_installed_wheel_imports_kernel_and_adapters_outside_the_checkout(
    wheel: Path, tmp_path: Path
) -> None:
    python = venv_with_our_dependencies(tmp_path / "venv")
    install_wheel(python, wheel)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    probe = (
        "import pathlib, pipekit, pipekit.kernel, pipekit.adapters, pipekit.adapters.thread\n"
        "from pipekit.kernel import open_kernel, framed_pipe, protocol\n"
        "import pipekit as pk\n"
        "assert (pk.source(range(5)) | pk.map(lambda x: x * x)).run() == [0, 1, 4, 9, 16]\n"
        "for m in (pipekit, pipekit.kernel, pipekit.adapters):\n"
        "    print(pathlib.Path(m.__file__).resolve())\n"
        "import importlib.util\n"
        "print(importlib.util.find_spec('kernel'), importlib.util.find_spec('adapters'))\n"
    )
    done = subprocess.run(
        [str(python), "-I", "-c", probe], cwd=outside, check=True, capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines()
    installed = (tmp_path / "venv" / "lib").resolve()
    for line in lines[:3]:
        assert Path(line).is_relative_to(installed), f"{line} not from the installed wheel"
        assert not Path(line).is_relative_to(ROOT)
    assert lines[3] == "None None", "nothing may be installed under the bare names kernel/adapters"


def test_console_script_runs_the_demo(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    install_wheel(venv_with_our_dependencies(env_dir), wheel)
    done = subprocess.run(
        [str(env_dir / "bin" / "pipekit"), "demo", "--lines", "2000", "--quiet"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "requests parsed: 1,99" in done.stdout
    assert "per-stage statistics" in done.stdout
    assert "thread(enrich)" in done.stdout
