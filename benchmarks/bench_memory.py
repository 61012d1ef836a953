"""Peak memory of an extraction as the corpus grows (1x, 2x, 4x), default model, all layers.

    .venv/bin/python benchmarks/bench_memory.py --sizes 64,128,256   # -> results/memory.json

Each measurement is a fresh process (so peaks do not carry over) that loads the default
model, runs one warm-up forward, notes its resident memory, then extracts the statistics of
the first N curated stories (and the neutral dialogues) at all 30 layers, and reports its
peak resident memory (``ru_maxrss``) above that baseline. ``collect`` is the extraction as
it is now (running sums on the model's device); ``rows`` keeps one pooled row per text
(``pooled_features``, ``[N, L, d]``), as extraction did before, for contrast. The arrays an
extraction holds are also counted exactly (bytes of its accumulators), and scaled to an 8B
and a 70B model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(mode: str, n: int, threads: int) -> dict:
    """One measurement, in this process."""
    import numpy as np
    import torch

    from emolens.corpus import Corpus, load_corpus
    from emolens.extract import StoryStats, collect, pooled_features, pooled_means
    from emolens.extract.accumulate import NeutralAccumulator, StoryAccumulator, nbytes
    from emolens.extract.scatter import ScatterAccumulator
    from emolens.loading import load_model

    torch.set_num_threads(threads)
    lm = load_model("default")
    full = load_corpus("default")
    stories = sorted(full.stories(), key=lambda r: r.id)[:n]
    corpus = Corpus(stories + full.neutral()[:32], "memory-bench")
    layers = list(range(lm.n_layers))
    with torch.inference_mode():
        pooled_means(lm, lm.pad([lm.tokenizer(stories[0].text)["input_ids"]]), layers, 0,
                     early_exit=True)
    base = _rss_mib()
    held = 0
    if mode == "collect":
        run = collect(lm, corpus, layers, token_skip=50, batch_size=16)
        held = run.stories.sums.nbytes + run.neutral.nbytes() + sum(
            a.nbytes for a in run.scatter.tensors().values())
        acc_bytes = nbytes(StoryAccumulator(run.stories.labels, layers, lm.hidden_size).arrays()) \
            + nbytes(NeutralAccumulator(layers, lm.hidden_size).arrays()) \
            + nbytes(ScatterAccumulator(run.stories.labels, run.scatter.layers,
                                        lm.hidden_size).arrays())
    else:
        means, counts, _ = pooled_features(lm, [r.text for r in stories], layers,
                                           batch_size=16)
        stats = StoryStats.empty(sorted({r.emotion for r in stories}), layers, lm.hidden_size)
        stats.add_batch([r.emotion for r in stories], means, counts)
        held = means.nbytes + stats.sums.nbytes
        acc_bytes = int(np.prod(means.shape)) * 4
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "stories": len(stories), "baseline_mib": round(base, 1),
            "peak_mib": round(peak, 1), "peak_above_baseline_mib": round(peak - base, 1),
            "held_statistics_mib": round(held / 2**20, 2),
            "accumulator_mib": round(acc_bytes / 2**20, 2)}


def scaled(emotions: int = 171) -> dict:
    """Bytes an extraction holds for big models (all layers), now and before."""
    from emolens.extract.scatter import default_head_layers

    out = {}
    for name, layers, d in (("8B (32 x 4096)", 32, 4096), ("70B (80 x 8192)", 80, 8192)):
        head = len(default_head_layers(range(layers), d))  # the LDA head's scatter, 2 folds
        now = emotions * layers * d * 8 + layers * d * d * 4 + layers * (d * 8 + 10240 * 8) \
            + 2 * head * (d * d + emotions * d) * 8
        per_text_before = layers * d * 4
        before_fixed = layers * d * d * 8
        out[name] = {"now_gib_any_corpus": round(now / 2**30, 2),
                     "before_gib_fixed": round(before_fixed / 2**30, 2),
                     "before_mib_per_text": round(per_text_before / 2**20, 3),
                     "before_gib_at_100k_texts": round(
                         (before_fixed + 100_000 * per_text_before) / 2**30, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    """Run every (mode, size) in its own process; write results/memory.json."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--modes", default="collect,rows")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", nargs=2, metavar=("MODE", "N"))
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.threads)))
        return 0
    sys.path.insert(0, str(HERE))
    from _common import machine_load, write

    rows = []
    load = machine_load()
    for mode in args.modes.split(","):
        for n in (int(x) for x in args.sizes.split(",")):
            done = subprocess.run([sys.executable, __file__, "--worker", mode, str(n),
                                   "--threads", str(args.threads)], capture_output=True,
                                  text=True, check=True, env={**os.environ})
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr, flush=True)
    growth = {}
    for mode in args.modes.split(","):
        mine = [r for r in rows if r["mode"] == mode]
        if len(mine) > 1:
            growth[mode] = {"peak_mib_ratio_largest_vs_smallest": round(
                mine[-1]["peak_mib"] / mine[0]["peak_mib"], 3),
                "peak_above_baseline_mib": [r["peak_above_baseline_mib"] for r in mine]}
    write("memory", {"model": "SmolLM2-135M-Instruct (30 layers x 576)", "layers": "all",
                     "load_before": load, "runs": rows, "growth": growth,
                     "held_by_extraction_at_scale": scaled()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
