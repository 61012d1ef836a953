"""``emolens chat``: a terminal chat that shows the emotion behind every token.

Each generated token is coloured by its strongest emotion (ANSI 256 colours) and each
turn ends with its top emotions.  Lines are read from stdin, so it can be scripted:

    printf 'Hi!\\nMy cat died this morning.\\n' | emolens chat --no-color

``/reset`` clears the conversation, ``/quit`` (or end of input) leaves.  Steering,
alert rules and guards work as in ``emolens generate``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import zlib
from typing import Any

from emolens.cli.common import decode_text, text_arg
from emolens.cli.generate import steering_context
from emolens.cli.options import (
    add_generation_args,
    add_vector_args,
    describe_alert,
    load_vectors_from_args,
    parse_layer,
    positive_int,
    watch_from_args,
)

# distinct foreground colours of the xterm 256-colour palette
PALETTE = (196, 208, 220, 118, 46, 51, 33, 21, 93, 201, 205, 130, 109, 250)
RESET = "\033[0m"


def colour_of(emotion: str) -> int:
    """A stable palette colour for an emotion name (the same in every run).

    >>> colour_of("calm") == colour_of("calm") and colour_of("calm") in PALETTE
    True
    """
    return PALETTE[zlib.crc32(emotion.encode("utf-8")) % len(PALETTE)]


def paint(text: str, emotion: str, enabled: bool) -> str:
    """``text`` in ``emotion``'s colour (unchanged when colour is off)."""
    if not enabled or not text:
        return text
    return f"\033[38;5;{colour_of(emotion)}m{text}{RESET}"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "chat", help="terminal chat, each token coloured by its strongest emotion",
        description="Chat with the model in the terminal. Every token is coloured by its "
                    "strongest emotion and each turn ends with its top emotions. Reads one "
                    "user message per line from stdin (/reset clears, /quit leaves).")
    from emolens.cli.common import add_model_args

    add_model_args(p)
    add_vector_args(p)
    add_generation_args(p, max_new_tokens=128)
    p.add_argument("--system", default=None, type=text_arg, help="a system message")
    p.add_argument("--top", type=positive_int, default=3, metavar="K",
                   help="top emotions shown after each turn (default 3)")
    p.add_argument("--no-color", action="store_true",
                   help="plain text (also when the NO_COLOR environment variable is set)")
    p.set_defaults(func=run, monitor=True)


def _read_line(n: int) -> str:
    """Line ``n`` of stdin ('' at the end), decoded as UTF-8 with an error naming the line."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream already (tests, notebooks)
        return sys.stdin.readline()
    return decode_text(stream.readline(), "stdin", first_line=n)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from emolens.cli.common import load_model_from_args

    colour = not args.no_color and not os.environ.get("NO_COLOR")
    lm = load_model_from_args(args)
    vecs = load_vectors_from_args(args, lm)
    out = sys.stdout

    def show_alert(alert: Any) -> None:
        out.write(f"\n  {describe_alert(alert)}\n")

    watch = watch_from_args(args, lm, vecs, on_alert=show_alert)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict[str, str]] = list(system)
    interactive = sys.stdin.isatty()
    turns = 0
    for n in itertools.count(1):
        if interactive:
            out.write("you> ")
            out.flush()
        line = _read_line(n)
        if not line:
            break
        message = line.strip()
        if not message:
            continue
        if message in ("/quit", "/exit"):
            break
        if message == "/reset":
            history = list(system)
            out.write("(conversation cleared)\n")
            continue
        history.append({"role": "user", "content": message})
        out.write("assistant> ")
        scores, pieces, ids = [], [], []
        with steering_context(args, lm, vecs):
            for step in lm.stream(history, max_new_tokens=args.max_new_tokens,
                                  temperature=args.temperature, top_p=args.top_p,
                                  seed=args.seed, monitor=vecs, layer=parse_layer(args.layer),
                                  mode=args.mode, watch=watch):
                strongest = vecs.emotions[int(np.argmax(step.scores))]
                out.write(paint(step.text, strongest, colour))
                out.flush()
                scores.append(step.scores)
                pieces.append(step.text)
                ids.append(step.token_id)
        reply = lm.tokenizer.decode(ids, skip_special_tokens=True)
        shown = "".join(pieces)
        if reply.startswith(shown) and len(reply) > len(shown):  # a held-back partial char
            out.write(reply[len(shown):])
        mean = np.mean(scores, axis=0) if scores else np.zeros(len(vecs))
        order = np.argsort(-mean, kind="stable")[:args.top]
        tops = ", ".join(paint(f"{vecs.emotions[i]} {mean[i]:+.3f}", vecs.emotions[i], colour)
                         for i in order)
        out.write(f"\n  [{len(pieces)} tokens; top emotions: {tops}]\n")
        for report in watch.guard_report() if watch is not None else []:
            if report["triggered_at"] is not None:
                out.write(f"  [guard {report['rule']} steered from token "
                          f"{report['triggered_at']} on]\n")
        out.flush()
        history.append({"role": "assistant", "content": reply})
        turns += 1
    if interactive:
        out.write("\n")
    return 0
