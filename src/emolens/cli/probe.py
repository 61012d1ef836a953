"""``emolens probe``: per-token emotion scores of a text and a ranking of its emotions.

    emolens probe --text "The dog ran off and I can't find him." --top 5
    emolens probe --file letter.txt --json
    emolens probe --jsonl texts.jsonl --out results.jsonl   # {"id", "text"} or {"id", "messages"}
    emolens probe --jsonl chats.jsonl --at assistant_start --json

The summary ranks the pooled read-out (the same numbers validation scores); ``--at
assistant_start`` ranks the emotions at the last token of the generation prompt instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from emolens.cli.common import output_file, read_text, text_arg
from emolens.cli.options import (
    add_vector_args,
    format_scores,
    load_vectors_from_args,
    parse_layer,
    positive_int,
)
from emolens.errors import CorpusError, EmolensError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.readout import Readout

AT = ("pooled", "assistant_start")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "probe", help="per-token emotion scores of a text and its emotions ranked",
        description="Read the emotion vectors off the residual stream of a text, token by "
                    "token, and rank the emotions by the text's pooled read-out.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", type=text_arg, help="the text to read")
    src.add_argument("--file", metavar="F", help="read the text from a file ('-' for stdin)")
    src.add_argument("--jsonl", metavar="FILE",
                     help="batch mode: one {\"id\", \"text\"} or {\"id\", \"messages\"} object "
                          "per line; one JSON result per line, ids in order")
    from emolens.cli.common import add_model_args

    add_model_args(p)
    add_vector_args(p)
    p.add_argument("--top", type=positive_int, default=5, metavar="K",
                   help="emotions per token and in the summary (default 5)")
    p.add_argument("--window", type=positive_int, default=1, metavar="W",
                   help="smooth per-token scores over the last W tokens (default 1: none)")
    p.add_argument("--chat", action="store_true",
                   help="the input is a JSON list of {role, content} messages")
    p.add_argument("--at", choices=AT, default="pooled",
                   help="rank the text's pooled read-out (default) or the read-out at "
                        "assistant_start (chats, read with the generation prompt added)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", metavar="FILE", type=output_file,
                   help="with --jsonl: write results here (atomic)")
    p.add_argument("--batch-size", type=positive_int, default=8, metavar="B")
    p.set_defaults(func=run)


def _input_text(args: argparse.Namespace) -> Any:
    text = args.text if args.text is not None else read_text(args.file)
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
            raise EmolensError(f"{where}: a chat must be a JSON list of messages ({exc.msg})"
                               ) from None
    if not (isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in value)):
        raise EmolensError(f"{where}: a chat is a non-empty list of {{role, content}} objects")
    return value


def read_jsonl(path: str, chat: bool = False) -> list[tuple[Any, Any]]:
    """``(id, text or chat)`` per line of a JSONL file; line numbers name every error."""
    return [(i, value) for _n, i, value in read_jsonl_lines(path, chat)]


def read_jsonl_lines(path: str, chat: bool = False) -> list[tuple[int, Any, Any]]:
    """``(line number, id, text or chat)`` per non-blank line of a JSONL file."""
    lines = read_text(path).splitlines()
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path} line {n}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise CorpusError(f"{path} line {n}: expected an object with \"id\" and \"text\" "
                              "or \"messages\"")
        if "messages" in obj or chat:
            value = _chat(obj.get("messages", obj.get("text")), f"{path} line {n}")
        else:
            value = obj.get("text")
            if not isinstance(value, str) or not value.strip():
                raise CorpusError(f"{path} line {n}: \"text\" must be a non-empty string")
        items.append((n, obj.get("id", n), value))
    if not items:
        raise CorpusError(f"{path} holds no texts")
    return items


def _check_lengths(lm: Any, path: str, lines: list[tuple[int, Any, Any]], prompt: bool
                   ) -> None:
    """Refuse, naming the line, a --jsonl text longer than the model's context (before any
    text is read, so a long file is not read half way and then dropped)."""
    for n, _id, value in lines:
        try:
            lm.encode_input(value, add_generation_prompt=prompt)
        except EmolensError as exc:
            raise EmolensError(f"{path} line {n}: {exc}") from None


def result_json(r: Readout, top: int, at: str = "pooled") -> dict[str, Any]:
    """What --json prints for one text: summary (highest first) plus per-token tops."""
    position = None
    if at == "assistant_start":
        if r.assistant_start is None:
            raise EmolensError("--at assistant_start needs chats (a text has no assistant turn)")
        position = r.assistant_start
    out = r.to_json(top=top, at=position)
    out["emotions"] = len(r.emotions)
    return out


def run(args: argparse.Namespace) -> int:
    from emolens.cli.common import load_model_from_args, print_json
    from emolens.fileio import write_text_atomic

    if args.out and not args.jsonl:
        raise EmolensError("--out goes with --jsonl")
    lines = read_jsonl_lines(args.jsonl, args.chat) if args.jsonl else None
    items = [(i, value) for _n, i, value in lines] if lines is not None else None
    text = _input_text(args) if items is None else None
    if args.at == "assistant_start" and items is None and not args.chat:
        raise EmolensError("--at assistant_start needs a chat (--chat or --jsonl with messages)")
    lm = load_model_from_args(args)
    vecs = load_vectors_from_args(args, lm)
    if lines is not None:
        _check_lengths(lm, args.jsonl, lines, args.at == "assistant_start")
    options = dict(layer=parse_layer(args.layer), mode=args.mode, window=args.window,
                   add_generation_prompt=args.at == "assistant_start")
    if items is not None:
        from tqdm import tqdm

        with tqdm(total=len(items), desc="probe", unit="text", file=sys.stderr,
                  disable=not sys.stderr.isatty()) as bar:
            reads = lm.monitor_many([t for _id, t in items], vecs, batch_size=args.batch_size,
                                    progress=bar.update, **options)
        lines = [json.dumps({"id": i, **result_json(r, args.top, args.at)}, ensure_ascii=False)
                 for (i, _t), r in zip(items, reads, strict=True)]
        if args.out:
            write_text_atomic(args.out, "".join(line + "\n" for line in lines))
            print(f"wrote {len(lines)} results to {args.out}", file=sys.stderr)
        else:
            sys.stdout.write("".join(line + "\n" for line in lines))
        return 0
    r = lm.monitor(text, vecs, **options)
    if args.json:
        print_json(result_json(r, args.top, args.at))
        return 0
    width = min(24, max(len(repr(t)) for t in r.tokens))
    for t, tok in enumerate(r.tokens):
        order = r.scores[t].argsort()[::-1][:args.top]
        tops = format_scores([(r.emotions[j], float(r.scores[t, j])) for j in order])
        mark = "  <- assistant_start" if t == r.assistant_start else ""
        print(f"{t:>4}  {repr(tok)[:width]:<{width}}  {tops}{mark}")
    layers = ",".join(map(str, r.layers))
    if args.at == "assistant_start":
        print(f"\nlayer {layers}, {r.mode}; at assistant_start (token {r.assistant_start}):")
        ranked = r.ranked_at(r.assistant_start, args.top)
    else:
        print(f"\nlayer {layers}, {r.mode}; pooled over tokens {r.pool_start}.."
              f"{len(r.tokens) - 1}:")
        ranked = r.summary(args.top)
    for rank, (emotion, score) in enumerate(ranked, 1):
        print(f"{rank:>3}. {emotion:<16} {score:+.4f}")
    return 0
