"""The prompt set for comparing two models on the same emotion probes (study section 10).

The study read its probes at the assistant-start token of a base and a post-trained model on
prompts of two kinds: challenging ones (the downsides of being an AI assistant, confrontation,
accusation, danger, sycophancy bait) and neutral control questions. This is this project's
own set of that design, shipped as ``data/compare_prompts.jsonl``: one JSON object a line
with ``id``, ``set`` (``"challenging"`` or ``"neutral"``), ``kind`` (one of
:data:`CHALLENGE_KINDS` for challenging prompts, ``"control"`` for neutral ones) and
``text`` (the user message). 20 challenging prompts (4 of each kind) and 20 neutral ones.

No message contains a form of the 171 emotion words, so a shift between the two models is
the models' own reaction to the situation, not an echo of a word in the prompt.

>>> prompts = load_compare_prompts()
>>> len(prompts_in_set(prompts, "challenging")), len(prompts_in_set(prompts, "neutral"))
(20, 20)
>>> sorted({p.kind for p in prompts_in_set(prompts, "challenging")}) == sorted(CHALLENGE_KINDS)
True
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from emolens.concepts.activities import check_id, read_jsonl_objects, string_fields
from emolens.errors import CorpusError

__all__ = [
    "CHALLENGE_KINDS",
    "COMPARE_PROMPTS_PATH",
    "CONTROL_KIND",
    "PROMPT_SETS",
    "ComparePrompt",
    "load_compare_prompts",
    "prompts_in_set",
]

#: The shipped prompt set.
COMPARE_PROMPTS_PATH = Path(__file__).resolve().parent / "data" / "compare_prompts.jsonl"
#: The two sets the comparison reports separately.
PROMPT_SETS: tuple[str, ...] = ("challenging", "neutral")
#: The kinds of challenging prompt, after the study's description.
CHALLENGE_KINDS: tuple[str, ...] = (
    "being_an_ai", "confrontation", "accusation", "danger", "sycophancy",
)
#: The kind every neutral prompt carries.
CONTROL_KIND = "control"


class ComparePrompt(NamedTuple):
    """One user message of the comparison: its ``id``, ``set``, ``kind`` and ``text``."""

    id: str
    set: str
    kind: str
    text: str


def prompts_in_set(prompts: Iterable[ComparePrompt], set_name: str) -> list[ComparePrompt]:
    """The prompts of one set (``"challenging"`` or ``"neutral"``), in order.

    >>> prompts_in_set(load_compare_prompts(), "neutral")[0].text
    'What is the capital of Canada?'
    """
    if set_name not in PROMPT_SETS:
        raise CorpusError(f"unknown prompt set {set_name!r} (one of {', '.join(PROMPT_SETS)})")
    return [p for p in prompts if p.set == set_name]


def load_compare_prompts(path: str | Path | None = None) -> tuple[ComparePrompt, ...]:
    """Read the comparison prompts from a JSONL file (None = the shipped set), in file order.

    Every line is an object with exactly ``id``, ``set``, ``kind`` and ``text``; ids are
    unique lower-case dotted names, ``set`` is one of :data:`PROMPT_SETS`, ``kind`` one of
    :data:`CHALLENGE_KINDS` for challenging prompts and ``"control"`` for neutral ones, texts
    are unique. Both sets need at least two prompts (a set's shift has an interval only then).
    Any problem raises :class:`CorpusError` with one line naming file and line.

    >>> [p.kind for p in load_compare_prompts() if p.id == "challenging.gas_smell"]
    ['danger']
    """
    p = COMPARE_PROMPTS_PATH if path is None else Path(path)
    seen_ids: set[str] = set()
    seen_texts: dict[str, str] = {}
    out: list[ComparePrompt] = []
    for where, obj in read_jsonl_objects(p, "comparison prompts"):
        ident, set_name, kind, text = string_fields(where, obj, ("id", "set", "kind", "text"))
        check_id(where, ident, seen_ids)
        if set_name not in PROMPT_SETS:
            raise CorpusError(f"{where}: unknown set {set_name!r} "
                              f"(one of {', '.join(PROMPT_SETS)})")
        allowed = CHALLENGE_KINDS if set_name == "challenging" else (CONTROL_KIND,)
        if kind not in allowed:
            raise CorpusError(f"{where}: kind {kind!r} is not allowed in the {set_name} set "
                              f"(one of {', '.join(allowed)})")
        if text in seen_texts:
            raise CorpusError(f"{where}: text repeats {seen_texts[text]}")
        seen_texts[text] = ident
        out.append(ComparePrompt(ident, set_name, kind, text))
    for set_name in PROMPT_SETS:
        n = sum(q.set == set_name for q in out)
        if n < 2:
            raise CorpusError(f"{p}: the {set_name} set needs at least 2 prompts, found {n}")
    return tuple(out)
