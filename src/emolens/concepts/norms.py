"""Valence and arousal ratings of the 171 emotion words, for the geometry experiments.

The shipped table (``data/norms.csv``, built by ``scripts/build_norms.py``) holds:

* valence: human means from the VADER sentiment lexicon (MIT licence; 10 raters a word, scale
  -4..+4) for the 139 emotion words it rates; the rest are left empty, never guessed;
* arousal: ratings on a 1..9 scale written by the emolens authors for all 171 words, because
  no human arousal norm with a redistributable licence was available. Their source reads
  ``"emolens-authors (not human norms)"`` and every report must say so.

See ``data/NORMS_SOURCES.md`` for licences and coverage. A user CSV with the columns
``emotion`` and ``valence`` and/or ``arousal`` (any scale) can replace the shipped one.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from emolens.concepts.emotions import EMOTIONS
from emolens.errors import CorpusError

#: The shipped ratings.
NORMS_PATH = Path(__file__).resolve().parent / "data" / "norms.csv"
#: The label every author-written (non-human) rating carries.
AUTHOR_SOURCE = "emolens-authors (not human norms)"

_KINDS = ("valence", "arousal")


@dataclass(frozen=True)
class Norms:
    """Ratings per emotion word; a word without a rating is absent from the dict.

    ``valence_source`` and ``arousal_source`` name where the numbers came from (several
    sources are joined with ``"; "``).

    >>> n = load_norms()
    >>> n.valence["happy"], n.arousal_source
    (2.7, 'emolens-authors (not human norms)')
    >>> "afraid" in n.missing("valence"), n.missing("arousal")
    (True, [])
    """

    valence: dict[str, float]
    arousal: dict[str, float]
    valence_source: str
    arousal_source: str

    def missing(self, kind: str) -> list[str]:
        """The emotions (in :data:`EMOTIONS` order) with no rating of ``kind``."""
        if kind not in _KINDS:
            raise CorpusError(f"norm kind must be 'valence' or 'arousal', got {kind!r}")
        have = self.valence if kind == "valence" else self.arousal
        return [e for e in EMOTIONS if e not in have]


def _float(cell: str, where: str, column: str) -> float | None:
    cell = cell.strip()
    if not cell:
        return None
    try:
        x = float(cell)
    except ValueError:
        raise CorpusError(f"{where}: {column} {cell!r} is not a number") from None
    if not math.isfinite(x):
        raise CorpusError(f"{where}: {column} {cell!r} is not a finite number")
    return x


def load_norms(path: str | Path | None = None) -> Norms:
    """Read valence and arousal ratings from a CSV (None = the shipped table).

    The file needs a header with ``emotion`` and at least one of ``valence`` / ``arousal``;
    optional ``valence_source`` / ``arousal_source`` columns name the source per row. Empty
    cells mean no rating. Emotion names must be among the 171 (case and outer spaces are
    ignored) and appear once. Any problem raises :class:`CorpusError` naming file and line.

    >>> len(load_norms().valence), len(load_norms().arousal)
    (139, 171)
    """
    p = NORMS_PATH if path is None else Path(path)
    try:
        with open(p, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise CorpusError(f"norms file not found: {p}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CorpusError(f"{p}: cannot read as a UTF-8 CSV ({exc})") from None
    if not rows:
        raise CorpusError(f"{p}:1: empty file, expected a header with 'emotion'")
    header = [h.strip().lower() for h in rows[0]]
    if "emotion" not in header:
        raise CorpusError(f"{p}:1: header has no 'emotion' column (got {rows[0]})")
    kinds = [k for k in _KINDS if k in header]
    if not kinds:
        raise CorpusError(f"{p}:1: header needs a 'valence' or 'arousal' column (got {rows[0]})")
    col = {h: i for i, h in enumerate(header)}
    known = set(EMOTIONS)
    values: dict[str, dict[str, float]] = {k: {} for k in _KINDS}
    sources: dict[str, list[str]] = {k: [] for k in _KINDS}
    seen: set[str] = set()
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        where = f"{p}:{lineno}"
        if len(row) != len(header):
            raise CorpusError(f"{where}: {len(row)} cells, header has {len(header)}")
        emotion = row[col["emotion"]].strip().lower()
        if emotion not in known:
            raise CorpusError(f"{where}: unknown emotion {emotion!r} (not one of the 171)")
        if emotion in seen:
            raise CorpusError(f"{where}: emotion {emotion!r} appears twice")
        seen.add(emotion)
        for k in kinds:
            x = _float(row[col[k]], where, k)
            if x is None:
                continue
            values[k][emotion] = x
            src_col = col.get(f"{k}_source")
            src = row[src_col].strip() if src_col is not None else ""
            src = src or f"user file {p.name}"
            if src not in sources[k]:
                sources[k].append(src)
    return Norms(
        valence=values["valence"],
        arousal=values["arousal"],
        valence_source="; ".join(sources["valence"]),
        arousal_source="; ".join(sources["arousal"]),
    )
