"""``emolens generate``: generate a reply, optionally steered, monitored, alerted and guarded.

    emolens generate --prompt "Tell me about your day." --steer calm=0.1 --steer desperate=-0.05
    emolens generate --prompt "..." --monitor --alert "desperate>0.05@4" --alert-log alerts.jsonl
    emolens generate --prompt "..." --guard "desperate>0.05@4:calm=0.2,desperate=-0.1" --json

A guard is conditional steering: nothing is added until its rule fires, then its
steering holds for the rest of the generation.  The wiring is the library's
:class:`emolens.alerts.Watch`; this module only parses and prints.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from typing import Any

from emolens.cli.options import (
    add_generation_args,
    add_vector_args,
    describe_alert,
    format_scores,
    load_vectors_from_args,
    parse_layer,
    positive_int,
    watch_from_args,
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate", help="generate a reply, optionally steered, monitored and guarded",
        description="Generate a reply to --prompt (sent as a user message through the chat "
                    "template unless --raw), optionally steered with emotion vectors, "
                    "monitored token by token, with alert rules and guards.")
    from emolens.cli.common import add_model_args, text_arg

    p.add_argument("--prompt", required=True, type=text_arg,
                   help="the user message (or raw text with --raw)")
    p.add_argument("--raw", action="store_true", help="continue --prompt as plain text")
    p.add_argument("--system", default=None, type=text_arg,
                   help="a system message before the prompt")

    add_model_args(p)
    add_vector_args(p)
    add_generation_args(p)
    p.add_argument("--monitor", action="store_true",
                   help="read the emotions of every generated token")
    p.add_argument("--top", type=positive_int, default=3, metavar="K",
                   help="emotions shown per token and in the summary (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def steering_context(args: argparse.Namespace, lm: Any, vecs: Any) -> Any:
    """The --steer steering as a context manager (a no-op without --steer)."""
    from emolens.steer import parse_strengths

    strengths = parse_strengths(args.steer)
    if not strengths:
        return nullcontext()
    return lm.steer(vecs, strengths, layers=args.steer_layers, positions=args.positions)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from emolens.cli.common import load_model_from_args, print_json
    from emolens.steer import parse_strengths

    strengths = parse_strengths(args.steer)  # bad syntax fails before the model loads
    needs_vectors = bool(strengths or args.monitor or args.alert or args.guard)
    lm = load_model_from_args(args)
    vecs = load_vectors_from_args(args, lm) if needs_vectors else None
    if args.raw:
        prompt: Any = args.prompt
    else:
        prompt = ([{"role": "system", "content": args.system}] if args.system else []) + \
            [{"role": "user", "content": args.prompt}]

    def show_alert(alert: Any) -> None:
        if not args.json:
            print("\n" + describe_alert(alert), file=sys.stderr)

    watch = watch_from_args(args, lm, vecs, on_alert=show_alert) if vecs is not None else None
    monitor = vecs if (args.monitor or watch is not None) else None
    steps = []
    with steering_context(args, lm, vecs):
        for step in lm.stream(prompt, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                              monitor=monitor, layer=parse_layer(args.layer), mode=args.mode,
                              watch=watch):
            steps.append(step)
            if not args.json and monitor is None:
                print(step.text, end="", flush=True)
    text = lm.tokenizer.decode([s.token_id for s in steps], skip_special_tokens=True)
    finished = len(steps) < args.max_new_tokens
    summary: list[tuple[str, float]] = []
    if monitor is not None:
        mean = np.stack([s.scores for s in steps]).mean(0) if steps else np.zeros(len(vecs))
        order = np.argsort(-mean, kind="stable")[:args.top]
        summary = [(vecs.emotions[i], float(mean[i])) for i in order]
    if args.json:
        out: dict[str, Any] = {"prompt": args.prompt, "text": text, "n_tokens": len(steps),
                               "finished": finished, "steer": strengths}
        if monitor is not None:
            out["summary"] = [{"emotion": e, "score": round(s, 6)} for e, s in summary]
            out["tokens"] = [_token_json(s, vecs, args.top) for s in steps]
            out["alerts"] = [vars(a) for a in watch.fired] if watch is not None else []
            out["guards"] = watch.guard_report() if watch is not None else []
        print_json(out)
        return 0
    if monitor is None:
        shown = "".join(s.text for s in steps)
        print(text[len(shown):] if text.startswith(shown) else "")
        return 0
    for s in steps:
        order = s.scores.argsort()[::-1][:args.top]
        tops = format_scores([(vecs.emotions[j], float(s.scores[j])) for j in order])
        flag = "  <- " + ", ".join(a.rule for a in s.alerts) if s.alerts else ""
        print(f"{s.index:>4}  {s.text!r:<18} {tops}{flag}")
    print(f"\n{text}\n")
    print("top emotions (mean over generated tokens): " + format_scores(summary))
    for report in watch.guard_report() if watch is not None else []:
        state = f"triggered at token {report['triggered_at']}, steering from then on" \
            if report["triggered_at"] is not None else "never triggered"
        print(f"guard {report['rule']}: {state}")
    return 0


def _token_json(step: Any, vecs: Any, top: int) -> dict[str, Any]:
    order = step.scores.argsort()[::-1][:top]
    return {"index": step.index, "token": step.text, "id": step.token_id,
            "top": [{"emotion": vecs.emotions[j], "score": round(float(step.scores[j]), 6)}
                    for j in order],
            "alerts": [a.rule for a in step.alerts or []]}
