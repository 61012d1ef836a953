"""``emolens extract``: corpus -> emotion vectors (optionally in shards merged later).

``emolens extract --shard i/n --out PREFIX`` writes ``PREFIX.shard.safetensors``, one file that
records the model, corpus, token skip and ``i/n``; ``emolens extract merge PREFIX... --out
FILE`` checks that the shards are ``0/n .. n-1/n`` of one run and builds the vectors without
loading the model.

``--corpus default:dialogue`` builds the study's dialogue-probe variant: vectors from chats
whose assistant reply is a first-person emotional text, pooled over the reply only; the file
records ``corpus``, ``corpus_variant`` and ``corpus_registers`` in its metadata.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emolens.cli.common import (
    add_model_args,
    finite_float,
    layer_spec,
    load_model_from_args,
    nonneg_int,
    output_file,
    positive_int,
)


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shard must look like 0/4, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard {text} is out of range (need 0 <= i < n)")
    return i, n


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``extract`` and ``extract-merge`` (spelled ``extract merge``) to ``sub``."""
    p = sub.add_parser("extract", help="build emotion vectors from a corpus",
                       description="Build emotion vectors (all layers by default) from a corpus. "
                       "With --shard i/n only that share of the corpus is read and its "
                       "statistics saved; 'emolens extract merge' combines the shards exactly.")
    add_model_args(p)
    p.add_argument("--corpus", default="default",
                   help="corpus folder or JSONL file; 'default' (the curated corpus: stories "
                   "and six registers), or 'default:dialogue' (the study's dialogue-probe "
                   "variant: first-person texts as the assistant's reply to a neutral user "
                   "message, pooled over the reply)")
    p.add_argument("--out", required=True, type=output_file,
                   help="vector file to write (.safetensors); with --shard, a prefix: the "
                   "shard goes to PREFIX.shard.safetensors")
    p.add_argument("--layers", default="all", type=layer_spec,
                   help="all | 0.66 | 12 | 10,20 | 8-20")
    p.add_argument("--token-skip", type=nonneg_int, default=50, help="pool from this token on")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--variance", type=finite_float(0, 1), default=0.5,
                   help="share of the neutral variance to project out (0 keeps raw vectors)")
    p.add_argument("--shard", type=_shard, default=None, help="i/n: compute shard i of n only")
    p.add_argument("--no-sweep", action="store_true", help="skip the held-out layer sweep")
    p.set_defaults(func=run)
    m = sub.add_parser("extract-merge", help="merge --shard statistics into one vector file",
                       description="Merge the shard files of one 'extract --shard' run into a "
                       "vector file. The shards record their model, so none is loaded unless "
                       "--model is given (then the shards are checked against it).")
    add_model_args(m)
    m.set_defaults(model=None)
    m.add_argument("shards", nargs="+", help="shard files (or the prefixes given to --out)")
    m.add_argument("--out", required=True, type=output_file)
    m.add_argument("--variance", type=finite_float(0, 1), default=0.5)
    m.set_defaults(func=run_merge)


def run(args: argparse.Namespace) -> int:
    """Extract vectors, or one shard's statistics."""
    from emolens.corpus import load_corpus
    from emolens.extract import collect, extract

    corpus = load_corpus(args.corpus)
    lm = load_model_from_args(args)
    if args.shard is not None:
        stats = collect(lm, corpus, lm.resolve_layers(args.layers),
                        token_skip=args.token_skip, batch_size=args.batch_size,
                        shard=args.shard, progress=True)
        path = stats.save(args.out)
        print(f"wrote shard {args.shard[0]}/{args.shard[1]} statistics "
              f"({int(stats.stories.counts.sum())} stories) to {path}")
        return 0
    vecs = extract(lm, corpus, layers=args.layers, token_skip=args.token_skip,
                   batch_size=args.batch_size, variance=args.variance,
                   sweep=not args.no_sweep, progress=True)
    out = vecs.save(args.out)
    print(f"wrote {len(vecs.emotions)} emotions x {len(vecs.layers)} layers to {out} "
          f"(default layer {vecs.default_layer})")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    """Merge shard files into a vector file, without the model unless --model is given."""
    from emolens.extract import Extraction, merge_stats, vectors_from

    merged = merge_stats([Extraction.load(Path(s)) for s in args.shards])
    model = load_model_from_args(args) if args.model is not None else None
    vecs = vectors_from(merged, variance=args.variance, model=model)
    if merged.corpus:  # corpus, corpus_variant, corpus_registers, as a whole-corpus run records
        vecs = vecs.with_meta(**merged.corpus)
    out = vecs.save(args.out)
    print(f"merged {len(args.shards)} shards ({int(merged.stories.counts.sum())} stories) "
          f"into {out}")
    return 0
