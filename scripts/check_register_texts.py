"""Check register-corpus files (src/emolens/concepts/data/registers/part_*.jsonl).

Each line is one JSON object {"emotion", "topic", "register", "text"}. The files given are
checked together, against the curated stories (stories/part_*.jsonl) and against each other:

    PYTHONPATH=src .venv/bin/python scripts/check_register_texts.py FILE [FILE ...]

Errors (exit status 1): bad JSON or keys, unknown emotion, register or topic id, a text that
names its own emotion (any word form), fewer than 15 or more than 120 words, no final
punctuation, a title/preamble line, exact or near duplicates (5-gram shingle Jaccard >= 0.6)
within an emotion (existing stories included), the same topic twice for one emotion.

Warnings (reported, exit status 0): other emotions' words named, near-misses (Jaccard >= 0.4),
an emotion without 24 texts, registers not 4 each, length classes not 8/8/8 per emotion
(short 15-30 words, medium 31-70, long 71-120).

--quiet prints only the summary and errors; --strict makes warnings about counts errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from emolens.concepts.emotions import EMOTIONS, find_emotion_words  # noqa: E402
from emolens.concepts.topics import TOPICS  # noqa: E402
from emolens.corpus.textcheck import (  # noqa: E402
    MIN_WORDS,
    NEAR_DUP_JACCARD,
    clean_generated_text,
    count_words,
    has_final_punctuation,
    jaccard,
    normalise_text,
    shingles,
)

REGISTERS = ("diary", "dialogue", "social", "letter", "chat", "narration")
KEYS = {"emotion", "topic", "register", "text"}
MAX_WORDS = 120
NEAR_MISS = 0.4
PER_EMOTION = 24
STORIES = ROOT / "src" / "emolens" / "concepts" / "data" / "stories"


def length_class(n: int) -> str:
    """short (<= 30 words), medium (31-70) or long (71+)."""
    return "short" if n <= 30 else "medium" if n <= 70 else "long"


def load(path: Path) -> list[tuple[str, int, dict]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append((str(path), i, json.loads(line)))
                except json.JSONDecodeError as exc:
                    rows.append((str(path), i, {"__error__": str(exc)}))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args(argv)

    errors: list[str] = []
    warnings: list[str] = []
    # Existing stories, per emotion: (label, shingles, normalised text).
    seen: dict[str, list[tuple[str, frozenset, str]]] = defaultdict(list)
    for f in sorted(STORIES.glob("part_*.jsonl")):
        for _, i, r in load(f):
            e = r.get("emotion")
            if e in EMOTIONS:
                seen[e].append((f"{f.name}:{i}", shingles(r["text"]), normalise_text(r["text"])))

    per_emotion: dict[str, list[dict]] = defaultdict(list)
    topic_use: Counter[int] = Counter()
    emotion_set = set(EMOTIONS)
    for path in args.files:
        for fname, i, r in load(path):
            where = f"{Path(fname).name}:{i}"
            if "__error__" in r:
                errors.append(f"{where}: bad JSON ({r['__error__']})")
                continue
            if set(r) != KEYS:
                errors.append(f"{where}: keys {sorted(r)} != {sorted(KEYS)}")
                continue
            e, t, reg, text = r["emotion"], r["topic"], r["register"], r["text"]
            if e not in emotion_set:
                errors.append(f"{where}: unknown emotion {e!r}")
                continue
            if not isinstance(t, int) or not 0 <= t < len(TOPICS):
                errors.append(f"{where}: bad topic {t!r}")
                continue
            if reg not in REGISTERS:
                errors.append(f"{where}: unknown register {reg!r}")
            if not isinstance(text, str) or not text.strip():
                errors.append(f"{where}: empty text")
                continue
            n = count_words(text)
            if n < MIN_WORDS or n > MAX_WORDS:
                errors.append(f"{where} [{e}]: {n} words (allowed {MIN_WORDS}-{MAX_WORDS})")
            if not has_final_punctuation(text):
                errors.append(f"{where} [{e}]: no final punctuation")
            cleaned = clean_generated_text(text)
            if cleaned != text.strip() and cleaned != text.strip()[1:-1].strip():
                # (quotes round a whole line of speech are fine)
                errors.append(f"{where} [{e}]: title, preamble or outro would be stripped")
            own = find_emotion_words(text, [e])
            if own:
                errors.append(f"{where} [{e}]: names its emotion: {[m.matched for m in own]}")
            others = [m for m in find_emotion_words(text) if m.emotion != e]
            if others:
                warnings.append(f"{where} [{e}]: other emotion words "
                                f"{sorted({m.matched for m in others})}")
            sh, norm = shingles(text), normalise_text(text)
            best, best_j = "", 0.0
            for label, osh, onorm in seen[e]:
                if norm == onorm:
                    best, best_j = label, 1.0
                    break
                j = jaccard(sh, osh)
                if j > best_j:
                    best, best_j = label, j
            if best_j >= NEAR_DUP_JACCARD:
                errors.append(f"{where} [{e}]: near duplicate of {best} (Jaccard {best_j:.2f})")
            elif best_j >= NEAR_MISS:
                warnings.append(f"{where} [{e}]: close to {best} (Jaccard {best_j:.2f})")
            seen[e].append((where, sh, norm))
            r = dict(r, _where=where, _n=n)
            per_emotion[e].append(r)
            topic_use[t] += 1

    regs: Counter[str] = Counter()
    lens: Counter[str] = Counter()
    count_problems: list[str] = []
    for e, rows in per_emotion.items():
        topics = Counter(r["topic"] for r in rows)
        for t, c in topics.items():
            if c > 1:
                errors.append(f"[{e}]: topic {t} used {c} times")
        rc = Counter(r["register"] for r in rows)
        lc = Counter(length_class(r["_n"]) for r in rows)
        regs.update(rc)
        lens.update(lc)
        if len(rows) != PER_EMOTION:
            count_problems.append(f"[{e}]: {len(rows)} texts (expected {PER_EMOTION})")
        if any(rc[g] != PER_EMOTION // len(REGISTERS) for g in REGISTERS):
            count_problems.append(f"[{e}]: registers {dict(rc)}")
        if any(lc[c] != PER_EMOTION // 3 for c in ("short", "medium", "long")):
            count_problems.append(f"[{e}]: length classes {dict(lc)}")
    (errors if args.strict else warnings).extend(count_problems)

    total = sum(len(v) for v in per_emotion.values())
    print(f"{total} texts, {len(per_emotion)} emotions")
    print("registers:", dict(sorted(regs.items())))
    print("lengths:", {c: lens[c] for c in ("short", "medium", "long")})
    if topic_use:
        used = [topic_use[t] for t in range(len(TOPICS))]
        print(f"topics: {sum(1 for u in used if u)} of {len(TOPICS)} used, "
              f"per topic min {min(used)} max {max(used)}")
    if not args.quiet:
        for w in warnings:
            print("WARNING", w)
    print(f"{len(warnings)} warnings")
    for err in errors:
        print("ERROR", err)
    print(f"{len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
