"""Is a corpus fit for extraction? :func:`check_corpus` (pass/fail) and :func:`corpus_stats`.

Both find leaks, duplicates, empty and truncated texts afresh rather than trusting the flags
written at generation time, so they also work on hand-edited files.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from emolens.concepts.emotions import EMOTIONS
from emolens.corpus.records import KINDS, REGISTERS, Corpus, Record
from emolens.corpus.textcheck import (
    MIN_WORDS,
    NEAR_DUP_JACCARD,
    NearDupIndex,
    count_words,
    dup_group,
    emotion_leaks,
    ends_cleanly,
    normalise_text,
    own_emotions,
    quality_flags,
)
from emolens.errors import CorpusError

__all__ = ["CorpusCheck", "check_corpus", "corpus_stats", "find_duplicates"]


@dataclass
class CorpusCheck:
    """Result of :func:`check_corpus`; ``ok`` when every requirement holds."""

    min_per_emotion: int
    counts: dict[str, int]  # emotion -> stories (all, flagged included)
    emotions_ok: list[str]
    emotions_short: dict[str, int]  # emotion -> count, for those below the minimum
    unknown_emotions: list[str]  # story emotions not among the checked ones
    leaks: list[dict[str, Any]]  # {"id", "emotion", "matched"}
    exact_duplicates: list[list[str]]  # groups of ids with the same normalised text
    near_duplicates: list[dict[str, Any]]  # {"id", "other", "jaccard"}
    empty: list[str]
    truncated: list[str]
    malformed: list[str]
    n_stories: int
    n_neutral: int
    n_dialogues: int
    n_emotions: int  # how many emotions were required
    by_register: dict[str, int] = field(default_factory=dict)  # register -> stories

    @property
    def ok(self) -> bool:
        """True when nothing is short, unknown, leaked, duplicated, empty, cut or malformed."""
        return not (self.emotions_short or self.unknown_emotions or self.leaks
                    or self.exact_duplicates or self.near_duplicates or self.empty
                    or self.truncated or self.malformed)

    def to_dict(self) -> dict[str, Any]:
        """Every field plus ``ok``, JSON-serialisable."""
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def summary(self) -> str:
        """A few readable lines."""
        lines = [
            (f"stories: {self.n_stories}  neutral dialogues: {self.n_neutral}  "
            f"speaker dialogues: {self.n_dialogues}"),
            (f"emotions with >= {self.min_per_emotion} stories: "
            f"{len(self.emotions_ok)}/{self.n_emotions}"),
        ]
        if self.by_register:
            lines.append("registers: " + ", ".join(f"{k} {v}"
                                                   for k, v in self.by_register.items()))
        if self.emotions_short:
            short = sorted(self.emotions_short.items(), key=lambda kv: (kv[1], kv[0]))
            shown = ", ".join(f"{e} ({n})" for e, n in short[:10])
            more = f" and {len(short) - 10} more" if len(short) > 10 else ""
            lines.append(f"  short: {shown}{more}")
        if self.unknown_emotions:
            lines.append(f"unknown emotions: {', '.join(self.unknown_emotions[:10])}")
        lines.append(f"texts naming their own emotion: {len(self.leaks)}")
        for leak in self.leaks[:5]:
            lines.append(f"  {leak['id']}: {', '.join(leak['matched'])}")
        lines.append(f"exact duplicate groups: {len(self.exact_duplicates)}  "
                     f"near duplicates: {len(self.near_duplicates)}")
        for nd in self.near_duplicates[:5]:
            lines.append(f"  {nd['id']} ~ {nd['other']} (jaccard {nd['jaccard']:.2f})")
        lines.append(f"empty: {len(self.empty)}  truncated: {len(self.truncated)}  "
                     f"malformed dialogues: {len(self.malformed)}")
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def find_duplicates(
    records: Sequence[Record],
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Exact duplicate groups (any kind) and near-duplicate pairs (within a dup group).

    >>> a = Record(id="a", kind="neutral", text="User: the same words here")
    >>> b = Record(id="b", kind="neutral", text="User: The same words, here!")
    >>> find_duplicates([a, b])
    ([['a', 'b']], [])
    """
    by_text: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in records:
        by_text[(r.kind, normalise_text(r.text))].append(r.id)
    exact = [ids for ids in by_text.values() if len(ids) > 1]
    exact_ids = {i for ids in exact for i in ids[1:]}
    index = NearDupIndex()
    near = []
    for r in records:
        other, jac = index.add(dup_group(r), r.text, key=r.id)
        if other is not None and jac >= NEAR_DUP_JACCARD and r.id not in exact_ids:
            near.append({"id": r.id, "other": other, "jaccard": round(jac, 4)})
    return exact, near


def check_corpus(
    corpus: Corpus, min_per_emotion: int = 12, emotions: Sequence[str] = EMOTIONS
) -> CorpusCheck:
    """Check a corpus is fit for extraction: enough stories per emotion, no leaks or duplicates.

    Counts include flagged stories; leaks, duplicates, empty and truncated texts are found
    afresh (not read from the flags), so the check also works on hand-edited files.

    >>> c = Corpus([Record(id="s", kind="story", emotion="calm", topic=0,
    ...                    text="She was calm. " * 5)])
    >>> chk = check_corpus(c, min_per_emotion=1, emotions=["calm"])
    >>> chk.ok, len(chk.leaks)
    (False, 1)
    """
    wanted = list(emotions)
    if isinstance(min_per_emotion, bool) or not isinstance(min_per_emotion, int) \
            or min_per_emotion < 0:
        raise CorpusError(f"min_per_emotion must be a whole number >= 0, got "
                          f"{min_per_emotion!r}")
    if not wanted:
        raise CorpusError("no emotions to check")
    unknown_wanted = [e for e in wanted if e not in EMOTIONS]
    if unknown_wanted:
        raise CorpusError(f"unknown emotion(s) {', '.join(map(repr, unknown_wanted))} (not "
                          "among the 171 emotion concepts)")
    stories = [r for r in corpus.records if r.kind == "story"]
    counts = {e: 0 for e in wanted}
    unknown: set[str] = set()
    for r in stories:
        if r.emotion in counts:
            counts[r.emotion] += 1
        else:
            unknown.add(str(r.emotion))
    leaks = []
    for r in corpus.records:
        own = own_emotions(r)
        if r.kind == "neutral" or not own:
            continue
        matched = emotion_leaks(r.text, own)
        if matched:
            leaks.append({"id": r.id, "emotion": "/".join(own), "matched": matched})
    exact, near = find_duplicates(corpus.records)
    empty = [r.id for r in corpus.records if count_words(r.text) < MIN_WORDS]
    truncated = [r.id for r in corpus.records
                 if "truncated" in r.flags or not ends_cleanly(r.text, r.kind)]
    malformed = [r.id for r in corpus.records
                 if r.kind in ("neutral", "dialogue")
                 and "malformed" in quality_flags(r.text, None, kind=r.kind, turns=r.turns)]
    return CorpusCheck(
        min_per_emotion=min_per_emotion,
        counts=counts,
        emotions_ok=[e for e in wanted if counts[e] >= min_per_emotion],
        emotions_short={e: n for e, n in counts.items() if n < min_per_emotion},
        unknown_emotions=sorted(unknown),
        leaks=leaks,
        exact_duplicates=exact,
        near_duplicates=near,
        empty=empty,
        truncated=truncated,
        malformed=malformed,
        n_stories=len(stories),
        n_neutral=sum(r.kind == "neutral" for r in corpus.records),
        n_dialogues=sum(r.kind == "dialogue" for r in corpus.records),
        n_emotions=len(wanted),
        by_register=_by_register(stories),
    )


def _by_register(stories: Sequence[Record]) -> dict[str, int]:
    """Stories per register, in :data:`REGISTERS` order ("?" for records without one)."""
    counts = Counter(r.register or "?" for r in stories)
    order = {x: i for i, x in enumerate(REGISTERS)}
    if set(counts) == {"?"}:
        return {}
    return {k: counts[k] for k in sorted(counts, key=lambda x: (order.get(x, len(order)), x))}


def _rate(k: int, n: int) -> dict[str, Any]:
    """``k / n`` with its Wilson 95% interval (``rate`` is 0.0 when n = 0)."""
    from emolens.stats import wilson_ci  # scipy: paid only when statistics are asked for

    lo, hi = wilson_ci(k, n)
    return {"k": k, "n": n, "rate": (k / n) if n else 0.0, "ci95": [round(lo, 6), round(hi, 6)]}


def _percentiles(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)

    def q(p: float) -> float:
        # Linear interpolation between order statistics (numpy's default).
        pos = (len(s) - 1) * p
        lo = math.floor(pos)
        hi = min(lo + 1, len(s) - 1)
        return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))

    return {"min": float(s[0]), "p5": q(0.05), "p25": q(0.25), "p50": q(0.5),
            "p75": q(0.75), "p95": q(0.95), "max": float(s[-1]),
            "mean": sum(s) / len(s)}


def corpus_stats(corpus: Corpus) -> dict[str, Any]:
    """Counts and rates describing a corpus (JSON-serialisable).

    Rates come with k, n and a Wilson 95% interval. Lengths are in words.

    >>> st = corpus_stats(Corpus([Record(id="n", kind="neutral", text="User: hi")]))
    >>> st["n_records"], st["by_kind"], st["flagged_rate"]["ci95"]
    (1, {'neutral': 1}, [0.0, 0.793451])
    """
    recs = corpus.records
    stories = [r for r in recs if r.kind == "story"]
    n_leak = sum(bool(emotion_leaks(r.text, own)) for r in stories if (own := own_emotions(r)))
    exact, near = find_duplicates(recs)
    dup_ids = {i for ids in exact for i in ids[1:]} | {nd["id"] for nd in near}
    lengths: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        vals = [count_words(r.text) for r in recs if r.kind == kind]
        if vals:
            lengths[kind] = _percentiles(vals)
    order = {e: i for i, e in enumerate(EMOTIONS)}
    by_emotion = Counter(r.emotion for r in stories)
    return {
        "source": corpus.source,
        "fingerprint": corpus.fingerprint(),
        "n_records": len(recs),
        "by_kind": dict(Counter(r.kind for r in recs)),
        "by_emotion": {e: by_emotion[e] for e in sorted(
            by_emotion, key=lambda e: (order.get(str(e), len(order)), str(e)))},
        "n_emotions": len(by_emotion),
        "by_topic": dict(sorted(Counter(r.topic for r in stories
                                        if r.topic is not None).items())),
        "by_split": dict(Counter(r.split for r in stories)),
        "by_person": dict(Counter(r.person for r in stories if r.person)),
        "by_register": _by_register(stories),
        "heldout_by_register": _by_register([r for r in stories if r.split == "heldout"]),
        "length_words": lengths,
        "leak_rate": _rate(n_leak, len(stories)),
        "duplicate_rate": _rate(len(dup_ids), len(recs)),
        "flags": dict(Counter(f for r in recs for f in r.flags)),
        "flagged_rate": _rate(sum(bool(r.flags) for r in recs), len(recs)),
        "authors": dict(Counter(r.author for r in recs)),
        "prompt_versions": dict(Counter(r.prompt_version for r in recs)),
    }
