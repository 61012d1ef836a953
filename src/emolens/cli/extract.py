"""``emolens extract``: corpus -> emotion vectors (optionally in shards merged later)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emolens.cli.common import add_model_args, load_model_from_args
from emolens.errors import CorpusError


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shard must look like 0/4, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard {text} is out of range")
    return i, n


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="build emotion vectors from a corpus",
                       description="Build emotion vectors (all layers by default) from a corpus. "
                       "'emolens extract merge' combines --shard outputs exactly.")
    add_model_args(p)
    p.add_argument("--corpus", default="default", help="corpus folder, or 'default' (curated)")
    p.add_argument("--out", required=True, help="vector file to write (.safetensors); with "
                   "--shard, the prefix of the shard statistics")
    p.add_argument("--layers", default="all", help="all | 0.66 | 12 | 10,20 | 8-20")
    p.add_argument("--token-skip", type=int, default=50, help="pool from this token on")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--variance", type=float, default=0.5,
                   help="neutral variance to project out (0 keeps raw vectors)")
    p.add_argument("--shard", type=_shard, default=None, help="i/n: compute shard i of n only")
    p.add_argument("--no-sweep", action="store_true", help="skip the held-out layer sweep")
    p.set_defaults(func=run)
    m = sub.add_parser("extract-merge", help="merge --shard statistics into one vector file")
    add_model_args(m)
    m.add_argument("shards", nargs="+", help="shard prefixes written by extract --shard")
    m.add_argument("--out", required=True)
    m.add_argument("--variance", type=float, default=0.5)
    m.set_defaults(func=run_merge)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from emolens.corpus import load_corpus
    from emolens.extract import collect, extract

    if args.token_skip < 0 or args.batch_size < 1:
        raise CorpusError("--token-skip must be >= 0 and --batch-size >= 1")
    corpus = load_corpus(args.corpus)
    lm = load_model_from_args(args)
    if args.shard is not None:
        run_stats = collect(lm, corpus, lm.resolve_layers(args.layers),
                            token_skip=args.token_skip, batch_size=args.batch_size,
                            shard=args.shard, progress=True)
        path = run_stats.save(args.out)
        _say(f"wrote shard {args.shard[0]}/{args.shard[1]} statistics to {path}.*")
        return 0
    vecs = extract(lm, corpus, layers=args.layers, token_skip=args.token_skip,
                   batch_size=args.batch_size, variance=args.variance,
                   sweep=not args.no_sweep, progress=True, log=_say)
    out = vecs.save(args.out)
    print(f"wrote {len(vecs.emotions)} emotions x {len(vecs.layers)} layers to {out} "
          f"(default layer {vecs.default_layer})")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from emolens.extract import Extraction, merge_stats, vectors_from

    merged = merge_stats([Extraction.load(Path(s)) for s in args.shards])
    lm = load_model_from_args(args)
    vecs = vectors_from(lm.fingerprint(), merged, variance=args.variance)
    out = vecs.save(args.out)
    print(f"merged {len(args.shards)} shards into {out}")
    return 0
