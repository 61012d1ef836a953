"""Check the register texts of part B (emotions 86..170) of the broader training corpus.

Usage:  python scripts/check_register_texts_b.py [FILE ...] [--complete] [--quiet]

FILE defaults to src/emolens/concepts/data/registers/part_b.jsonl. Each line is
{"emotion", "topic", "register", "text"}. Errors (exit status 1):

* unknown emotion, register or topic; missing fields;
* the text names its own emotion (any word form); fewer than 15 or more than 120 words;
  no final punctuation; a title or preamble line; a line break inside the text;
* a near duplicate (5-gram shingle Jaccard >= 0.6) of another text of the same emotion,
  the curated stories included; an exact duplicate;
* an emotion using the same topic twice.

With --complete, each emotion present must also have 24 texts, 4 per register and 8 per
length class (15-30, 31-70, 71-120 words). Warnings (not errors): words naming one of the
other 170 emotions, and the spread of topics over the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from emolens.concepts.emotions import EMOTIONS, find_emotion_words
from emolens.concepts.topics import TOPICS
from emolens.corpus.textcheck import (
    _PREAMBLE_RE,
    _TITLE_RE,
    MIN_WORDS,
    NEAR_DUP_JACCARD,
    count_words,
    has_final_punctuation,
    jaccard,
    normalise_text,
    shingles,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "emolens" / "concepts" / "data"
DEFAULT = DATA / "registers" / "part_b.jsonl"
REGISTERS = ("diary", "dialogue", "social", "letter", "chat", "narration")
MINE = EMOTIONS[86:]
MAX_WORDS = 120


def length_class(n_words: int) -> str:
    """'short' (15-30 words), 'medium' (31-70) or 'long' (71-120)."""
    if n_words <= 30:
        return "short"
    if n_words <= 70:
        return "medium"
    return "long"


def load_jsonl(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                rec = json.loads(line)
                rec["_where"] = f"{path.name}:{i}"
                out.append(rec)
    return out


def story_texts() -> dict[str, list[str]]:
    """The curated stories' texts by emotion."""
    by_emotion: dict[str, list[str]] = defaultdict(list)
    for path in sorted((DATA / "stories").glob("part_*.jsonl")):
        for rec in load_jsonl(path):
            by_emotion[rec["emotion"]].append(rec["text"])
    return by_emotion


def check_records(records: list[dict], complete: bool = False,
                  emotions: tuple[str, ...] = MINE) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a list of register records."""
    errors: list[str] = []
    warnings: list[str] = []
    wanted = set(emotions)
    for r in records:
        where = r.get("_where", "?")
        missing = {"emotion", "topic", "register", "text"} - set(r)
        if missing:
            errors.append(f"{where}: missing {sorted(missing)}")
            continue
        e, text = r["emotion"], r["text"]
        if e not in wanted:
            errors.append(f"{where}: emotion {e!r} is not in this part")
            continue
        if r["register"] not in REGISTERS:
            errors.append(f"{where}: register {r['register']!r}")
        if not isinstance(r["topic"], int) or not 0 <= r["topic"] < len(TOPICS):
            errors.append(f"{where}: topic {r['topic']!r}")
        own = find_emotion_words(text, [e])
        if own:
            errors.append(f"{where} [{e}]: names its emotion: {[m.matched for m in own]}")
        others = [m for m in find_emotion_words(text) if m.emotion != e]
        if others:
            warnings.append(f"{where} [{e}]: other emotion words "
                            f"{[f'{m.matched}({m.emotion})' for m in others]}")
        n = count_words(text)
        if n < MIN_WORDS or n > MAX_WORDS:
            errors.append(f"{where} [{e}]: {n} words")
        if not has_final_punctuation(text):
            errors.append(f"{where} [{e}]: no final punctuation")
        if "\n" in text:
            errors.append(f"{where} [{e}]: line break in text")
        first = text.strip().splitlines()[0] if text.strip() else ""
        if _PREAMBLE_RE.match(first) or _TITLE_RE.match(first):
            errors.append(f"{where} [{e}]: title or preamble: {first[:60]!r}")
    # duplicates within each emotion, stories included
    stories = story_texts()
    by_emotion: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("emotion") in wanted and "text" in r:
            by_emotion[r["emotion"]].append(r)
    seen_exact: dict[str, str] = {}
    for r in records:
        key = normalise_text(r.get("text", ""))
        if key in seen_exact:
            errors.append(f"{r['_where']}: exact duplicate of {seen_exact[key]}")
        else:
            seen_exact[key] = r.get("_where", "?")
    for e, recs in by_emotion.items():
        sh = [shingles(r["text"]) for r in recs]
        st = [shingles(t) for t in stories.get(e, [])]
        for i, r in enumerate(recs):
            for j in range(i):
                jac = jaccard(sh[i], sh[j])
                if jac >= NEAR_DUP_JACCARD:
                    errors.append(f"{r['_where']} [{e}]: near duplicate of "
                                  f"{recs[j]['_where']} ({jac:.2f})")
            for k, s in enumerate(st):
                jac = jaccard(sh[i], s)
                if jac >= NEAR_DUP_JACCARD:
                    errors.append(f"{r['_where']} [{e}]: near duplicate of story #{k} "
                                  f"({jac:.2f})")
        topics = Counter(r["topic"] for r in recs)
        doubled = sorted(t for t, c in topics.items() if c > 1)
        if doubled:
            errors.append(f"[{e}]: topics used twice: {doubled}")
        if complete:
            regs = Counter(r["register"] for r in recs)
            lens = Counter(length_class(count_words(r["text"])) for r in recs)
            if len(recs) != 24:
                errors.append(f"[{e}]: {len(recs)} texts, not 24")
            if any(regs[g] != 4 for g in REGISTERS):
                errors.append(f"[{e}]: registers {dict(regs)}")
            if any(lens[c] != 8 for c in ("short", "medium", "long")):
                errors.append(f"[{e}]: length classes {dict(lens)}")
    topic_counts = Counter(r.get("topic") for r in records)
    if records:
        lo, hi = min(topic_counts.get(t, 0) for t in range(len(TOPICS))), max(
            topic_counts.values())
        if hi - lo > 3:
            warnings.append(f"topic spread uneven: min {lo}, max {hi}")
    return errors, warnings


def summary(records: list[dict]) -> str:
    regs = Counter(r["register"] for r in records)
    lens = Counter(length_class(count_words(r["text"])) for r in records)
    topics = Counter(r["topic"] for r in records)
    emos = Counter(r["emotion"] for r in records)
    lo = min(topics.get(t, 0) for t in range(len(TOPICS))) if records else 0
    return (f"texts: {len(records)}  emotions: {len(emos)}\n"
            f"registers: {dict(sorted(regs.items()))}\n"
            f"lengths: {dict(sorted(lens.items()))}\n"
            f"topics used: {len(topics)}/100, per topic min {lo} max "
            f"{max(topics.values()) if topics else 0}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path, default=[DEFAULT])
    ap.add_argument("--complete", action="store_true",
                    help="require 24 texts per emotion, 4 per register, 8 per length class")
    ap.add_argument("--quiet", action="store_true", help="do not list warnings")
    args = ap.parse_args(argv)
    records = [r for f in args.files for r in load_jsonl(f)]
    errors, warnings = check_records(records, complete=args.complete)
    print(summary(records))
    if not args.quiet:
        for w in warnings:
            print("warning:", w)
    for err in errors:
        print("ERROR:", err)
    print(f"{len(errors)} errors, {len(warnings)} warnings")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
