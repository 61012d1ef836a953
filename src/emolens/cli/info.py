"""``emolens info``: what a model is and where its weights came from."""

from __future__ import annotations

import argparse

from emolens.cli.common import add_model_args, load_model_from_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``info`` subcommand to ``sub``.

    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="emolens")
    >>> register(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["info", "--json", "--device", "cpu"])
    >>> args.json, args.device, args.dtype
    (True, 'cpu', 'auto')
    """
    p = sub.add_parser("info", help="architecture, layers, hidden size, dtype, weight source")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model and print its summary (``--json``: one JSON object).

    >>> import argparse, contextlib, io, json, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> lm.model.save_pretrained(tmp.name)
    >>> _ = lm.tokenizer.save_pretrained(tmp.name)
    >>> out = io.StringIO()
    >>> with contextlib.redirect_stdout(out):
    ...     code = run(argparse.Namespace(model=tmp.name, device="cpu", json=True))
    >>> info = json.loads(out.getvalue())
    >>> code, info["n_layers"], info["hidden_size"], info["dtype"], info["revision"]
    (0, 4, 32, 'float32', None)
    >>> tmp.cleanup()
    """
    lm = load_model_from_args(args)
    info = lm.info()
    info["revision"] = getattr(lm, "revision", None)
    info["load_seconds"] = round(getattr(lm, "load_seconds", 0.0), 2)
    if args.json:
        print_json(info)
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0
