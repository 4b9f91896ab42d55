"""Count words in generated text: ``pipekit run examples/wordcount.py`` prints the
counts (the pipeline's result) and the per-stage statistics; ``python
examples/wordcount.py`` prints the five most common words.

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


def tally(counts: Counter[str], sentence_words: list[str]) -> Counter[str]:
    counts.update(sentence_words)
    return counts


pipeline = pk.source(sentences) | pk.map(words) | pk.filter(bool) | pk.reduce(tally, Counter())

if __name__ == "__main__":
    for word, n in pipeline.run().most_common(5):
        print(f"{word:>14} {n:,}")
