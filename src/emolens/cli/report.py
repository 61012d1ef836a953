"""``emolens report`` and ``emolens demo``: every analysis of the registry, as one HTML page.

    emolens report --out emolens-report                      # every analysis
    emolens report --only heldout,geometry --no-progress     # some of them

The sections are the registry's analyses (:mod:`emolens.experiments`), in its order; a
progress bar over them shows on a terminal (``--progress`` / ``--no-progress`` to choose).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from emolens.cli.common import (
    add_model_args,
    layer_spec,
    load_model_from_args,
    output_dir,
    seed_arg,
)

#: The main job must finish in minutes on two CPU cores: the demo runs the slow, sampled
#: experiments at their cheapest informative settings (fewer activity pairs; the behavioural
#: evaluations steer at +-0.1 only, take their choice log-odds on every scenario and sample
#: one reply per condition on a few scenarios spread over each list, guardrail included);
#: ``emolens report`` runs every analysis at its full defaults.
_BEHAVIOUR = {"n": 1, "strengths": (-0.1, 0.1), "extra_emotions": ()}
DEMO_OPTIONS: dict[str, dict[str, Any]] = {
    "blackmail": {**_BEHAVIOUR, "sample_items": 3, "max_new_tokens": 48},
    "reward-hacking": {**_BEHAVIOUR, "sample_items": 4, "max_new_tokens": 96},
    "sycophancy": {**_BEHAVIOUR, "sample_items": 6, "max_new_tokens": 48},
    "preference": {"pairs": 96, "n_vectors": 4, "dose": ()},  # each activity in 3 pairs
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``report`` and ``demo``."""
    p = sub.add_parser("report", help="run every analysis and write an HTML report")
    add_model_args(p)
    _add_report_args(p)
    p.set_defaults(func=run)
    d = sub.add_parser("demo", help="the main job on the default model: model info, a "
                       "monitored generation, then the full report")
    d.add_argument("--out", default="emolens-report", type=output_dir, help="output folder")
    d.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar over the sections (default: on a terminal)")
    d.set_defaults(func=run_demo, model="default", revision=None, trust_remote_code=False,
                   dtype="float32", device="auto", device_map=None, vectors=None,
                   corpus="default", layer=None, only=None, seed=0)


def _add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vectors", default=None,
                   help="vector file (default: the shipped vectors for the default model)")
    p.add_argument("--corpus", default="default", help="corpus with held-out stories")
    p.add_argument("--out", default="emolens-report", type=output_dir, help="output folder")
    p.add_argument("--layer", default=None, type=layer_spec,
                   help="read-out layer (int, depth fraction or "
                   "blocks.N.hook_resid_post; default: the file's recommended layer)")
    p.add_argument("--only", default=None, help="comma-separated analysis names to run "
                   "(the names of 'emolens validate --help')")
    p.add_argument("--seed", type=seed_arg, default=0,
                   help="seed for random controls (default 0)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar over the sections (default: on a terminal)")


def _chosen(only: str | None) -> list[Any]:
    """The analyses ``--only`` names (any spelling the registry knows), all by default."""
    from emolens.experiments import analyses, get

    if not only:
        return analyses()
    return [get(k) for k in only.split(",") if k.strip()]


def _progress(args: argparse.Namespace) -> bool:
    wanted = getattr(args, "progress", None)
    return bool(sys.stderr.isatty()) if wanted is None else bool(wanted)


def run(args: argparse.Namespace, options: dict[str, dict[str, Any]] | None = None) -> int:
    """Build the report (analysis ``options`` by name, if given) and print where it is."""
    from emolens.cli.options import load_vectors_from_args, parse_layer
    from emolens.corpus import load_corpus
    from emolens.report.html import build_report

    chosen = _chosen(args.only)  # unknown names fail before the model loads
    lm = load_model_from_args(args)
    vectors = load_vectors_from_args(args, lm)
    corpus = load_corpus(args.corpus) if any(a.needs_corpus for a in chosen) else None
    page = build_report(lm, vectors, args.out, corpus=corpus, layer=parse_layer(args.layer),
                        options=options,
                        analyses=chosen, seed=args.seed, progress=_progress(args))
    print(f"report: {page.resolve()}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Model info, one monitored reply, then the full report."""
    from emolens.cli.options import load_vectors_from_args

    started = time.perf_counter()
    lm = load_model_from_args(args)
    info = lm.info()
    print(f"model: {info['name']} ({info['class']}, {info['n_layers']} layers, "
          f"d={info['hidden_size']}, {info['parameters'] / 1e6:.0f}M parameters, "
          f"{info['dtype']}) loaded in {getattr(lm, 'load_seconds', 0):.1f}s")
    vectors = load_vectors_from_args(args, lm)
    print(f"vectors: {len(vectors.emotions)} emotions x {len(vectors.layers)} layers, "
          f"read at layer {vectors.default_layer}")
    prompt = [{"role": "user", "content": "My dog has been missing for three days and I just "
               "found his collar by the road. What should I do?"}]
    result = lm.generate_text([prompt], max_new_tokens=40, monitor=vectors)[0]
    print(f"monitored reply: {result.text.strip()!r}")
    if result.scores is not None and len(result.scores):
        mean = result.scores.mean(axis=0)
        top = mean.argsort()[::-1][:5]
        print("reply's strongest emotions: " + ", ".join(
            f"{vectors.emotions[i]} {mean[i]:+.3f}" for i in top))
    sys.stdout.flush()
    code = run(args, options=DEMO_OPTIONS)
    print(f"main job finished in {time.perf_counter() - started:.0f}s")
    return code
