"""Options the reading and generating commands share: vectors, read-out, sampling, alerts.

One vector loader for every command (the model check happens in the library, so a file
made for another model fails the same way everywhere), one set of sampling options, and
the alert / guard options turned into the library's :class:`emolens.alerts.Watch`.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from emolens.cli.common import (
    finite_float,
    layer_spec,
    output_file,
    positive_int,
    seed_arg,
)
from emolens.errors import EmolensError, VectorFileError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.alerts import Alert, Watch
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

#: emolens.readout.MODES, without importing torch for ``--help``.
MODES = ("auto", "cosine", "centered", "projection")
POSITIONS = ("all", "prompt", "generated", "assistant_start")


def add_vector_args(parser: argparse.ArgumentParser) -> None:
    """--vectors, --layer, --readout (alias --mode)."""
    parser.add_argument("--vectors", default=None, metavar="FILE",
                        help="emotion-vector file (default: the shipped vectors of the "
                             "default model; required for any other model)")
    parser.add_argument("--layer", default=None, metavar="L", type=layer_spec,
                        help="read-out layer(s): 20, 0.66, '18,20', '16-20' or "
                             "blocks.20.hook_resid_post (default: the file's recommended layer)")
    parser.add_argument("--readout", "--mode", dest="mode", choices=MODES, default="auto",
                        help="how activations are scored: auto (default: tokens centered, "
                             "in the study's units; a whole text's summary through the file's "
                             "lda head when it has one), cosine, centered, raw projection, or "
                             "lda (the calibrated read-out head, for tokens too)")


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


def steer_spec(text: str) -> str:
    """``--steer NAME=STRENGTH``: a name and a finite strength within the library's bound
    (:data:`emolens.steer.MAX_STRENGTH`, 10 times the residual norm). Returns the text.

    >>> steer_spec("calm=0.1")
    'calm=0.1'
    >>> steer_spec("calm=1e300")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: steering strength for 'calm' must be a finite number within ±10...
    """
    from emolens.steer import MAX_STRENGTH, parse_strengths

    try:
        strengths = parse_strengths([text])
    except EmolensError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    for name, value in strengths.items():
        if not math.isfinite(value) or abs(value) > MAX_STRENGTH:
            raise argparse.ArgumentTypeError(
                f"steering strength for {name!r} must be a finite number within "
                f"±{MAX_STRENGTH:g} (a fraction of the residual norm; 0.05 gentle, 0.5 "
                f"strong), got {text.rpartition('=')[2].strip()!r}")
    return text


def alert_spec(text: str) -> str:
    """``--alert EMOTION>THRESHOLD[@WINDOW]`` (``&`` joins rules): checked by the library's
    parser where it is given (a NaN threshold or a window of 0 is refused). Returns the text.

    >>> alert_spec("desperate>0.05@4 & calm<0")
    'desperate>0.05@4 & calm<0'
    >>> alert_spec("calm>nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: alert threshold must be a finite number, got nan
    """
    from emolens.alerts import parse_rule

    try:
        parse_rule(text)
    except EmolensError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def guard_spec(text: str) -> str:
    """``--guard RULE:NAME=STRENGTH[,NAME=STRENGTH]``: the rule and each strength checked as
    ``--alert`` and ``--steer`` check theirs. Returns the text.

    >>> guard_spec("desperate>0.05@4:calm=0.2")
    'desperate>0.05@4:calm=0.2'
    >>> guard_spec("desperate>0.05:calm=inf")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: steering strength for 'calm' must be a finite number...
    """
    from emolens.alerts import parse_guard

    try:
        guard = parse_guard(text)
    except EmolensError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    for name, value in guard.strengths.items():
        steer_spec(f"{name}={value!r}")
    return text


def add_generation_args(parser: argparse.ArgumentParser, max_new_tokens: int = 64) -> None:
    """Sampling, steering, alert and guard options (``generate`` and ``chat``)."""
    parser.add_argument("--max-new-tokens", type=positive_int, default=max_new_tokens,
                        metavar="N")
    parser.add_argument("--temperature", type=finite_float(0.0, 100.0), default=0.0, metavar="T",
                        help="0 (default) is greedy")
    parser.add_argument("--top-p", type=finite_float(0.0, 1.0, lo_open=True), default=1.0,
                        metavar="P")
    parser.add_argument("--seed", type=seed_arg, default=None, metavar="S")
    parser.add_argument("--steer", action="append", default=[], metavar="NAME=STRENGTH",
                        type=steer_spec,
                        help="add an emotion vector (strength: fraction of the layer's "
                             "residual norm; 0.05 gentle, 0.5 strong); repeatable")
    parser.add_argument("--steer-layers", default=None, metavar="L", type=layer_spec,
                        help="layer(s) to steer at (default: the vector file's default layer)")
    parser.add_argument("--positions", choices=POSITIONS, default="all",
                        help="which tokens --steer acts on (default: all)")
    parser.add_argument("--alert", action="append", default=[], metavar="RULE", type=alert_spec,
                        help="EMOTION>THRESHOLD[@WINDOW] (or <); join with & for AND; "
                             "repeatable (turns on monitoring)")
    parser.add_argument("--alert-log", type=output_file, default=None, metavar="FILE",
                        help="append every alert to this JSONL file")
    parser.add_argument("--guard", action="append", default=[], type=guard_spec,
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
