"""What the tests that look at trio's scheduler share: counting task steps, and counting
the tasks a run has."""

from __future__ import annotations

from collections import Counter

import trio
import trio.lowlevel


class StepCounter(trio.abc.Instrument):
    """Task steps while installed: ``steps`` by task name, :meth:`by_last_name` by the
    last dotted part of it (``"_reader"`` for every ``..._reader``)."""

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task.name] += 1

    def by_last_name(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for name, count in self.steps.items():
            out[name.rpartition(".")[2]] += count
        return out


def all_tasks() -> int:
    """How many trio tasks this run has now."""
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count
