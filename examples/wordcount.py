"""Count words in generated text: ``pipekit run examples/wordcount.py``.

Declares ``pipeline`` (the name ``pipekit run`` looks for by default).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterator

import pipekit as pk

WORDS = [
    "stream",
    "pipe",
    "kernel",
    "module",
    "backpressure",
    "pause",
    "resume",
    "end",
    "error",
    "frame",
    "thread",
    "socket",
]


def sentences(count: int = 50_000, seed: int = 1) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        yield " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))).capitalize() + "."


def words(sentence: str) -> list[str]:
    return re.findall(r"[a-z]+", sentence.lower())


counts: Counter[str] = Counter()

pipeline = pk.source(sentences) | pk.map(words) | pk.filter(bool) | pk.sink(counts.update)

if __name__ == "__main__":
    pipeline.run()
    for word, n in counts.most_common(5):
        print(f"{word:>14} {n:,}")
