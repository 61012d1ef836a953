"""The ``emolens`` command: one subcommand module per job, one error line on bad input.

Bad input of any kind (an argument argparse refuses, or an :class:`EmolensError` raised by
the library) ends with exactly one line ``emolens: error: ...`` on stderr and exit code 2.
While the command runs, the ``emolens`` logger prints its INFO messages to stderr as
``emolens: message``, and the transformers logger is kept to errors (progress bars only on a
terminal); both are restored when :func:`main` returns, so calling it in-process leaves the
caller's logging as it was. Hub downloads follow the user's ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from emolens import __version__
from emolens.cli.common import command_logging
from emolens.errors import EmolensError

#: Modules under emolens.cli that each expose ``register(subparsers)``.
COMMAND_MODULES = ("info", "corpus", "extract", "export", "validate", "report", "probe", "generate",
                   "chat", "serve", "compare")
#: Two-word commands spelled as in the docs, mapped to their parser names.
ALIASES = {("extract", "merge"): "extract-merge"}


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``emolens: error: ...``) and exit 2.

    Subparsers made from it are of the same class, so every subcommand behaves the same.

    >>> p = OneLineParser(prog="emolens demo")
    >>> _ = p.add_argument("--n", type=int)
    >>> try:
    ...     p.parse_args(["--n", "x"])
    ... except SystemExit as exc:
    ...     print("exit", exc.code)
    exit 2
    """

    def error(self, message: str) -> NoReturn:
        """Print one line naming the command and the problem, then exit with code 2."""
        message = " ".join(message.split())
        self.exit(2, f"emolens: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``emolens`` parser with every subcommand registered.

    >>> parser = build_parser()
    >>> parser.parse_args(["info", "--model", "default"]).command
    'info'
    """
    parser = OneLineParser(
        prog="emolens",
        description="Find, monitor and steer emotion concepts inside open language models.",
    )
    parser.add_argument("--version", action="version", version=f"emolens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"emolens.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 a check failed, 2 bad input, 130 Ctrl-C).

    >>> main(["--version"])
    emolens 0.1.0
    0
    >>> main(["info", "--dtype", "float8"])
    2
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if tuple(argv[:2]) in ALIASES:
        argv = [ALIASES[tuple(argv[:2])], *argv[2:]]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line argument error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    with command_logging():
        try:
            return int(args.func(args) or 0)
        except EmolensError as exc:
            print(f"emolens: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("emolens: interrupted", file=sys.stderr)
            return 130


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point: exit the process with :func:`main`'s code.

    >>> try:
    ...     run(["--version"])
    ... except SystemExit as exc:
    ...     print("exit", exc.code)
    emolens 0.1.0
    exit 0
    """
    sys.exit(main(argv))
