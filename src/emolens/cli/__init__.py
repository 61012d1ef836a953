"""The ``emolens`` command: one subcommand module per job, one error line on bad input."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from emolens import __version__
from emolens.errors import EmolensError

#: Modules under emolens.cli that each expose ``register(subparsers)``.
COMMAND_MODULES = ("info", "corpus", "extract", "export", "validate", "report", "probe", "generate",
                   "chat")
#: Two-word commands spelled as in the docs, mapped to their parser names.
ALIASES = {("extract", "merge"): "extract-merge"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emolens",
        description="Find, monitor and steer emotion concepts inside open language models.",
    )
    parser.add_argument("--version", action="version", version=f"emolens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"emolens.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 a check failed, 2 bad input)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # emolens never downloads weights
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if tuple(argv[:2]) in ALIASES:
        argv = [ALIASES[tuple(argv[:2])], *argv[2:]]
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EmolensError as exc:
        print(f"emolens: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emolens: interrupted", file=sys.stderr)
        return 130


def run() -> None:  # pragma: no cover - console entry point
    sys.exit(main())
