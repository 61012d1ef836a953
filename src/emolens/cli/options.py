"""Options the reading and generating commands share: vectors, read-out, sampling, alerts.

One vector loader for every command (the model check happens in the library, so a file
made for another model fails the same way everywhere), one set of sampling options, and
the alert / guard options turned into the library's :class:`emolens.alerts.Watch`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from emolens.cli.common import finite_float, output_file, positive_int
from emolens.errors import VectorFileError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.alerts import Alert, Watch
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

#: emolens.readout.MODES, without importing torch for ``--help``.
MODES = ("auto", "cosine", "centered", "projection")
POSITIONS = ("all", "prompt", "generated", "assistant_start")


def add_vector_args(parser: argparse.ArgumentParser) -> None:
    """--vectors, --layer, --mode."""
    parser.add_argument("--vectors", default=None, metavar="FILE",
                        help="emotion-vector file (default: the shipped vectors of the "
                             "default model; required for any other model)")
    parser.add_argument("--layer", default=None, metavar="L",
                        help="read-out layer(s): 20, 0.66, '18,20', '16-20' or "
                             "blocks.20.hook_resid_post (default: the file's recommended layer)")
    parser.add_argument("--mode", choices=MODES, default="auto",
                        help="auto (default: centered when the file stores its training "
                             "centre, else cosine), cosine, centered or raw projection")


def load_vectors_from_args(args: argparse.Namespace, lm: LanguageModel | None
                           ) -> EmotionVectors:
    """The --vectors file (checked against ``lm``), or the default model's shipped vectors."""
    from emolens.vectors import EmotionVectors

    if getattr(args, "vectors", None):
        vecs = EmotionVectors.load(args.vectors)
    elif getattr(args, "model", "default") != "default":
        raise VectorFileError(f"--vectors FILE is required for model {args.model!r} (only the "
                              "default model has shipped vectors); build them with "
                              "'emolens extract'")
    else:
        from emolens.extract import default_vectors

        vecs = default_vectors()
    if lm is not None:
        vecs.check_model(lm)
    return vecs


def parse_layer(spec: str | None) -> Any:
    """A --layer value as the read path takes it (None keeps the file's default)."""
    return None if spec in (None, "") else spec


def format_scores(pairs: list[tuple[str, float]]) -> str:
    """``[("calm", 0.1)]`` -> ``"calm +0.100"``.

    >>> format_scores([("calm", 0.1), ("sad", -0.02)])
    'calm +0.100, sad -0.020'
    """
    return ", ".join(f"{e} {s:+.3f}" for e, s in pairs)


def add_generation_args(parser: argparse.ArgumentParser, max_new_tokens: int = 64) -> None:
    """Sampling, steering, alert and guard options (``generate`` and ``chat``)."""
    parser.add_argument("--max-new-tokens", type=positive_int, default=max_new_tokens,
                        metavar="N")
    parser.add_argument("--temperature", type=finite_float(0.0, 100.0), default=0.0, metavar="T",
                        help="0 (default) is greedy")
    parser.add_argument("--top-p", type=finite_float(0.0, 1.0, lo_open=True), default=1.0,
                        metavar="P")
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
                             "repeatable (turns on monitoring)")
    parser.add_argument("--alert-log", type=output_file, default=None, metavar="FILE",
                        help="append every alert to this JSONL file")
    parser.add_argument("--guard", action="append", default=[],
                        metavar="RULE:NAME=STRENGTH[,NAME=STRENGTH]",
                        help="when RULE fires, steer with these vectors for the rest of the "
                             "generation (on generated tokens); repeatable")


def watch_from_args(args: argparse.Namespace, lm: LanguageModel, vecs: EmotionVectors,
                    on_alert: Any = None) -> Watch | None:
    """The alert rules and guards of --alert / --guard / --alert-log, or None without any.

    (--alert-log was checked by argparse: a regular file or a new path in a writable folder.)
    """
    from emolens.alerts import Watch, parse_guard

    if not args.alert and not args.guard:
        return None
    return Watch(lm, vecs, alerts=list(args.alert),
                 guard=[parse_guard(g) for g in args.guard] or None,
                 log_path=args.alert_log, on_alert=on_alert, layers=args.steer_layers)


def describe_alert(alert: Alert) -> str:
    """One line for an alert as the terminal commands print it."""
    return f"[alert] {alert.rule} at token {alert.token_index} ({alert.value:+.3f})"
