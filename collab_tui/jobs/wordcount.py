"""Word count over text files: the built-in example of a generic job type (entry point
``collab.job_types: wordcount``). split = one item per file; run = count words; merge = add up."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from .types import JobOutput, JobType

WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*", re.UNICODE)
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".csv", ".log", ".text"}


def count_words(text: str) -> Counter:
    return Counter(w.lower() for w in WORD.findall(text))


class WordCount(JobType):
    name = "wordcount"
    description = "word frequencies over text files"

    def accepts(self, path: Path) -> bool:
        return path.suffix.lower() in TEXT_SUFFIXES

    def run(self, data: bytes, options: dict) -> JobOutput:
        if b"\x00" in data[:4096]:
            raise ValueError("not a text file (NUL bytes)")
        counts = count_words(data.decode("utf-8", errors="replace"))
        return JobOutput({"words": sum(counts.values()), "counts": dict(counts)})

    def merge(self, results: list[dict]) -> dict:
        total: Counter = Counter()
        for r in results:
            total.update(r.get("counts", {}))
        return {
            "items": len(results),
            "words": sum(total.values()),
            "top": total.most_common(20),
            "distinct": len(total),
        }
