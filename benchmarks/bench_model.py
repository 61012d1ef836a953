"""Default model: first and cached load time, forward tokens/s with and without early exit.

    .venv/bin/python benchmarks/bench_model.py   # writes benchmarks/results/model.json
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import torch
from _common import interleaved, summarise, write  # noqa: I001 - run as a script

from emolens.corpus import load_corpus
from emolens.extract import pooled_means
from emolens.loading import load_model


def load_times() -> dict[str, float]:
    tmp = tempfile.mkdtemp(prefix="emolens-bench-cache-")
    old = os.environ.get("EMOLENS_CACHE")
    os.environ["EMOLENS_CACHE"] = tmp
    try:
        t0 = time.perf_counter()
        load_model("default")
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_model("default")
        cached = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is None:
            os.environ.pop("EMOLENS_CACHE", None)
        else:
            os.environ["EMOLENS_CACHE"] = old
    return {"first_load_s": round(first, 2), "cached_load_s": round(cached, 2)}


def main(rounds: int = 7) -> None:
    torch.set_num_threads(2)
    loads = load_times()
    lm = load_model("default")
    texts = [r.text for r in load_corpus("default").stories()[:16]]
    batch = lm.encode(texts)
    real = int(batch["attention_mask"].sum())
    layer = lm.resolve_layer(2 / 3)

    def naive():
        with torch.inference_mode():
            lm.model(**batch, output_hidden_states=True)

    methods = {
        "naive_output_hidden_states": naive,
        "hook_no_early_exit": lambda: lm.residuals(batch, [layer], early_exit=False),
        "hook_early_exit": lambda: lm.residuals(batch, [layer], early_exit=True),
        "pooled_early_exit": lambda: pooled_means(lm, batch, [layer], 50, early_exit=True),
    }
    times = interleaved(methods, rounds)
    write("model", {"loads": loads, "layer": layer, "texts": len(texts), "real_tokens": real,
                    "padded_tokens": int(batch["attention_mask"].numel()), "rounds": rounds,
                    "forward": summarise(times, dict.fromkeys(methods, real), "tokens",
                                         "naive_output_hidden_states")})


if __name__ == "__main__":
    main()
