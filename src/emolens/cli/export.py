"""``emolens export gguf``: a llama.cpp control vector from one emotion (or a contrast)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from emolens.cli.common import finite_float, output_file
from emolens.errors import SteeringError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.vectors import Direction, EmotionVectors


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``export gguf`` to ``sub``."""
    p = sub.add_parser("export", help="export vectors to other tools' formats")
    fmt = p.add_subparsers(dest="format", metavar="FORMAT")
    g = fmt.add_parser("gguf", help="GGUF control vector for llama.cpp --control-vector")
    g.add_argument("--vectors", default=None, help="vector file (default: the default model's)")
    g.add_argument("--emotion", required=True,
                   help="an emotion, or a contrast such as calm-desperate")
    g.add_argument("--out", required=True, type=output_file, help="output .gguf path")
    g.add_argument("--strength", type=finite_float(-10, 10), default=0.1,
                   help="fraction of the residual scale baked in (llama.cpp scale 1.0 = this)")
    g.add_argument("--layers", default=None, help="layers to write (default: the file's "
                   "recommended layer); 'all' writes every layer >= 1")
    g.set_defaults(func=run_gguf)


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
    elif args.layers == "all":
        layers = [x for x in vecs.layers if x >= 1]
    else:
        try:
            layers = [int(x) for x in args.layers.split(",")]
        except ValueError:
            raise SteeringError(f"cannot read --layers {args.layers!r}") from None
    path = export_gguf(vecs, _direction(vecs, args.emotion), args.out, layers=layers,
                       strength=args.strength)
    print(f"wrote {path} ({args.emotion}, layers {layers}); use it with "
          f"llama-cli --control-vector {path}")
    return 0
