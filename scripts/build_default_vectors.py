"""Rebuild the default model's shipped emotion vectors from the curated corpus.

Run after any change to the curated stories or neutral dialogues:

    .venv/bin/python scripts/build_default_vectors.py

It writes src/emolens/data/smollm2-135m-instruct.emotions.safetensors atomically and
prints the layer sweep.  Takes about 5-10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import logging
import time

import torch

from emolens.corpus import load_corpus
from emolens.extract import extract, shipped_vectors_path
from emolens.loading import load_model


def main() -> None:
    """Extract every layer of the default model from the curated corpus and ship it."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    started = time.perf_counter()
    lm = load_model("default")
    vecs = extract(lm, load_corpus("default"), layers="all", progress=True)
    vecs = vecs.with_meta(build_seconds=round(time.perf_counter() - started, 1))
    path = vecs.save(shipped_vectors_path())
    print(f"wrote {path} in {time.perf_counter() - started:.0f}s; "
          f"recommended layer {vecs.default_layer}")


if __name__ == "__main__":
    main()
