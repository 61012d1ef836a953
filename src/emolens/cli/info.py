"""``emolens info``: what a model is and where its weights came from."""

from __future__ import annotations

import argparse

from emolens.cli.common import add_model_args, load_model_from_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="architecture, layers, hidden size, dtype, weight source")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    lm = load_model_from_args(args)
    info = lm.info()
    info["load_seconds"] = round(getattr(lm, "load_seconds", 0.0), 2)
    if args.json:
        print_json(info)
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0
