"""``emolens export gguf``: a llama.cpp control vector from one emotion (or a contrast)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from emolens.cli.common import finite_float, output_file

if TYPE_CHECKING:  # pragma: no cover
    from emolens.vectors import Direction, EmotionVectors


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``export gguf`` to ``sub``."""
    p = sub.add_parser("export", help="export vectors to other tools' formats")
    fmt = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    g = fmt.add_parser("gguf", help="GGUF control vector for llama.cpp --control-vector")
    g.add_argument("--vectors", default=None, help="vector file (default: the default model's)")
    g.add_argument("--emotion", required=True,
                   help="an emotion, or a contrast such as calm-desperate")
    g.add_argument("--out", required=True, type=output_file, help="output .gguf path")
    g.add_argument("--strength", type=finite_float(-10, 10), default=0.1,
                   help="fraction of the residual scale baked in (llama.cpp scale 1.0 = this)")
    g.add_argument("--layers", default=None, type=_gguf_layers,
                   help="layers to write, e.g. 12 or 10,12,14 (default: the file's "
                   "recommended layer); 'all' writes every layer >= 1")
    g.set_defaults(func=run_gguf)


def _gguf_layers(text: str) -> str:
    """``all`` or comma-separated whole layer numbers (the file checks that it has them).

    >>> _gguf_layers("10, 12")
    '10, 12'
    >>> _gguf_layers("ten")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected 'all' or layer numbers such as 12 or 10,12, got 'ten'
    """
    if text.strip() == "all":
        return text
    try:
        layers = [int(x) for x in text.split(",")]
    except ValueError:
        layers = [-1]
    if not layers or min(layers) < 0:
        raise argparse.ArgumentTypeError(
            f"expected 'all' or layer numbers such as 12 or 10,12, got {text!r}")
    return text


def _direction(vecs: EmotionVectors, spec: str) -> Direction:
    """An emotion, or a contrast ``a-b`` of two (names may themselves contain hyphens)."""
    if spec in vecs:
        return vecs[spec]
    if "-" in spec:
        for cut in [i for i, ch in enumerate(spec) if ch == "-"]:
            a, b = spec[:cut], spec[cut + 1:]
            if a in vecs and b in vecs:
                return vecs[a] - vecs[b]
    return vecs[spec]  # raises with close matches


def run_gguf(args: argparse.Namespace) -> int:
    """Write one emotion (or contrast) as a llama.cpp control vector."""
    from emolens.extract import default_vectors
    from emolens.gguf_io import export_gguf
    from emolens.vectors import EmotionVectors

    vecs = EmotionVectors.load(args.vectors) if args.vectors else default_vectors()
    if args.layers is None:
        layers = [vecs.default_layer]
    elif args.layers.strip() == "all":
        layers = [x for x in vecs.layers if x >= 1]
    else:
        layers = [int(x) for x in args.layers.split(",")]  # checked by _gguf_layers
    path = export_gguf(vecs, _direction(vecs, args.emotion), args.out, layers=layers,
                       strength=args.strength)
    print(f"wrote {path} ({args.emotion}, layers {layers}); use it with "
          f"llama-cli --control-vector {path}")
    return 0
