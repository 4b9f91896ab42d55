"""The installed wheel works outside the checkout: it holds only the ``pipekit``
namespace (the kernel and the adapters inside it), ships the browser client, imports
without the repository on the path and installs the ``pipekit`` console script."""

from __future__ import annotations

import subprocess
import sys
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
    env_dir = tmp_path / "venv"
    # System site-packages provide the dependencies (trio, msgpack, cbor2) without a
    # download; pipekit itself comes only from the wheel, as the assertions check.
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
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
    site = (env_dir / "lib").resolve()
    for line in lines[:3]:
        assert Path(line).is_relative_to(site), f"{line} not from the installed wheel"
        assert not Path(line).is_relative_to(ROOT)
    assert lines[3] == "None None", "nothing may be installed under the bare names kernel/adapters"


def test_console_script_runs_the_demo(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(env_dir / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
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
