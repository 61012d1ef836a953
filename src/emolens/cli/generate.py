"""``emolens generate``: generate a reply, optionally steered, monitored, alerted and guarded.

    emolens generate --prompt "Tell me about your day." --steer calm=0.1 --steer desperate=-0.05
    emolens generate --prompt "..." --monitor --alert "desperate>0.05@4" --alert-log alerts.jsonl
    emolens generate --prompt "..." --guard "desperate>0.05@4:calm=0.2,desperate=-0.1" --json

A guard is conditional steering: nothing is added until its rule fires, then its
steering holds for the rest of the generation.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from typing import Any

from emolens.cli.probe import add_vector_args, format_scores, load_vectors_from_args, parse_layer
from emolens.errors import EmolensError, SteeringError

POSITIONS = ("all", "prompt", "generated", "assistant_start")


def add_generation_args(parser: argparse.ArgumentParser, max_new_tokens: int = 64) -> None:
    """Sampling, steering, alert and guard options (shared with ``emolens chat``)."""
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens, metavar="N")
    parser.add_argument("--temperature", type=float, default=0.0, metavar="T",
                        help="0 (default) is greedy")
    parser.add_argument("--top-p", type=float, default=1.0, metavar="P")
    parser.add_argument("--seed", type=int, default=None, metavar="S")
    parser.add_argument("--steer", action="append", default=[], metavar="NAME=STRENGTH",
                        help="add an emotion vector (strength: fraction of the layer's "
                             "residual norm; 0.05 gentle, 0.5 strong); repeatable")
    parser.add_argument("--steer-layers", default=None, metavar="L",
                        help="layer(s) to steer at (default: the vector file's default layer)")
    parser.add_argument("--positions", choices=POSITIONS, default="all",
                        help="which tokens --steer acts on (default: all)")
    parser.add_argument("--alert", action="append", default=[], metavar="RULE",
                        help="EMOTION>THRESHOLD[@WINDOW] (or <); join with & for AND; "
                             "repeatable (turns on --monitor)")
    parser.add_argument("--alert-log", default=None, metavar="FILE",
                        help="append every alert to this JSONL file")
    parser.add_argument("--guard", action="append", default=[],
                        metavar="RULE:NAME=STRENGTH[,NAME=STRENGTH]",
                        help="when RULE fires, steer with these vectors for the rest of the "
                             "generation (on generated tokens); repeatable")


def parse_guard(spec: str) -> tuple[str, dict[str, float]]:
    """``"desperate>0.05@4:calm=0.2,desperate=-0.1"`` -> (rule text, strengths)."""
    from emolens.steer import parse_strengths

    rule, sep, steer = spec.partition(":")
    if not sep or not rule.strip() or not steer.strip():
        raise SteeringError(f"cannot read guard {spec!r}; write RULE:NAME=STRENGTH, e.g. "
                            "'desperate>0.05@4:calm=0.2'")
    return rule.strip(), parse_strengths([s for s in steer.split(",") if s.strip()])


def check_generation_args(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise EmolensError("--max-new-tokens must be >= 1")
    if not 0 < args.top_p <= 1:
        raise EmolensError("--top-p must be in (0, 1]")
    if args.temperature < 0:
        raise EmolensError("--temperature must be >= 0")


class Session:
    """Steering, alert rules and guards built once from the arguments; reused per turn."""

    def __init__(self, args: argparse.Namespace, lm: Any, vecs: Any,
                 on_alert: Any = None) -> None:
        from emolens.monitor import AlertEngine, parse_rule
        from emolens.steer import Guardrail, build_steering, parse_strengths

        self.lm, self.vecs = lm, vecs
        strengths = parse_strengths(args.steer)
        self.steering = build_steering(lm, vecs, strengths, layers=args.steer_layers,
                                       positions=args.positions) if strengths else None
        self.guards = []
        rules: list[Any] = [parse_rule(r) for r in args.alert]
        for spec in args.guard:
            rule_text, guard_strengths = parse_guard(spec)
            rule = parse_rule(rule_text)
            plan = build_steering(lm, vecs, guard_strengths, layers=args.steer_layers,
                                  positions="generated")
            self.guards.append((rule, Guardrail(plan)))
            rules.append(rule)
        self.engine = None
        if rules:
            def callback(alert: Any) -> None:
                for rule, guard in self.guards:
                    if rule.name == alert.rule:
                        guard.on_alert(alert)
                if on_alert is not None:
                    on_alert(alert)

            self.engine = AlertEngine(vecs.emotions, rules, callback=callback,
                                      log_path=args.alert_log)
        self.monitor = bool(args.monitor or rules)

    def plans(self) -> list[Any]:
        return ([self.steering] if self.steering is not None else []) + \
            [g.steering for _r, g in self.guards]

    def reset(self) -> None:
        """Before a new generation: guards off, alert windows forgotten."""
        for _rule, guard in self.guards:
            guard.reset()
        if self.engine is not None:
            self.engine.reset()

    def installed(self) -> Any:
        """Context manager installing every steering plan (guards start switched off)."""
        from contextlib import ExitStack

        from emolens.steer import apply_steering

        stack = ExitStack()
        for plan in self.plans():
            stack.enter_context(apply_steering(self.lm, plan))
        return stack

    def guard_report(self) -> list[dict[str, Any]]:
        return [{"rule": rule.name, "triggered_at": g.triggered_at} for rule, g in self.guards]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate", help="generate a reply, optionally steered, monitored and guarded",
        description="Generate a reply to --prompt (sent as a user message through the chat "
                    "template unless --raw), optionally steered with emotion vectors, "
                    "monitored token by token, with alert rules and guards.")
    p.add_argument("--prompt", required=True, help="the user message (or raw text with --raw)")
    p.add_argument("--raw", action="store_true", help="continue --prompt as plain text")
    p.add_argument("--system", default=None, help="a system message before the prompt")
    from emolens.cli.common import add_model_args

    add_model_args(p)
    add_vector_args(p)
    add_generation_args(p)
    p.add_argument("--monitor", action="store_true",
                   help="read the emotions of every generated token")
    p.add_argument("--top", type=int, default=3, metavar="K",
                   help="emotions shown per token and in the summary (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emolens.cli.common import load_model_from_args, print_json

    check_generation_args(args)
    if args.top < 1:
        raise EmolensError("--top must be >= 1")
    needs_vectors = bool(args.steer or args.monitor or args.alert or args.guard)
    lm = load_model_from_args(args)
    vecs = load_vectors_from_args(args, lm) if needs_vectors else None
    if args.raw:
        prompt: Any = args.prompt
    else:
        prompt = ([{"role": "system", "content": args.system}] if args.system else []) + \
            [{"role": "user", "content": args.prompt}]

    def show_alert(alert: Any) -> None:
        if not args.json:
            print(f"\n[alert] {alert.rule} at token {alert.token_index} "
                  f"({alert.token!r}, {alert.value:+.3f})", file=sys.stderr)

    session = Session(args, lm, vecs, on_alert=show_alert) if vecs is not None else None
    monitor = vecs if session is not None and session.monitor else None
    steps = []
    with session.installed() if session is not None else nullcontext():
        for step in lm.stream(prompt, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                              monitor=monitor, layer=parse_layer(args.layer), mode=args.mode,
                              rules=session.engine if session is not None else None):
            steps.append(step)
            if not args.json and monitor is None:
                print(step.text, end="", flush=True)
    text = lm.tokenizer.decode([s.token_id for s in steps], skip_special_tokens=True)
    finished = len(steps) < args.max_new_tokens
    summary: list[tuple[str, float]] = []
    if monitor is not None:
        import numpy as np

        mean = np.stack([s.scores for s in steps]).mean(0) if steps else np.zeros(len(vecs))
        order = np.argsort(-mean, kind="stable")[:args.top]
        summary = [(vecs.emotions[i], float(mean[i])) for i in order]
    if args.json:
        out: dict[str, Any] = {
            "prompt": args.prompt, "text": text, "n_tokens": len(steps), "finished": finished,
            "steer": _strengths(args),
        }
        if monitor is not None:
            out["summary"] = [{"emotion": e, "score": round(s, 6)} for e, s in summary]
            out["tokens"] = [_token_json(s, vecs, args.top) for s in steps]
            out["alerts"] = [vars(a) for a in session.engine.fired] if session.engine else []
            out["guards"] = session.guard_report()
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
    print("top emotions: " + format_scores(summary))
    for report in session.guard_report():
        state = f"triggered at token {report['triggered_at']}, steering from then on" \
            if report["triggered_at"] is not None else "never triggered"
        print(f"guard {report['rule']}: {state}")
    return 0


def _strengths(args: argparse.Namespace) -> dict[str, float]:
    from emolens.steer import parse_strengths

    return parse_strengths(args.steer)


def _token_json(step: Any, vecs: Any, top: int) -> dict[str, Any]:
    order = step.scores.argsort()[::-1][:top]
    return {"index": step.index, "token": step.text, "id": step.token_id,
            "top": [{"emotion": vecs.emotions[j], "score": round(float(step.scores[j]), 6)}
                    for j in order],
            "alerts": [a.rule for a in step.alerts or []]}
