"""``emolens serve``: the local web app (chat, steering, alarms, reading texts) and its API.

    emolens serve                                 # the default model, http://127.0.0.1:8765
    emolens serve --model path/to/model --vectors model.emotions.safetensors --report out/

Binds to 127.0.0.1 unless ``--host`` says otherwise; any other address is announced
with a warning, since the server has no authentication.  Needs the ``serve`` extra
(``pip install 'emolens[serve]'``).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
from typing import Any

from emolens.cli.common import add_model_args, nonneg_int, positive_int
from emolens.cli.options import add_vector_args
from emolens.errors import EmolensError

logger = logging.getLogger("emolens")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("::1")
    (True, True, True)
    >>> is_loopback("0.0.0.0"), is_loopback("192.168.1.5"), is_loopback("example.org")
    (False, False, False)
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def port_number(text: str) -> int:
    """A TCP port, 1..65535.

    >>> port_number("8765")
    8765
    >>> port_number("70000")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a port number 1..65535, got '70000'
    """
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}")
    return port


def register(subparsers: Any) -> None:
    """Add ``serve`` to the CLI."""
    p = subparsers.add_parser(
        "serve", help="local web app: chat, steer, set alarms, read texts (and an API)",
        description="Start the emolens web app on this machine: a chat whose every token is "
                    "coloured by its emotions, steering sliders, alert rules and guards, a "
                    "text reader, the JSON/SSE API and an OpenAI-compatible endpoint "
                    "(/v1/chat/completions). Needs the serve extra: pip install "
                    "'emolens[serve]'.")
    add_model_args(p)
    add_vector_args(p)
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default {DEFAULT_HOST}: this machine only; any "
                        "other address lets others use the model, with no authentication)")
    p.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="an 'emolens report' folder to serve under /report/")
    p.add_argument("--max-new-tokens", type=positive_int, default=512, metavar="N",
                   help="longest reply a request may ask for (default 512)")
    p.add_argument("--queue", type=nonneg_int, default=4, metavar="N",
                   help="requests that may wait while one runs; more get 503 (default 4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model and vectors, then serve until interrupted."""
    try:
        import uvicorn

        from emolens.server import Limits, create_app
    except ImportError as exc:
        raise EmolensError(f"emolens serve needs the serve extra ({exc.name} is missing): "
                           "pip install 'emolens[serve]'") from None
    from emolens.cli.common import load_model_from_args
    from emolens.cli.options import load_vectors_from_args, parse_layer

    if args.report is not None:
        from pathlib import Path

        if not Path(args.report).is_dir():
            raise EmolensError(f"--report {args.report!r} is not a folder (make one with "
                               "'emolens report')")
    if not is_loopback(args.host):
        logger.warning("serving on %s: anyone who can reach this address can use the model "
                       "and read what it is sent (there is no authentication)", args.host)
    lm = load_model_from_args(args)
    vecs = load_vectors_from_args(args, lm)
    app = create_app(lm, vecs, report_dir=args.report,
                     limits=Limits(max_new_tokens=args.max_new_tokens, max_queue=args.queue),
                     layer=parse_layer(args.layer), mode=args.mode)
    host = f"[{args.host}]" if ":" in args.host else args.host
    logger.info("emolens is serving %s on http://%s:%d (Ctrl-C stops)", lm.name, host,
                args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
