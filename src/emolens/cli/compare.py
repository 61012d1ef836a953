"""``emolens compare``: the same emotion vectors read in two models (study section 10).

    emolens compare --model-b copy:bfloat16                # the default model vs its bf16 copy
    emolens compare --model-b plant:calm:0.25@10 --json    # vs a copy with calm planted at 10
    emolens compare --model Qwen/Qwen2.5-1.5B --model-b Qwen/Qwen2.5-1.5B-Instruct \\
        --vectors qwen2.5-1.5b-instruct.safetensors --device cuda --out compare/

``--model`` (with ``--revision``, ``--dtype``, ``--device``...) is model A, ``--model-b``
model B: a hub id, a folder, a ``.gguf``, ``default``, or a copy of A with a documented
perturbation (``copy:bfloat16``, ``plant:EMOTION:STRENGTH@LAYER``; see
:mod:`emolens.experiments.compare`). The vectors must fit both models (same width, their
layers in both); a mismatch is one error line naming both. The same analysis runs in the
report and in ``emolens validate compare --model-b ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from emolens.cli.common import (
    DTYPE_CHOICES,
    add_model_args,
    layer_spec,
    load_model_from_args,
    output_dir,
    positive_int,
    print_json,
    seed_arg,
)

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``compare`` subcommand.

    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="emolens")
    >>> register(parser.add_subparsers(dest="command"))
    >>> a = parser.parse_args(["compare", "--model-b", "copy:bfloat16", "--json"])
    >>> a.model, a.model_b, a.json, a.n_boot
    ('default', 'copy:bfloat16', True, 2000)
    """
    p = sub.add_parser("compare", help="the same emotion vectors read in two models (base vs "
                       "post-trained, quantised vs full, before vs after fine-tuning)")
    add_model_args(p)
    g = p.add_argument_group("model B")
    g.add_argument("--model-b", required=True, metavar="SPEC",
                   help="hub id, folder, .gguf or 'default'; or copy:bfloat16 / copy:float16 "
                        "(A cast), or plant:EMOTION:STRENGTH@LAYER (A with a known direction "
                        "added to one layer's output)")
    g.add_argument("--revision-b", default=None, help="hub revision of model B")
    g.add_argument("--dtype-b", default="auto", choices=DTYPE_CHOICES,
                   help="dtype of model B (default auto)")
    o = p.add_argument_group("inputs and output")
    o.add_argument("--vectors", default=None, metavar="FILE",
                   help="vector file read in both models (default: the shipped vectors of "
                        "the default model)")
    o.add_argument("--layer", default=None, type=layer_spec,
                   help="main layer (default: the file's); every layer is read for the "
                        "per-layer shifts")
    o.add_argument("--prompts", default=None, metavar="FILE",
                   help="JSONL prompt set (default: the shipped 20 challenging + 20 neutral)")
    o.add_argument("--cases", default="", help="prompt ids for the case tables, "
                   "comma-separated (default: the most changed prompt of each kind)")
    o.add_argument("--n-boot", type=positive_int, default=2000,
                   help="bootstrap samples over prompts (default 2000)")
    o.add_argument("--seed", type=seed_arg, default=0, help="bootstrap seed (default 0)")
    o.add_argument("--batch-size", type=positive_int, default=16,
                   help="prompts per forward (default 16)")
    o.add_argument("--json", action="store_true", help="machine-readable output")
    o.add_argument("--out", default=None, metavar="DIR", type=output_dir,
                   help="folder for the figures (PNG) and compare.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load both models, compare them, print the summary (or JSON), write figures."""
    from emolens.cli.options import load_vectors_from_args, parse_layer
    from emolens.concepts.compare_prompts import load_compare_prompts
    from emolens.experiments.compare import compare_models, resolve_model_b

    prompts = load_compare_prompts(args.prompts) if args.prompts else None
    lm_a = load_model_from_args(args)
    vectors = load_vectors_from_args(args, None)  # checked against both models below
    device = getattr(args, "device", "auto")
    side_b = resolve_model_b(args.model_b, lm_a, vectors, revision=args.revision_b,
                             dtype=args.dtype_b, device=None if args.device_map else device,
                             device_map=args.device_map,
                             trust_remote_code=bool(args.trust_remote_code))
    cases = tuple(x.strip() for x in args.cases.split(",") if x.strip())
    result = compare_models(lm_a, side_b, vectors, layer=parse_layer(args.layer),
                            prompts=prompts, n_boot=args.n_boot, seed=args.seed,
                            batch_size=args.batch_size, cases=cases, say=logger.info)
    data = result.to_json()
    if args.out:
        from emolens.fileio import write_text_atomic
        from emolens.report.figures import save_figures

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for path in save_figures(result, out, "compare"):
            logger.info("wrote %s", path)
        write_text_atomic(out / "compare.json", json.dumps(data, indent=2, allow_nan=False)
                          + "\n")
    if args.json:
        print_json(data)
    else:
        print(result.summary())
    return 0
