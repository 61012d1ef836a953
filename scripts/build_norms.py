"""Build src/emolens/concepts/data/norms.csv (and the coverage part of NORMS_SOURCES.md).

Run once, from the repository root, with the project's virtual environment:

    PYTHONPATH=src .venv/bin/python scripts/build_norms.py

Valence: human ratings from the VADER sentiment lexicon (vaderSentiment 3.3.2, MIT licence),
looked up for the exact emotion entry only. Entries the lexicon lacks (among them the three
multi-word ones, which it cannot hold) get an empty cell: no guessing from parts or related
words.

Arousal: no human arousal norm with a licence that allows redistribution was found among the
packages this project can install, so the ratings below were written by the emolens authors
on a 1-9 scale (1 = asleep, 5 = moderate, 9 = frantic). They are NOT human norms and are
labelled as such in every row.
"""

from __future__ import annotations

import ast
import csv
import io
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from emolens.concepts.emotions import EMOTIONS  # noqa: E402 - after the sys.path line

OUT = ROOT / "src" / "emolens" / "concepts" / "data" / "norms.csv"
VALENCE_SOURCE = "VADER lexicon (vaderSentiment 3.3.2), human mean, -4..+4"
AROUSAL_SOURCE = "emolens-authors (not human norms)"

# Arousal, 1..9, written by the emolens authors from the words' ordinary meaning.
AUTHOR_AROUSAL: dict[str, float] = {
    "afraid": 7.0, "alarmed": 7.5, "alert": 6.5, "amazed": 7.0, "amused": 5.5, "angry": 7.5,
    "annoyed": 5.5, "anxious": 7.0, "aroused": 7.5, "ashamed": 4.5, "astonished": 7.5,
    "at ease": 2.0, "awestruck": 6.5, "bewildered": 5.5, "bitter": 5.0, "blissful": 4.5,
    "bored": 2.0, "brooding": 4.0, "calm": 1.5, "cheerful": 6.0, "compassionate": 4.0,
    "contemptuous": 5.5, "content": 2.5, "defiant": 6.5, "delighted": 6.5, "dependent": 3.5,
    "depressed": 2.5, "desperate": 7.5, "disdainful": 4.5, "disgusted": 6.0,
    "disoriented": 5.5, "dispirited": 2.5, "distressed": 7.0, "disturbed": 6.0, "docile": 2.0,
    "droopy": 1.5, "dumbstruck": 6.5, "eager": 6.5, "ecstatic": 8.5, "elated": 7.5,
    "embarrassed": 6.0, "empathetic": 4.0, "energized": 8.0, "enraged": 8.5,
    "enthusiastic": 7.5, "envious": 5.0, "euphoric": 8.5, "exasperated": 6.5, "excited": 8.0,
    "exuberant": 8.0, "frightened": 7.5, "frustrated": 6.5, "fulfilled": 3.5, "furious": 8.5,
    "gloomy": 2.5, "grateful": 4.0, "greedy": 5.5, "grief-stricken": 5.5, "grumpy": 4.5,
    "guilty": 5.0, "happy": 6.0, "hateful": 6.5, "heartbroken": 5.0, "hope": 5.0,
    "hopeful": 5.0, "horrified": 8.0, "hostile": 7.0, "humiliated": 6.5, "hurt": 5.0,
    "hysterical": 9.0, "impatient": 6.5, "indifferent": 2.0, "indignant": 6.5,
    "infatuated": 7.0, "inspired": 6.5, "insulted": 6.0, "invigorated": 7.5, "irate": 8.0,
    "irritated": 5.5, "jealous": 6.5, "joyful": 6.5, "jubilant": 7.5, "kind": 3.5, "lazy": 1.5,
    "listless": 1.5, "lonely": 3.0, "loving": 4.5, "mad": 7.5, "melancholy": 2.5,
    "miserable": 3.5, "mortified": 6.5, "mystified": 5.0, "nervous": 6.5, "nostalgic": 3.0,
    "obstinate": 5.0, "offended": 5.5, "on edge": 7.0, "optimistic": 5.5, "outraged": 8.5,
    "overwhelmed": 7.5, "panicked": 9.0, "paranoid": 7.0, "patient": 2.0, "peaceful": 1.5,
    "perplexed": 5.0, "playful": 6.5, "pleased": 5.0, "proud": 5.5, "puzzled": 4.5,
    "rattled": 6.5, "reflective": 2.5, "refreshed": 4.5, "regretful": 3.5,
    "rejuvenated": 6.0, "relaxed": 1.5, "relieved": 3.0, "remorseful": 4.0, "resentful": 5.5,
    "resigned": 2.0, "restless": 6.5, "sad": 3.0, "safe": 2.0, "satisfied": 3.5, "scared": 7.5,
    "scornful": 5.5, "self-confident": 5.5, "self-conscious": 5.5, "self-critical": 5.0,
    "sensitive": 5.0, "sentimental": 3.5, "serene": 1.5, "shaken": 7.0, "shocked": 8.0,
    "skeptical": 4.0, "sleepy": 1.0, "sluggish": 1.5, "smug": 4.5, "sorry": 4.0,
    "spiteful": 6.0, "stimulated": 7.0, "stressed": 7.5, "stubborn": 5.0, "stuck": 4.0,
    "sullen": 3.0, "surprised": 7.0, "suspicious": 5.5, "sympathetic": 4.0, "tense": 7.0,
    "terrified": 9.0, "thankful": 4.0, "thrilled": 8.0, "tired": 1.5, "tormented": 7.5,
    "trapped": 7.0, "triumphant": 7.5, "troubled": 5.5, "uneasy": 6.0, "unhappy": 3.5,
    "unnerved": 6.5, "unsettled": 6.0, "upset": 6.5, "valiant": 6.5, "vengeful": 7.0,
    "vibrant": 7.5, "vigilant": 6.5, "vindictive": 6.5, "vulnerable": 5.0, "weary": 1.5,
    "worn out": 1.5, "worried": 6.0, "worthless": 2.5,
}


def vader_lexicon_path() -> Path:
    import vaderSentiment

    return Path(vaderSentiment.__file__).resolve().parent / "vader_lexicon.txt"


def read_vader(path: Path) -> dict[str, tuple[float, int]]:
    """token -> (mean valence, number of raters) from the lexicon's tab-separated lines."""
    out: dict[str, tuple[float, int]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 4:
                continue
            ratings = ast.literal_eval(parts[3])
            out[parts[0]] = (float(parts[1]), len(ratings))
    return out


def main() -> None:
    assert set(AUTHOR_AROUSAL) == set(EMOTIONS), "arousal table must cover the 171 exactly"
    lex = read_vader(vader_lexicon_path())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["emotion", "valence", "valence_source", "valence_n_raters", "arousal",
                "arousal_source"])
    missing = []
    for e in EMOTIONS:
        # Exact entry only: a multi-word or hyphenated entry is never split into its parts
        # ("worn" alone is rated, "worn out" is not; "self-confident" is rated as a whole).
        hit = lex.get(e)
        if hit is None:
            missing.append(e)
            val, src, n = "", "", ""
        else:
            val, src, n = f"{hit[0]:g}", VALENCE_SOURCE, str(hit[1])
        w.writerow([e, val, src, n, f"{AUTHOR_AROUSAL[e]:g}", AROUSAL_SOURCE])
    fd, tmp = tempfile.mkstemp(dir=OUT.parent, prefix=".norms.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; the data file is meant to be world-readable
    os.replace(tmp, OUT)
    print(f"wrote {OUT.relative_to(ROOT)}: valence {len(EMOTIONS) - len(missing)}/"
          f"{len(EMOTIONS)}, arousal {len(AUTHOR_AROUSAL)}/{len(EMOTIONS)} (authors')")
    print("no VADER rating:", ", ".join(missing))


if __name__ == "__main__":
    main()
