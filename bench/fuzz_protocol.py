"""Long fuzzing runs of the pipekit/1 state machine.

The properties are those of ``tests/test_fuzz_protocol.py`` (structure-aware frames with
adversarial payloads for every codec, random cuts, the three ways of feeding a
connection, the local application acting in between); the suite runs 100 examples of
each, this script as many as asked::

    python bench/fuzz_protocol.py                     # 10 minutes
    python bench/fuzz_protocol.py --minutes 120
    python bench/fuzz_protocol.py --examples 20000    # per property, per round
    python bench/fuzz_protocol.py --quick             # smoke run: a few seconds

It runs rounds of ``--examples`` examples of each property, with fresh random choices
each round, until ``--minutes`` have passed, and stops at the first failure: Hypothesis
prints the shrunk falsifying case and the exit code is 1. Failures are also saved in the
checkout's ``.hypothesis`` database, so the suite replays them on its next run.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from _common import run_main

# Fuzz the checkout this file lives in, whatever else is installed.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402


def load_properties() -> tuple[Any, list[Any]]:
    """The strategy and the properties of ``tests/test_fuzz_protocol.py``."""
    path = ROOT / "tests" / "test_fuzz_protocol.py"
    spec = importlib.util.spec_from_file_location("test_fuzz_protocol", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module.cases(), list(module.PROPERTIES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="stop after (default 10)")
    parser.add_argument("--examples", type=int, default=5000, help="per property and round")
    parser.add_argument("--quick", action="store_true", help="one round of 50 examples")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.examples = 0.0, 50
    budget = settings(
        max_examples=args.examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
        print_blob=True,
    )
    cases, properties = load_properties()
    end = time.monotonic() + args.minutes * 60
    rounds = examples = 0
    start = time.monotonic()
    while True:
        rounds += 1
        for prop in properties:
            name = prop.__name__
            began = time.monotonic()
            try:
                budget(given(case=cases)(prop))()
            except Exception:
                traceback.print_exc()
                print(f"round {rounds}: {name} FAILED (the falsifying case is above)")
                return 1
            examples += args.examples
            took = time.monotonic() - began
            print(f"round {rounds}: {name}: {args.examples} examples in {took:.1f} s", flush=True)
        if time.monotonic() >= end:
            break
    print(f"{examples} examples in {rounds} round(s), {time.monotonic() - start:.0f} s: no failure")
    return 0


if __name__ == "__main__":
    run_main(main)
