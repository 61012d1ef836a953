"""``emolens corpus``: generate, check and describe story/dialogue corpora.

    emolens corpus generate --model default --out runs/corpus --emotions calm,afraid --topics 4
    emolens corpus check default
    emolens corpus stats runs/corpus --json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from emolens.cli.common import (
    add_model_args,
    emotion_list,
    finite_float,
    load_model_from_args,
    nonneg_int,
    output_dir,
    positive_int,
    seed_arg,
)
from emolens.concepts.emotions import EMOTIONS
from emolens.corpus import check_corpus, corpus_stats, generate_corpus, load_corpus


def _topics(value: str) -> int | list[int]:
    """``N`` (the first N topics, N >= 1) or ``a,b,c`` (explicit topic ids, each >= 0, none
    twice); whether the ids exist is checked against the kind's topic list when it runs.

    >>> _topics("4"), _topics("0, 7")
    (4, [0, 7])
    >>> _topics("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a count >= 1 or comma-separated topic ids, got '0'
    """
    what = f"expected a count >= 1 or comma-separated topic ids, got {value!r}"
    try:
        if "," in value:
            ids = [int(v) for v in value.split(",") if v.strip()]
            if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
                raise ValueError
            return ids
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(what) from None
    if count < 1:
        raise argparse.ArgumentTypeError(what)
    return count


def register(subparsers: Any) -> None:
    """Add ``corpus generate|check|stats`` to the ``emolens`` command's subparsers."""
    corpus = subparsers.add_parser(
        "corpus", help="generate, check and describe corpora",
        description="Generate, check and describe story and dialogue corpora.",
    )
    sub = corpus.add_subparsers(dest="corpus_command", metavar="{generate,check,stats}")
    sub.required = True

    gen = sub.add_parser(
        "generate", help="let a model write a corpus (resumable)",
        description="Let a model write stories or dialogues into DIR. Append-only: rerun the "
                    "same command after an interruption to finish the job. The settings are "
                    "recorded beside the texts; a rerun with other sampling settings, seed "
                    "or model is refused (write to another DIR).",
    )
    add_model_args(gen)
    gen.add_argument("--out", required=True, metavar="DIR", type=output_dir,
                     help="output directory")
    gen.add_argument("--kind", choices=("stories", "neutral", "dialogues"), default="stories")
    gen.add_argument("--emotions", type=emotion_list, default=None, metavar="A,B,...",
                     help="emotions to write about (default: all 171)")
    gen.add_argument("--topics", type=_topics, default=None, metavar="N|I,J,...",
                     help="first N topics, or explicit topic ids (default: all)")
    gen.add_argument("--per-topic", type=positive_int, default=1, metavar="K",
                     help="texts per (emotion, topic) (default: 1)")
    gen.add_argument("--batch-size", type=positive_int, default=8, metavar="B",
                     help="texts per forward (default 8; may change between runs)")
    gen.add_argument("--seed", type=seed_arg, default=0, metavar="S")
    gen.add_argument("--temperature", type=finite_float(0, 100), default=0.8, metavar="T",
                     help="sampling temperature, 0 greedy (default 0.8)")
    gen.add_argument("--top-p", type=finite_float(0, 1, lo_open=True), default=0.95,
                     metavar="P", help="nucleus sampling, in (0, 1] (default 0.95)")
    gen.add_argument("--max-new-tokens", type=positive_int, default=220, metavar="N",
                     help="longest text in tokens (default 220)")
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    gen.set_defaults(func=generate_handler)

    chk = sub.add_parser(
        "check", help="check a corpus is fit for extraction (exit 1 if not)",
        description="Check per-emotion story counts, leaked emotion words, duplicates and "
                    "empty or truncated texts. DIR may be 'default'. Exit 0 if ok, 1 if not.",
    )
    chk.add_argument("dir", metavar="DIR", help="corpus directory, JSONL file, or 'default'")
    chk.add_argument("--min-per-emotion", type=nonneg_int, default=12, metavar="N")
    chk.add_argument("--emotions", type=emotion_list, default=None, metavar="A,B,...",
                     help="emotions that must be covered (default: all 171)")
    chk.add_argument("--json", action="store_true", help="print the full result as JSON")
    chk.set_defaults(func=check_handler)

    st = sub.add_parser("stats", help="counts, lengths and rates of a corpus",
                        description="Describe a corpus. DIR may be 'default'.")
    st.add_argument("dir", metavar="DIR", help="corpus directory, JSONL file, or 'default'")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=stats_handler)


def generate_handler(args: argparse.Namespace) -> int:
    """Run :func:`emolens.corpus.generate_corpus` with a model loaded from the arguments
    (the arguments are checked first, so a bad one costs no model load)."""
    from emolens.corpus.generate import check_generation_args

    settings = dict(kind=args.kind, emotions=args.emotions, topics=args.topics,
                    per_topic=args.per_topic, batch_size=args.batch_size, seed=args.seed,
                    temperature=args.temperature, top_p=args.top_p,
                    max_new_tokens=args.max_new_tokens)
    check_generation_args(**settings, out_dir=args.out)
    lm = load_model_from_args(args)
    s = generate_corpus(lm, args.out, progress=not args.no_progress, **settings)
    flags = ", ".join(f"{k} {v}" for k, v in sorted(s.flagged.items())) or "none"
    print(f"{s.path}: wrote {s.generated} ({s.skipped} already there, {s.total} in all); "
          f"flagged {s.n_flagged} ({flags}); {s.n_tokens} tokens in {s.elapsed_s:.1f}s")
    return 0


def check_handler(args: argparse.Namespace) -> int:
    """Check a corpus; exit status 0 when it passes, 1 when it does not."""
    corpus = load_corpus(args.dir)
    result = check_corpus(corpus, min_per_emotion=args.min_per_emotion,
                          emotions=args.emotions or EMOTIONS)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=1, ensure_ascii=False)
        print()
    else:
        print(f"corpus {corpus.source}")
        print(result.summary())
    return 0 if result.ok else 1


def stats_handler(args: argparse.Namespace) -> int:
    """Print corpus statistics as text or JSON."""
    st = corpus_stats(load_corpus(args.dir))
    if args.json:
        json.dump(st, sys.stdout, indent=1, ensure_ascii=False)
        print()
        return 0
    print(f"corpus {st['source']}  fingerprint {st['fingerprint'][:16]}")
    print("records: " + ", ".join(f"{k} {v}" for k, v in st["by_kind"].items()))
    print(f"emotions with stories: {st['n_emotions']}  splits: "
          + ", ".join(f"{k} {v}" for k, v in st["by_split"].items()))
    if st["by_register"]:
        held = st["heldout_by_register"]
        print("registers: " + ", ".join(f"{k} {v} ({held.get(k, 0)} held out)"
                                        for k, v in st["by_register"].items()))
    for kind, q in st["length_words"].items():
        print(f"length ({kind}, words): median {q['p50']:.0f}, p5 {q['p5']:.0f}, "
              f"p95 {q['p95']:.0f}, range {q['min']:.0f}-{q['max']:.0f}")
    for name in ("leak_rate", "duplicate_rate", "flagged_rate"):
        r = st[name]
        lo, hi = r["ci95"]
        print(f"{name.replace('_', ' ')}: {r['k']}/{r['n']} = {r['rate']:.1%} "
              f"(95% CI {lo:.1%}-{hi:.1%})")
    print("authors: " + ", ".join(f"{k or '?'} {v}" for k, v in st["authors"].items()))
    return 0
