"""Docs that run: every Python example of ``docs/guide.md`` is run, and its output is
compared with the ``text`` block that follows it.

The guide says that every example is a complete program; this file keeps it true.

- A block whose first line is ``# name.py`` is a file: it is written (with every such
  file before it in the guide) into the working directory of the examples that follow.
  If a ``text`` block follows it, it is also run, as ``python name.py``.
- Any other ``python`` block is a program, run as ``python example.py`` in a fresh
  directory, each in a subprocess of its own with a time limit, so that the examples
  run in parallel (pytest-xdist) and a hang is a failure.
- The ``text`` block right after a program is its output (stdout and stderr as a
  terminal shows them). Before comparing, both sides are normalized: pids, the working
  directory (``/tmp/work`` in the guide), port numbers and trailing spaces.
- An HTML comment right before a block says how it is an exception, one or more of
  (comma-separated): ``output varies`` (run it, do not compare), ``order varies``
  (compare the lines in any order), ``needs PROGRAM`` (a system program: the example is
  skipped with the command that installs it, and fails under
  ``$PIPEKIT_REQUIRE_PROGRAMS`` as the ``needs`` mark does), ``pytest`` (run the file
  with ``python -m pytest``) and ``fragment`` (part of a larger program that the prose
  names: not run, only compiled).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "guide.md"
TIMEOUT = 60.0
"""Seconds one example may take (the slowest takes about 5 s alone)."""

MARKS = ("output varies", "order varies", "needs", "pytest", "fragment")
PACKAGES = {"chromium": "chromium", "gawk": "gawk", "jq": "jq"}
"""The Debian package of each program the examples need (by default its own name)."""

_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_MARK = re.compile(r"<!--\s*example:\s*(.*?)\s*-->")
_FILE = re.compile(r"#\s*([\w.-]+\.py)\b")
_HEADING = re.compile(r"^#{2,3} (\S+)", re.M)


@dataclass
class Block:
    lang: str
    code: str
    line: int
    start: int
    end: int


@dataclass
class Example:
    section: str
    line: int
    code: str
    filename: str | None
    output: str | None
    marks: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.section}@{self.line}" + (f"-{self.filename}" if self.filename else "")

    def marked(self, name: str) -> bool:
        return any(m == name or m.startswith(name + " ") for m in self.marks)

    @property
    def needs(self) -> list[str]:
        return [m.split(None, 1)[1] for m in self.marks if m.startswith("needs ")]


def _blocks(text: str) -> list[Block]:
    return [
        Block(m[1], m[2], text.count("\n", 0, m.start()) + 1, m.start(), m.end())
        for m in _FENCE.finditer(text)
    ]


def _marks_before(text: str, start: int) -> list[str]:
    """The marks of the HTML comments right before offset ``start`` (blank lines may
    stand between them)."""
    marks: list[str] = []
    lines = text[:start].splitlines()
    while lines and (not lines[-1].strip() or _MARK.fullmatch(lines[-1].strip())):
        found = _MARK.fullmatch(lines.pop().strip())
        if found:
            marks[:0] = [m.strip() for m in found[1].split(",") if m.strip()]
    return marks


def parse_guide(text: str) -> list[Example]:
    """Every Python example of the guide, with its marks, output and the files it may
    use (the ``# name.py`` blocks before it)."""
    blocks = _blocks(text)
    headings = [(m.start(), m[1]) for m in _HEADING.finditer(text)]
    files: dict[str, str] = {}
    examples: list[Example] = []
    for i, block in enumerate(blocks):
        if block.lang != "python":
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        output = None
        if (
            following is not None
            and following.lang == "text"
            and not text[block.end : following.start].strip()
        ):
            output = following.code
        first = block.code.split("\n", 1)[0]
        named = _FILE.match(first)
        section = next((h for pos, h in reversed(headings) if pos < block.start), "0")
        example = Example(
            section=section.rstrip("."),
            line=block.line,
            code=block.code,
            filename=named[1] if named else None,
            output=output,
            marks=_marks_before(text, block.start),
            files=dict(files),
        )
        examples.append(example)
        if named:
            if named[1] in files:
                raise ValueError(f"docs/guide.md:{block.line}: a second file {named[1]}")
            files[named[1]] = block.code
    for example in examples:  # a file may be used before the section that shows it
        example.files = {n: code for n, code in files.items() if n != example.filename}
    return examples


EXAMPLES = parse_guide(GUIDE.read_text(encoding="utf-8"))


def _normalize(text: str, workdir: str | None = None) -> list[str]:
    if workdir is not None:
        text = text.replace(os.path.realpath(workdir), "/tmp/work").replace(workdir, "/tmp/work")
    text = re.sub(r"\bpid[ =]\d+", lambda m: m[0][:4] + "N", text)
    text = re.sub(r"\bworker \d+ \(pid", "worker N (pid", text)
    text = re.sub(r"(127\.0\.0\.1|localhost):\d+", r"\1:PORT", text)
    text = re.sub(r" at 0x[0-9a-f]+", " at 0x...", text)
    lines = [line.rstrip() for line in text.strip("\n").split("\n")]
    return lines


def _runnable(example: Example) -> bool:
    if example.marked("fragment"):
        return False
    # A file block that nothing shows the output of is a file for other examples.
    return example.filename is None or example.output is not None or example.marked("pytest")


def _check_needs(example: Example) -> None:
    for program in example.needs:
        if shutil.which(program) is None:
            reason = f"needs {program}: apt-get install {PACKAGES.get(program, program)}"
            if os.environ.get("PIPEKIT_REQUIRE_PROGRAMS"):
                pytest.fail(f"{reason} (.ci/run installs it; it is missing)")
            pytest.skip(reason)


def run_example(example: Example, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Write the example (and the files before it) into ``workdir`` and run it."""
    for name, code in example.files.items():
        (workdir / name).write_text(code, encoding="utf-8")
    name = example.filename or "example.py"
    (workdir / name).write_text(example.code, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "COLUMNS": "80",
    }
    env.pop("PIPEKIT_FD", None)
    if example.marked("pytest"):
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", name]
        argv += ["-o", "addopts=", "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    else:
        argv = [sys.executable, name]
    return subprocess.run(
        argv,
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_the_guide_has_examples_and_every_mark_is_known() -> None:
    assert len([e for e in EXAMPLES if _runnable(e)]) >= 50
    for example in EXAMPLES:
        for mark in example.marks:
            assert mark.split(" ")[0] in {m.split(" ")[0] for m in MARKS}, (example.id, mark)


@pytest.mark.parametrize("example", [e for e in EXAMPLES if not _runnable(e)], ids=lambda e: e.id)
def test_guide_file_or_fragment_compiles(example: Example) -> None:
    """Worker files and fragments are not run on their own, but they must be Python."""
    compile(example.code, example.filename or "fragment.py", "exec")


def _matches(got: list[str], want: list[str]) -> bool:
    """Line by line; ``...`` in an expected line stands for any text."""
    return len(got) == len(want) and all(
        g == w or ("..." in w and re.fullmatch(".*".join(map(re.escape, w.split("..."))), g))
        for g, w in zip(got, want, strict=True)
    )


def _transcript(text: str) -> list[tuple[str, str]]:
    """A shell session as ``(command, output)`` pairs (commands start with ``$ ``)."""
    session: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            session.append((line[2:], ""))
        elif session:
            command, output = session[-1]
            session[-1] = (command, output + line + "\n")
    return session


def run_transcript(example: Example, workdir: Path) -> list[tuple[str, str, str]]:
    """Run the shell session that follows a file block, in ``workdir``: ``(command,
    expected output, output)`` for each command (``pipekit`` is this checkout's)."""
    assert example.output is not None and example.filename is not None
    for name, code in {**example.files, example.filename: example.code}.items():
        (workdir / name).write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHON": sys.executable, "COLUMNS": "80"}
    results: list[tuple[str, str, str]] = []
    status = 0
    for command, expected in _transcript(example.output):
        if command == "echo $?":
            results.append((command, expected, f"{status}\n"))
            continue
        done = subprocess.run(
            ["bash", "-c", 'pipekit() { "$PYTHON" -m pipekit "$@"; }\n' + command],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        status = done.returncode
        results.append((command, expected, done.stdout))
    return results


def _is_transcript(example: Example) -> bool:
    return example.output is not None and example.output.startswith("$ ")


@pytest.mark.parametrize("example", [e for e in EXAMPLES if _runnable(e)], ids=lambda e: e.id)
def test_guide_example_runs(example: Example, tmp_path: Path) -> None:
    _check_needs(example)
    if _is_transcript(example):
        for command, expected, shown in run_transcript(example, tmp_path):
            if command != "echo $?" and example.marked("output varies"):
                continue
            got, want = _normalize(shown, str(tmp_path)), _normalize(expected)
            if not _matches(got, want):
                assert got == want, f"docs/guide.md:{example.line}: $ {command}"
        return
    done = run_example(example, tmp_path)
    shown = done.stdout
    assert done.returncode == 0, f"{example.id} exited with {done.returncode}:\n{shown}"
    if example.output is None or example.marked("output varies"):
        return
    got, want = _normalize(shown, str(tmp_path)), _normalize(example.output)
    if example.marked("order varies"):
        got, want = sorted(got), sorted(want)
    if not _matches(got, want):
        assert got == want, f"the output of the example at docs/guide.md:{example.line} differs"


def test_parse_guide_reads_marks_files_and_outputs() -> None:
    text = "\n".join(
        [
            "## 1. A",
            "```python",
            "# helper.py",
            "X = 1",
            "```",
            "",
            "<!-- example: needs jq, order varies -->",
            "",
            "```python",
            "print(2)",
            "```",
            "",
            "```text",
            "2",
            "```",
            "<!-- example: fragment -->",
            "```python",
            "await x",
            "```",
        ]
    )
    first, second, third = parse_guide(text + "\n")
    assert (first.filename, first.output, _runnable(first)) == ("helper.py", None, False)
    assert second.marks == ["needs jq", "order varies"] and second.needs == ["jq"]
    assert second.output == "2\n" and second.files == {"helper.py": "# helper.py\nX = 1\n"}
    assert second.section == "1" and _runnable(second)
    assert first.files == {}  # a file is not among its own neighbours
    assert third.marked("fragment") and not _runnable(third)


def test_normalize_hides_pids_ports_and_the_working_directory() -> None:
    got = _normalize("/tmp/xyz/a.py (pid 123) at 127.0.0.1:4567 pid=9  \n\n", "/tmp/xyz")
    assert got == ["/tmp/work/a.py (pid N) at 127.0.0.1:PORT pid=N"]


def test_expected_output_may_elide_with_dots_and_sessions_split_by_command() -> None:
    assert _matches(["paused=0.1003 s", "x"], ["paused=0.10... s", "x"])
    assert not _matches(["paused=0.2 s"], ["paused=0.10... s"])
    session = _transcript("$ a b\none\ntwo\n$ echo $?\n1\n")
    assert session == [("a b", "one\ntwo\n"), ("echo $?", "1\n")]


def test_every_public_name_has_an_example_in_its_docstring() -> None:
    """``help(pipekit)``: each name of ``pipekit.__all__`` shows how it is used."""
    import pipekit

    missing = [
        name
        for name in pipekit.__all__
        if not name.startswith("__") and "Example" not in (getattr(pipekit, name).__doc__ or "")
    ]
    assert missing == []


ALWAYS_THERE = {"cat", "echo", "false", "grep", "gzip", "head", "sed", "seq", "sh", "sleep"}
ALWAYS_THERE |= {"sort", "test", "tr", "true", "uniq", "wc", "yes", "no-such-tool"}
"""Programs of every Linux system (coreutils, grep, gzip, sed, a shell), which need no mark."""


def test_examples_that_run_other_programs_say_so() -> None:
    """A program beyond the base system is named in a ``needs`` mark, so that a machine
    without it skips the example with the install command instead of failing it."""
    started = re.compile(r'(?:pk\.cmd\(|ProcessSpec\(\(|open_process\(\[)"([\w.-]+)"')
    for example in EXAMPLES:
        programs = set(started.findall(example.code)) - ALWAYS_THERE
        assert programs <= set(example.needs), (example.id, programs)
