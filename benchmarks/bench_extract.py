"""Extraction throughput on the default model: early exit and batching by length.

    .venv/bin/python benchmarks/bench_extract.py  # writes benchmarks/results/extract.json

Each configuration pools the same 96 curated stories (real tokens per second).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from _common import interleaved, summarise, write  # noqa: I001 - run as a script

from emolens.corpus import load_corpus
from emolens.extract import pooled_features
from emolens.loading import load_model


def main(rounds: int = 5) -> None:
    """Time four pooling configurations in interleaved rounds; write the JSON results."""
    torch.set_num_threads(2)
    lm = load_model("default")
    stories = load_corpus("default").stories()
    texts = [r.text for r in stories[:: max(1, len(stories) // 96)][:96]]
    layer = lm.resolve_layer(2 / 3)
    tokens: dict[str, int] = {}

    def run(name: str, layers: list[int], sort: bool, early: bool) -> Callable[[], None]:
        def go() -> None:
            _, _, st = pooled_features(lm, texts, layers, batch_size=16, sort_by_length=sort,
                                       early_exit=early)
            tokens[name] = st.tokens
            tokens[name + ":padded"] = st.padded_tokens
        return go

    methods = {
        "one_layer_no_early_exit_unsorted": run("one_layer_no_early_exit_unsorted", [layer],
                                                False, False),
        "one_layer_early_exit_unsorted": run("one_layer_early_exit_unsorted", [layer],
                                             False, True),
        "one_layer_early_exit_sorted": run("one_layer_early_exit_sorted", [layer], True, True),
        "all_layers_sorted": run("all_layers_sorted", list(range(lm.n_layers)), True, True),
    }
    times = interleaved(methods, rounds)
    write("extract", {"texts": len(texts), "layer": layer, "rounds": rounds,
                      "padded_tokens": {k: v for k, v in tokens.items() if ":padded" in k},
                      "results": summarise(times, {k: tokens[k] for k in methods}, "tokens",
                                           "one_layer_no_early_exit_unsorted")})


if __name__ == "__main__":
    main()
