"""``emolens validate``: the study's validation and speaker checks on any model.

    emolens validate scenarios                      # default model, shipped vectors
    emolens validate all --out results/ --json      # every analysis, figures as PNG
    emolens validate intensity --model Qwen/Qwen2.5-0.5B-Instruct --vectors qwen.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emolens.cli.common import add_model_args, load_model_from_args, print_json
from emolens.errors import EmolensError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

CHOICES = ("heldout", "logit-lens", "scenarios", "intensity", "steering", "speakers", "all")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="held-out accuracy, logit lens, scenarios, intensity, "
                       "steering and speaker checks of emotion vectors")
    p.add_argument("analysis", choices=CHOICES, metavar="ANALYSIS",
                   help="one of " + ", ".join(CHOICES))
    add_model_args(p)
    p.add_argument("--vectors", default=None,
                   help="vector file (default: the shipped vectors of the default model)")
    p.add_argument("--layer", default=None,
                   help="layer to read and steer (int or depth fraction; default: the file's)")
    p.add_argument("--corpus", default="default",
                   help="corpus with held-out stories and dialogues (default: shipped)")
    p.add_argument("--strength", type=float, default=0.5,
                   help="steering strength for 'steering', in residual-norm units")
    p.add_argument("--k", type=int, default=5, help="tokens per side for 'logit-lens'")
    p.add_argument("--max-new-tokens", type=int, default=20,
                   help="reply length for 'speakers'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--out", default=None, help="folder for figures (PNG) and results (JSON)")
    p.set_defaults(func=run)


def load_vectors(lm: LanguageModel, path: str | None, model_spec: str) -> EmotionVectors:
    """The vectors to validate: ``path``, or the shipped ones for the default model."""
    from emolens.vectors import EmotionVectors

    if path is not None:
        return EmotionVectors.load(path, expect_model=lm.fingerprint())
    if model_spec != "default":
        raise EmolensError("pass --vectors FILE: shipped vectors exist only for the default "
                           "model (build some with the extraction command)")
    from emolens.extract import default_vectors

    return default_vectors(lm)


def run_analysis(name: str, lm: LanguageModel, vectors: EmotionVectors, args: Any,
                 corpus: Any = None) -> Any:
    """Run one analysis by its CLI name; returns its result object."""
    from emolens.experiments import validation as V

    layer = args.layer
    if name == "heldout":
        return V.heldout_classification(lm, vectors, corpus, layer=layer)
    if name == "logit-lens":
        return V.logit_lens(lm, vectors, layer=layer, k=args.k)
    if name == "scenarios":
        return V.implicit_scenarios(lm, vectors, layer=layer)
    if name == "intensity":
        return V.intensity_sweeps(lm, vectors, layer=layer)
    if name == "steering":
        return V.steering_validation(lm, vectors, layer=layer, strength=args.strength)
    if name == "speakers":
        from emolens.experiments.speakers import speaker_analysis

        return speaker_analysis(lm, vectors, layer=layer, max_new_tokens=args.max_new_tokens,
                                corpus=corpus)
    raise EmolensError(f"unknown analysis {name!r}")  # pragma: no cover - argparse checks


def _write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, allow_nan=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    from emolens.report.figures import save_png

    names = [n for n in CHOICES if n != "all"] if args.analysis == "all" else [args.analysis]
    lm = load_model_from_args(args)
    vectors = load_vectors(lm, args.vectors, args.model)
    corpus = None
    if {"heldout", "speakers"} & set(names):
        from emolens.corpus import load_corpus

        corpus = load_corpus(args.corpus)
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in names:
        started = time.perf_counter()
        if not args.json:
            print(f"running {name} ...", file=sys.stderr, flush=True)
        res = run_analysis(name, lm, vectors, args, corpus)
        data = res.to_dict()
        data["seconds"] = round(time.perf_counter() - started, 2)
        results[name] = data
        if out_dir is not None:
            save_png(res.figure(), out_dir / f"{name}.png")
            _write_json(out_dir / f"{name}.json", data)
        if not args.json:
            print(res.summary())
            print(f"  ({data['seconds']:.1f} s" + (f"; figure {out_dir / (name + '.png')}"
                                                   if out_dir is not None else "") + ")\n")
    if args.json:
        print_json(results if args.analysis == "all" else results[names[0]])
    return 0
