"""The command line: ``pipekit demo``, ``pipekit run FILE[:NAME]``, ``python -m pipekit``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipekit.cli import main
from pipekit.cli.demo import generate_lines, parse_line

ROOT = Path(__file__).resolve().parent.parent


def test_demo_prints_the_aggregate_and_per_stage_statistics(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--lines", "5000", "--quiet"]) == 0
    out = capsys.readouterr().out
    expected = sum(1 for line in generate_lines(5000) if parse_line(line) is not None)
    assert f"requests parsed: {expected:,}" in out
    for stage in (
        "source(generate)",
        "map(parse_line)",
        "filter(is_record)",
        "thread(enrich)",
        "sink(add)",
    ):
        assert stage in out
    # The statistics table counts every line into the parser and every record out of the filter.
    parse_row = next(line for line in out.splitlines() if line.startswith("map(parse_line)"))
    assert "5,000" in parse_row
    filter_row = next(line for line in out.splitlines() if line.startswith("filter(is_record)"))
    assert f"{expected:,}" in filter_row


def test_demo_is_reproducible_for_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    main(["demo", "--lines", "3000", "--seed", "3", "--quiet"])
    first = capsys.readouterr().out.split("per-stage statistics")[0]
    main(["demo", "--lines", "3000", "--seed", "3", "--quiet", "--workers", "3"])
    second = capsys.readouterr().out.split("per-stage statistics")[0]
    assert first == second


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "flow.py"
    path.write_text(body)
    return path


def test_run_executes_the_pipeline_named_pipeline_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        "import pipekit as pk\npipeline = pk.source(range(20)) | pk.map(lambda x: x * 3)\n",
    )
    assert main(["run", str(path), "--show", "3"]) == 0
    captured = capsys.readouterr()
    assert "collected 20 message(s)" in captured.out
    assert "  0\n  3\n  6\n  ... (17 more)" in captured.out
    assert "per-stage statistics" in captured.err


def test_run_takes_a_variable_name_after_a_colon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        "import pipekit as pk\nother = pk.source(['a', 'b']) | pk.map(str.upper) | pk.collect()\n",
    )
    assert main(["run", f"{path}:other", "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[:3] == ["collected 2 message(s)", "  'A'", "  'B'"]


def test_run_imports_modules_next_to_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "helpers_for_flow.py").write_text("def double(x):\n    return 2 * x\n")
    path = _write(
        tmp_path,
        "import pipekit as pk\nfrom helpers_for_flow import double\n"
        "pipeline = pk.source([1, 2]) | pk.map(double)\n",
    )
    assert main(["run", str(path), "--quiet"]) == 0
    assert "  2\n  4" in capsys.readouterr().out


def test_run_reports_a_failing_stage_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        "import pipekit as pk\n"
        "def parse(x):\n    raise ValueError(f'bad record {x}')\n"
        "pipeline = pk.source([1]) | pk.map(parse)\n",
    )
    assert main(["run", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "module 'map(parse)' failed" in err
    assert "ValueError: bad record 1" in err
    assert err.count("bad record 1") == 1  # the cause is named once, not repeated


@pytest.mark.parametrize(
    ("body", "spec_suffix", "message"),
    [
        ("x = 1\n", "", "defines no 'pipeline'"),
        ("pipeline = 42\n", "", "is a int, not a pipekit Pipeline"),
    ],
)
def test_run_rejects_what_is_not_a_pipeline(
    tmp_path: Path, body: str, spec_suffix: str, message: str
) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(SystemExit, match=message):
        main(["run", str(path) + spec_suffix])


def test_run_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no such file"):
        main(["run", str(tmp_path / "nope.py")])


def test_python_dash_m_pipekit_behaves_like_the_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipekit",
            "run",
            str(ROOT / "examples" / "wordcount.py"),
            "--quiet",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Counter({"), "the word counts are the pipeline's result"
    helped = subprocess.run(
        [sys.executable, "-m", "pipekit", "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0
    assert "demo" in helped.stdout
    assert "run" in helped.stdout


def test_run_reports_a_factory_that_needs_arguments(tmp_path: Path) -> None:
    path = _write(tmp_path, "def pipeline(n):\n    raise AssertionError('not called')\n")
    with pytest.raises(SystemExit, match=r"calling .*:pipeline\(\) failed: .*missing 1 required"):
        main(["run", str(path)])


def test_run_accepts_a_lone_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(
        tmp_path, "import pipekit as pk\npipeline = pk.cmd('seq', '1', '3', mode='lines')\n"
    )
    assert main(["run", str(path), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[:4] == [
        "collected 3 message(s)",
        "  '1'",
        "  '2'",
        "  '3'",
    ]


def test_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    import pipekit

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pipekit {pipekit.__version__}"


def test_a_value_the_command_refuses_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--workers", "0", "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == "pipekit demo: workers must be at least 1\n"


def test_a_failure_is_one_line_unless_traceback_is_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        "import pipekit as pk\n"
        "def parse(x):\n    raise ValueError(f'bad record {x}')\n"
        "pipeline = pk.source([1]) | pk.map(parse)\n",
    )
    assert main(["run", str(path), "--quiet"]) == 1
    short = capsys.readouterr().err
    assert "Traceback" not in short and "--traceback" in short
    assert main(["--traceback", "run", str(path), "--quiet"]) == 1
    full = capsys.readouterr().err
    assert "Traceback (most recent call last)" in full
    assert "raise ValueError(f'bad record {x}')" in full


# -- progress and the failure report -------------------------------------------------------

SLOW_FLOW = (
    "import time\n"
    "import pipekit as pk\n"
    "def slow(x):\n    time.sleep(0.002)\n    return x\n"
    "pipeline = (pk.source(range(400)) | pk.map(str, name='a stage whose name is much too long "
    "for one row of an eighty-column terminal') | pk.thread(slow) | pk.collect())\n"
)


def _run_on_a_terminal(argv: list[str], cwd: Path, columns: int = 80) -> tuple[int, str]:
    """Run ``python -m pipekit ARGV`` with its stderr on a pseudo-terminal of ``columns``
    columns; return its exit status and what the terminal received."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipekit", *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    received = bytearray()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child is gone and the terminal closed
                    break
                if not chunk:
                    break
                received += chunk
            elif proc.poll() is not None:
                break
        assert proc.stdout is not None
        proc.stdout.read()
        status = proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return status, received.decode("utf-8", "replace")


def test_run_on_a_terminal_shows_live_progress_that_fits_80_columns(tmp_path: Path) -> None:
    import re

    _write(tmp_path, SLOW_FLOW)
    status, shown = _run_on_a_terminal(["run", "flow.py"], tmp_path)
    assert status == 0
    screen = re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown))
    assert max(len(line) for line in screen) <= 80
    live = [line for line in screen if line.startswith(("  ", "> ")) and "%" in line]
    for stage in ("source(range)", "thread(slow)", "collect", "a stage whose name"):
        assert any(stage in line for line in live), stage
    assert any("bottleneck thread(slow)" in line for line in screen)
    assert "per-stage statistics" in shown  # the table that replaces the display


def test_run_off_a_terminal_writes_progress_log_lines(tmp_path: Path) -> None:
    _write(tmp_path, SLOW_FLOW)
    done = subprocess.run(
        [sys.executable, "-m", "pipekit", "run", "flow.py", "--log-every", "0.2"],
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("pipekit: ")]
    assert lines and "\x1b" not in done.stderr
    assert "(" in lines[0] and "/400)" in lines[0] and "thread(slow)" in lines[0]


def test_run_reports_the_failing_item_and_the_statistics_at_the_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        "import pipekit as pk\n"
        "def parse(x):\n    return 10 // x\n"
        "pipeline = pk.source([5, 2, 0, 1]) | pk.map(parse) | pk.collect()\n",
    )
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    table = err[err.index("per-stage statistics at the failure") :]
    assert "map(parse)" in table and "failed" in table and "cancelled" in table
    assert "pipekit run: module 'map(parse)' failed: ZeroDivisionError" in err
    assert "  on item 2 of the stage's input: 0\n" in err
    assert "(--traceback for the full story)" in err
    assert main(["--traceback", "run", str(path), "--quiet"]) == 1
    full = capsys.readouterr().err
    assert "return 10 // x" in full  # the original traceback, the cause's
    assert "stage 'map(parse)' failed on item 2 of its input: 0" in full  # the note
    assert "per-stage statistics" not in full  # --quiet: no statistics


def test_run_names_the_failing_item_of_a_thread_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        "import pipekit as pk\n"
        "def parse(x):\n    return 10 // x\n"
        "pipeline = pk.source([5] * 700 + [0] + [1] * 300) | pk.thread(parse, workers=3)\n",
    )
    assert main(["run", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "pipekit run: module 'thread(parse)' failed: ZeroDivisionError" in err
    assert "  on item 700 of the stage's input: 0\n" in err


def test_run_names_a_failing_sources_item(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        "import pipekit as pk\n"
        "def numbers():\n    yield 1\n    yield 2\n    raise OSError('disk gone')\n"
        "pipeline = pk.source(numbers) | pk.collect()\n",
    )
    assert main(["run", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "OSError: disk gone" in err
    assert "  on item 2 of the stage's input\n" in err  # the one it could not produce
