"""bf16 extraction checked against fp32 on the default model: vectors, held-out figures, speed.

    .venv/bin/python benchmarks/bench_bf16.py --layers 4,9,14   # -> results/bf16.json

Both passes read the same curated corpus (train split for the vectors, the held-out split
for top-1/top-5 with Wilson 95% intervals) at the same layers; one runs on the float32
model, the other on its bfloat16 cast copy (:func:`emolens.extract.compute_model`).
Reported: each emotion's cosine between its bf16 and fp32 vector at every layer (min,
quantiles), the held-out figures of both with intervals, and the story-pass tokens per
second of both (whether this CPU computes bfloat16 natively is recorded: without
AVX512-BF16 or AMX it is emulated, and slower than float32).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import torch
from _common import machine_load, write  # noqa: I001 - run as a script

from emolens.corpus import Corpus, load_corpus
from emolens.extract import extract
from emolens.loading import load_model
from emolens.runtime import bf16_native
from emolens.stats import rate


def _subset(corpus: Corpus, per_emotion: int, neutral: int) -> Corpus:
    """The first ``per_emotion`` train stories of each emotion (by id), a quarter as many
    held-out ones, and ``neutral`` dialogues: the same texts for both dtypes."""
    keep = []
    for split, k in (("train", per_emotion), ("heldout", max(1, per_emotion // 4))):
        seen: dict[str, int] = {}
        for r in sorted(corpus.stories(split=split), key=lambda r: r.id):
            if seen.get(r.emotion, 0) < k:
                seen[r.emotion] = seen.get(r.emotion, 0) + 1
                keep.append(r)
    dialogues = sorted(corpus.neutral(), key=lambda r: r.id)
    keep += dialogues[:neutral] if neutral else dialogues
    return Corpus(keep, f"default-subset-{per_emotion}")


def main(argv: list[str] | None = None) -> None:
    """Extract in fp32 and in bf16, compare, write results/bf16.json."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", default="4,9,14")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-emotion", type=int, default=0,
                    help="train stories per emotion (0: all); held-out: a quarter as many")
    ap.add_argument("--neutral", type=int, default=0, help="neutral dialogues (0: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    lm = load_model("default")
    corpus = load_corpus("default")
    if args.per_emotion:
        corpus = _subset(corpus, args.per_emotion, args.neutral)
    load_before = machine_load()
    out: dict[str, dict] = {}
    vecs = {}
    for name, dtype in (("fp32", None), ("bf16", "bfloat16")):
        t0 = time.perf_counter()
        v = extract(lm, corpus, layers=args.layers, batch_size=args.batch_size, dtype=dtype)
        wall = time.perf_counter() - t0
        vecs[name] = v
        n = int(v.meta["n_heldout"])
        per_layer = {}
        for layer, sc in v.meta["layer_scores"].items():
            r1, r5 = rate(round(sc["top1"] * n), n), rate(round(sc["top5"] * n), n)
            per_layer[layer] = {"top1": round(r1.value, 4), "top1_ci": [round(r1.ci_low, 4),
                                                                        round(r1.ci_high, 4)],
                                "top5": round(r5.value, 4), "top5_ci": [round(r5.ci_low, 4),
                                                                        round(r5.ci_high, 4)]}
        out[name] = {"dtype": v.meta["extraction_dtype"], "wall_s": round(wall, 1),
                     "story_tokens_per_s": v.meta["story_tokens_per_second"],
                     "recommended_layer": v.meta["recommended_layer"], "n_heldout": n,
                     "heldout": per_layer}
        print(name, out[name], flush=True)
    a, b = vecs["fp32"].directions, vecs["bf16"].directions  # unit rows [E, L, d]
    cos = (a.astype(np.float64) * b).sum(-1)  # [E, L]
    worst = np.unravel_index(np.argmin(cos), cos.shape)
    overlap = {}
    for layer in out["fp32"]["heldout"]:
        f, h = out["fp32"]["heldout"][layer], out["bf16"]["heldout"][layer]
        overlap[layer] = {k: bool(f[f"{k}_ci"][0] <= h[k] <= f[f"{k}_ci"][1]) for k in
                          ("top1", "top5")}
    write("bf16", {
        "model": lm.name, "corpus": corpus.source, "train_stories": len(corpus.stories()),
        "layers": list(vecs["fp32"].layers), "emotions": len(a),
        "cpu_bf16_native": bf16_native("cpu"), "cpu_count": os.cpu_count(),
        "load_before": load_before, "load_after": machine_load(),
        "cosine_bf16_vs_fp32": {
            "min": round(float(cos.min()), 6),
            "quantiles_1_50_99": [round(float(x), 6) for x in np.quantile(cos, [0.01, 0.5,
                                                                                0.99])],
            "per_layer_min": {str(layer): round(float(cos[:, i].min()), 6)
                              for i, layer in enumerate(vecs["fp32"].layers)},
            "worst": {"emotion": vecs["fp32"].emotions[worst[0]],
                      "layer": int(vecs["fp32"].layers[worst[1]])},
            "share_at_least_0.99": round(float((cos >= 0.99).mean()), 4)},
        "bf16_within_fp32_interval": overlap,
        "speed_bf16_over_fp32": round(out["bf16"]["story_tokens_per_s"]
                                      / out["fp32"]["story_tokens_per_s"], 3),
        "runs": out,
    })


if __name__ == "__main__":
    main()
