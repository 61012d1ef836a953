"""``emolens probe``: per-token emotion scores of a text and a ranking of its emotions.

    emolens probe --text "The dog ran off and I can't find him." --top 5
    emolens probe --file letter.txt --json
    emolens probe --jsonl texts.jsonl --out results.jsonl   # one {"id", "text"} per line

Also home of the options the monitoring commands share (vectors, layer, read-out mode).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emolens.errors import CorpusError, EmolensError, VectorFileError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel
    from emolens.monitor import Readout
    from emolens.vectors import EmotionVectors

MODES = ("cosine", "centered", "projection")  # emolens.monitor.MODES, without importing torch


# ---- shared by probe, generate and chat -----------------------------------------------------
def add_vector_args(parser: argparse.ArgumentParser) -> None:
    """--vectors, --layer, --mode."""
    parser.add_argument("--vectors", default=None, metavar="FILE",
                        help="emotion-vector file (default: the shipped vectors of the "
                             "default model; required for any other model)")
    parser.add_argument("--layer", default=None, metavar="L",
                        help="read-out layer(s): 20, 0.66, '18,20' or '16-20' "
                             "(default: the vector file's recommended layer)")
    parser.add_argument("--mode", choices=MODES, default="cosine",
                        help="cosine (default), centered (cosine after subtracting the "
                             "file's mean training activation) or raw projection")


def load_vectors_from_args(args: argparse.Namespace, lm: LanguageModel) -> EmotionVectors:
    """The --vectors file checked against ``lm``, or the default model's shipped vectors."""
    from emolens.vectors import EmotionVectors

    if args.vectors:
        return EmotionVectors.load(args.vectors, expect_model=lm.fingerprint())
    if args.model != "default":
        raise VectorFileError(f"--vectors FILE is required for model {args.model!r} (only the "
                              "default model has shipped vectors); build them with "
                              "'emolens extract'")
    try:
        from emolens.extract import default_vectors
    except ImportError as exc:
        raise VectorFileError("no default vectors in this emolens build; pass --vectors FILE"
                              ) from exc
    return default_vectors(lm)


def parse_layer(spec: str | None) -> Any:
    """A --layer value as the monitor takes it (None keeps the file's default)."""
    return None if spec in (None, "") else spec


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def format_scores(pairs: list[tuple[str, float]]) -> str:
    return ", ".join(f"{e} {s:+.3f}" for e, s in pairs)


# ---- probe ----------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "probe", help="per-token emotion scores of a text and its emotions ranked",
        description="Read the emotion vectors off the residual stream of a text, token by "
                    "token, and rank the emotions by their mean score over the text.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="the text to read")
    src.add_argument("--file", metavar="F", help="read the text from a file ('-' for stdin)")
    src.add_argument("--jsonl", metavar="FILE",
                     help="batch mode: one {\"id\", \"text\"} object per line; writes one JSON "
                          "result per line (model loaded once)")
    from emolens.cli.common import add_model_args

    add_model_args(p)
    add_vector_args(p)
    p.add_argument("--top", type=int, default=5, metavar="K",
                   help="emotions per token and in the summary (default 5)")
    p.add_argument("--window", type=int, default=1, metavar="W",
                   help="smooth scores over the last W tokens (default 1: no smoothing)")
    p.add_argument("--chat", action="store_true",
                   help="the input is a JSON list of {role, content} messages")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", metavar="FILE", help="with --jsonl: write results here (atomic)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B")
    p.set_defaults(func=run)


def _input_text(args: argparse.Namespace) -> Any:
    if args.text is not None:
        text = args.text
    elif args.file == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except OSError as exc:
            raise EmolensError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    if args.chat:
        return _chat(text, "input")
    if not text.strip():
        raise EmolensError("the text to probe is empty")
    return text


def _chat(value: Any, where: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise EmolensError(f"{where}: --chat expects a JSON list of messages ({exc.msg})"
                               ) from None
    if not (isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in value)):
        raise EmolensError(f"{where}: a chat is a non-empty list of {{role, content}} objects")
    return value


def _read_jsonl(path: str, chat: bool) -> list[tuple[Any, Any]]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path} line {n}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise CorpusError(f"{path} line {n}: expected an object with \"id\" and \"text\"")
        text = obj.get("messages") if chat else obj.get("text")
        if chat:
            text = _chat(text if text is not None else obj.get("text"), f"{path} line {n}")
        elif not isinstance(text, str) or not text.strip():
            raise CorpusError(f"{path} line {n}: \"text\" must be a non-empty string")
        items.append((obj.get("id", n), text))
    if not items:
        raise CorpusError(f"{path} holds no texts")
    return items


def result_json(r: Readout, top: int) -> dict[str, Any]:
    """What --json prints for one text: summary (highest first) plus per-token tops."""
    out = r.to_json(top=top)
    out["emotions"] = len(r.emotions)
    return out


def run(args: argparse.Namespace) -> int:
    from emolens.cli.common import load_model_from_args, print_json
    from emolens.monitor import read, read_many

    if args.top < 1:
        raise EmolensError("--top must be >= 1")
    if args.out and not args.jsonl:
        raise EmolensError("--out goes with --jsonl")
    items = _read_jsonl(args.jsonl, args.chat) if args.jsonl else None
    text = _input_text(args) if items is None else None
    lm = load_model_from_args(args)
    vecs = load_vectors_from_args(args, lm)
    options = dict(layer=parse_layer(args.layer), mode=args.mode, window=args.window)
    if items is not None:
        reads = read_many(lm, [t for _id, t in items], vecs, batch_size=args.batch_size,
                          **options)
        lines = [json.dumps({"id": i, **result_json(r, args.top)}, ensure_ascii=False)
                 for (i, _t), r in zip(items, reads, strict=True)]
        if args.out:
            atomic_write_text(args.out, "".join(line + "\n" for line in lines))
            print(f"wrote {len(lines)} results to {args.out}", file=sys.stderr)
        else:
            sys.stdout.write("".join(line + "\n" for line in lines))
        return 0
    r = read(lm, text, vecs, **options)
    if args.json:
        print_json(result_json(r, args.top))
        return 0
    width = min(24, max(len(repr(t)) for t in r.tokens))
    for t, tok in enumerate(r.tokens):
        order = r.scores[t].argsort()[::-1][:args.top]
        tops = format_scores([(r.emotions[j], float(r.scores[t, j])) for j in order])
        print(f"{t:>4}  {repr(tok)[:width]:<{width}}  {tops}")
    print(f"\nlayer {','.join(map(str, r.layers))}, {r.mode}; mean over {len(r.tokens)} tokens:")
    for rank, (emotion, score) in enumerate(r.summary(args.top), 1):
        print(f"{rank:>3}. {emotion:<16} {score:+.4f}")
    return 0
