"""``emolens report`` and ``emolens demo``: every analysis of the study, as one HTML page."""

from __future__ import annotations

import argparse
import sys
import time

from emolens.cli.common import add_model_args, load_model_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="run every analysis and write an HTML report")
    add_model_args(p)
    p.add_argument("--vectors", default=None,
                   help="vector file (default: the shipped vectors for the default model)")
    p.add_argument("--corpus", default="default", help="corpus with held-out stories")
    p.add_argument("--out", default="emolens-report", help="output folder")
    p.add_argument("--layer", type=int, default=None, help="read-out layer (default: the "
                   "file's recommended layer)")
    p.add_argument("--only", default=None, help="comma-separated section keys to run")
    p.set_defaults(func=run)
    d = sub.add_parser("demo", help="the main job on the default model: model info, a "
                       "monitored generation, then the full report")
    d.add_argument("--out", default="emolens-report", help="output folder")
    d.set_defaults(func=run_demo, model="default", dtype="float32", device=None,
                   device_map=None, vectors=None, corpus="default", layer=None, only=None)


def _vectors(args: argparse.Namespace, lm):  # noqa: ANN001, ANN202
    from emolens.errors import VectorFileError
    from emolens.extract import default_vectors
    from emolens.vectors import EmotionVectors

    if args.vectors:
        return EmotionVectors.load(args.vectors, expect_model=lm.fingerprint())
    if args.model != "default":
        raise VectorFileError("--vectors is required for models other than the default "
                              "(build them with: emolens extract --model ... --out FILE)")
    return default_vectors(lm)


def run(args: argparse.Namespace) -> int:
    from emolens.corpus import load_corpus
    from emolens.errors import EmolensError
    from emolens.report.html import SECTIONS, build_report

    sections = SECTIONS
    if args.only:
        wanted = [k.strip() for k in args.only.split(",")]
        unknown = sorted(set(wanted) - {s.key for s in SECTIONS})
        if unknown:
            raise EmolensError(f"unknown report section(s) {unknown}; choose from "
                               + ", ".join(s.key for s in SECTIONS))
        sections = tuple(s for s in SECTIONS if s.key in wanted)
    lm = load_model_from_args(args)
    vectors = _vectors(args, lm)
    page = build_report(lm, vectors, args.out, corpus=load_corpus(args.corpus),
                        layer=args.layer, sections=sections)
    print(f"report: {page.resolve()}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    lm = load_model_from_args(args)
    info = lm.info()
    print(f"model: {info['name']} ({info['class']}, {info['n_layers']} layers, "
          f"d={info['hidden_size']}, {info['parameters'] / 1e6:.0f}M parameters, "
          f"{info['dtype']}) loaded in {getattr(lm, 'load_seconds', 0):.1f}s")
    vectors = _vectors(args, lm)
    print(f"vectors: {len(vectors.emotions)} emotions x {len(vectors.layers)} layers, "
          f"read at layer {vectors.default_layer}")
    prompt = [{"role": "user", "content": "My dog has been missing for three days and I just "
               "found his collar by the road. What should I do?"}]
    result = lm.generate_text([prompt], max_new_tokens=40, monitor=vectors)[0]
    top = result.scores.mean(axis=0).argsort()[::-1][:5] if result.scores is not None else []
    print(f"monitored reply: {result.text.strip()!r}")
    print("reply's strongest emotions: " + ", ".join(
        f"{vectors.emotions[i]} {result.scores.mean(axis=0)[i]:+.3f}" for i in top))
    sys.stdout.flush()
    code = run(args)
    print(f"main job finished in {time.perf_counter() - started:.0f}s")
    return code
