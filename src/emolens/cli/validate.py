"""``emolens validate NAME``: any analysis of the registry, on any model.

    emolens validate scenarios                      # default model, shipped vectors
    emolens validate all --out results/ --json      # every analysis, figures as PNG
    emolens validate intensity --model Qwen/Qwen2.5-0.5B-Instruct --vectors qwen.safetensors
    emolens validate logit-lens --k 10              # an analysis's own options
    emolens validate steering --help                # what they are

The analyses, their help and their options come from :mod:`emolens.experiments` (the
registry), so a new analysis appears here without touching this file. The registry is
imported only when ``validate`` runs or shows its help: other commands start without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emolens.cli.common import (
    add_model_args,
    layer_spec,
    load_model_from_args,
    output_dir,
    positive_int,
    print_json,
    seed_arg,
)

if TYPE_CHECKING:  # pragma: no cover
    from emolens.experiments import Analysis, Option

logger = logging.getLogger(__name__)

_SUMMARY = ("any analysis of the study (held-out accuracy, logit lens, scenarios, intensity, "
            "steering, geometry, speakers, ...); see: emolens validate --help")


def _add_common(p: argparse.ArgumentParser) -> None:
    """The options every analysis shares (model, vectors, layer, corpus, output)."""
    add_model_args(p)
    g = p.add_argument_group("inputs and output")
    g.add_argument("--vectors", default=None, metavar="FILE",
                   help="vector file (default: the shipped vectors of the default model)")
    g.add_argument("--layer", default=None, type=layer_spec,
                   help="layer to read and steer (int, depth fraction or "
                        "blocks.N.hook_resid_post; default: the file's)")
    g.add_argument("--corpus", default="default",
                   help="corpus with held-out stories and dialogues (default: shipped)")
    g.add_argument("--seed", type=seed_arg, default=0,
                   help="seed for random controls (default 0)")
    g.add_argument("--batch-size", type=positive_int, default=16,
                   help="texts per forward (default 16)")
    g.add_argument("--json", action="store_true", help="machine-readable output")
    g.add_argument("--out", default=None, type=output_dir,
                   help="folder for figures (PNG) and results (JSON)")


class _FullHelp(argparse.Action):
    """``validate --help``: the help of the full parser, built from the registry."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        build_parser(parser.prog, type(parser)).print_help()
        parser.exit()


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``validate``: common options here, ``NAME [its options]`` parsed by
    :func:`build_parser` when the command runs (so other commands never import the registry).
    """
    p = sub.add_parser("validate", help=_SUMMARY, add_help=False,
                       usage="%(prog)s [-h] ANALYSIS [options]")
    p.add_argument("-h", "--help", action=_FullHelp, help="show the analyses and options")
    _add_common(p)
    p.add_argument("argv", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _shown(d: Any) -> str:
    return ",".join(map(str, d)) if isinstance(d, (tuple, list)) else str(d)


def _help(o: Option) -> str:
    return f"{o.help} (default: {_shown(o.default)})"


#: Analysis options whose values are steering strengths (bounded as --steer is).
_STRENGTH_WORD = "strength"


def _check_value(o: Option, value: Any) -> None:
    """The checks every option of a kind gets where it is parsed, whatever the analysis:
    numbers are finite; a whole-number option whose default is >= 1 is a count (>= 1), one
    whose default is 0 is >= 0; temperatures are >= 0; strengths within the library's bound.
    """
    from emolens.steer import MAX_STRENGTH

    values = list(value) if isinstance(value, (tuple, list)) else [value]
    default = o.default[0] if isinstance(o.default, (tuple, list)) and o.default else o.default
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not math.isfinite(v):
            raise ValueError(f"expected a finite number, got {v}")
        if isinstance(v, int) and isinstance(default, int) and not isinstance(default, bool):
            least = 1 if default >= 1 else 0 if default == 0 else None
            if least is not None and v < least:
                raise ValueError(f"expected a whole number >= {least}, got {v}")
        if "temperature" in o.name and v < 0:
            raise ValueError(f"expected a temperature >= 0 (0 is greedy), got {v:g}")
        if _STRENGTH_WORD in o.name and abs(v) > MAX_STRENGTH:
            raise ValueError(f"expected strengths within ±{MAX_STRENGTH:g} (a fraction of the "
                             f"residual norm), got {v:g}")


def _arg_type(o: Option) -> Any:
    def parse(text: str) -> Any:
        try:
            value = o.parse(text)  # type: ignore[misc]
            _check_value(o, value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    parse.__name__ = o.name
    return parse


def _add_option(group: Any, o: Option, seen: dict[str, Option], text: str | None = None
                ) -> None:
    if o.name in seen:  # "all": one flag for options of the same name
        return
    seen[o.name] = o
    if isinstance(o.default, bool):
        group.add_argument(o.flag, dest=o.name, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=text or _help(o))
    else:
        group.add_argument(o.flag, dest=o.name, type=_arg_type(o), choices=o.choices,
                           default=argparse.SUPPRESS, help=text or _help(o))


def _suppress_defaults(p: argparse.ArgumentParser) -> None:
    """Options left out set nothing, so values parsed earlier (before NAME) survive."""
    for action in p._actions:
        if action.dest not in ("help", "analysis"):
            action.default = argparse.SUPPRESS


def build_parser(prog: str = "emolens validate",
                 parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser
                 ) -> argparse.ArgumentParser:
    """The full ``validate`` parser: one subcommand per registered analysis (its options
    with their defaults and help), plus ``all``. Common options may come before or after
    the name; an analysis option left out keeps the analysis's own default.

    >>> p = build_parser()
    >>> ns = p.parse_args(["logit-lens", "--k", "3"])
    >>> ns.analysis, ns.k
    ('logit-lens', 3)
    """
    from emolens.experiments import analyses

    p = parser_class(prog=prog, usage="%(prog)s ANALYSIS [options]",
                     description="Run one analysis of the study (or all of them) and print "
                                 "its summary, or its numbers with --json. Each analysis has "
                                 "its own options: emolens validate ANALYSIS --help.")
    subs = p.add_subparsers(dest="analysis", metavar="ANALYSIS", title="analyses",
                            required=True)
    every: dict[str, Option] = {}
    for a in analyses():
        sp = subs.add_parser(a.name, aliases=list(a.aliases), prog=f"{prog} {a.name}",
                             help=f"{a.title} (study section {a.section})",
                             description=f"{a.title} (study section {a.section}). "
                                         f"{a.description}")
        _add_common(sp)
        _suppress_defaults(sp)
        if a.options:
            group = sp.add_argument_group(f"options of {a.name}")
            for o in a.options:
                _add_option(group, o, {})
        sp.set_defaults(analysis=a.name)
    allp = subs.add_parser("all", prog=f"{prog} all",
                           help="every analysis above, one after another",
                           description="Every analysis of the registry, one after another; "
                                       "each option applies to the analyses that have it.")
    _add_common(allp)
    _suppress_defaults(allp)
    group = allp.add_argument_group("options of the analyses (each applies to every "
                                    "analysis that has it)")
    owners: dict[str, list[str]] = {}
    for a in analyses():
        for o in a.options:
            owners.setdefault(o.name, []).append(f"{a.name}: {_shown(o.default)}")
    for a in analyses():
        for o in a.options:
            shared = len(owners[o.name]) > 1  # one flag, several analyses: whose default?
            _add_option(group, o, every, f"{o.help.split(' for ')[0]}; defaults "
                        f"{'; '.join(owners[o.name])}" if shared else None)
    allp.set_defaults(analysis="all")
    _add_common(p)  # after the analyses, so --help lists them first
    _suppress_defaults(p)
    return p


def _options_for(a: Analysis, ns: argparse.Namespace) -> dict[str, Any]:
    return {o.name: getattr(ns, o.name) for o in a.options if hasattr(ns, o.name)}


def _save(result: Any, out_dir: Path, name: str, data: dict[str, Any]) -> list[Path]:
    """``NAME.png`` for the main figure, ``NAME-FIG.png`` for others, ``NAME.json``, and
    ``NAME-records.jsonl`` when the result has rows to audit (graded replies)."""
    from emolens.fileio import write_jsonl_atomic, write_text_atomic
    from emolens.report.figures import figures_of
    from emolens.report.plots import save_png

    paths = []
    for fig_name, fig in figures_of(result).items():
        stem = name if fig_name == "main" else f"{name}-{fig_name}"
        paths.append(save_png(fig, out_dir / f"{stem}.png"))
    write_text_atomic(out_dir / f"{name}.json",
                      json.dumps(data, indent=2, allow_nan=False) + "\n")
    if rows := result.records():
        write_jsonl_atomic(out_dir / f"{name}-records.jsonl", rows)
    return paths


def run(args: argparse.Namespace) -> int:
    """Parse ``NAME [options]`` against the registry, run, print or write the results."""
    from emolens.cli import OneLineParser
    from emolens.cli.options import load_vectors_from_args, parse_layer
    from emolens.experiments import Context, analyses, get

    rest = vars(args).pop("argv", None) or []
    try:
        ns = build_parser("emolens validate", OneLineParser).parse_args(rest, namespace=args)
    except SystemExit as exc:  # NAME --help, or a one-line argument error (already printed)
        return exc.code if isinstance(exc.code, int) else 0
    chosen = analyses() if ns.analysis == "all" else [get(ns.analysis)]
    lm = load_model_from_args(ns) if any(a.needs_model for a in chosen) else None
    vectors = load_vectors_from_args(ns, lm)
    corpus = None
    if any(a.needs_corpus for a in chosen):
        from emolens.corpus import load_corpus

        corpus = load_corpus(ns.corpus)
    ctx = Context(lm, vectors, corpus, parse_layer(ns.layer), seed=ns.seed,
                  batch_size=ns.batch_size)
    out_dir = Path(ns.out) if ns.out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for a in chosen:
        started = time.perf_counter()
        logger.info("running %s ...", a.name)
        res = a.execute(ctx, _options_for(a, ns))
        data = res.to_json()
        data["seconds"] = round(time.perf_counter() - started, 2)
        results[a.name] = data
        pngs = _save(res, out_dir, a.name, data) if out_dir is not None else []
        if not ns.json:
            print(res.summary())
            where = f"; figures {', '.join(map(str, pngs))}" if pngs else ""
            print(f"  ({data['seconds']:.1f} s{where})\n", flush=True)
    if ns.json:
        print_json(results if ns.analysis == "all" else results[chosen[0].name])
    return 0
