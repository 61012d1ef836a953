"""Self-generated corpus on the default model: stories per minute and how many fail checks.

    .venv/bin/python benchmarks/bench_corpus.py   # writes benchmarks/results/corpus.json

Generates 4 core emotions x 8 topics (32 stories) at batch size 8, then reports the
throughput and the share of stories flagged for naming their emotion, truncation,
emptiness or near-duplication.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter

import torch
from _common import write  # noqa: I001 - run as a script

from emolens.corpus import generate_corpus, load_corpus
from emolens.loading import load_model
from emolens.stats import format_rate, rate

EMOTIONS = ["happy", "sad", "afraid", "calm"]


def main(batch_size: int = 8, topics: int = 8, max_new_tokens: int = 220) -> None:
    torch.set_num_threads(2)
    lm = load_model("default")
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        generate_corpus(lm, out, emotions=EMOTIONS, topics=topics, batch_size=batch_size,
                        max_new_tokens=max_new_tokens, progress=False)
        seconds = time.perf_counter() - t0
        records = load_corpus(out).records
    n = len(records)
    flags = Counter(f for r in records for f in r.flags)
    leak = rate(flags["names_emotion"], n)
    write("corpus", {
        "model": lm.name, "stories": n, "batch_size": batch_size,
        "max_new_tokens": max_new_tokens, "seconds": round(seconds, 1),
        "stories_per_minute": round(60 * n / seconds, 2),
        "flags": dict(flags), "leak_rate": format_rate(leak),
        "clean": sum(not r.flags for r in records),
    })


if __name__ == "__main__":
    main()
