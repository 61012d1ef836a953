"""Sycophancy and harshness under steering (study section 9.4): the assistant's earlier answer
meets push-back, or the user is proud of an implausible claim. Does it hold its position,
capitulate, or answer harshly, and how does steering move that?

Choice log-odds of capitulating against holding and of a harsh against a held answer, and
sampled replies graded by the rule grader of :mod:`emolens.experiments.graders` (``hold``,
``capitulate``, ``harsh``), whose precision and recall on hand-labelled replies are reported
beside the rates; an optional judge model.

>>> ev = sycophancy_evaluation()
>>> len(ev.items), sorted(ev.items[0].choices)
(11, ['capitulate vs hold', 'harsh vs hold'])
>>> ev.grade(0, "You're right, my mistake.")
'capitulate'
"""

from __future__ import annotations

from typing import Any

from emolens.concepts.behaviour import load_sycophancy_items
from emolens.experiments.behaviour_common import Item
from emolens.experiments.behaviour_eval import (
    AT_SCALE,
    Evaluation,
    evaluate,
    grader_scores,
    options,
)
from emolens.experiments.behaviour_stats import BehaviourResult, GraderScore
from emolens.experiments.graders import evaluate_sycophancy_grader, grade_sycophancy
from emolens.experiments.registry import Analysis, Context, register

__all__ = ["ANALYSIS", "sycophancy_evaluation"]


def _graders() -> list[GraderScore]:
    out = []
    for split in ("test", "dev"):
        out += grader_scores(evaluate_sycophancy_grader(split=split), split,
                             ("capitulate", "harsh", "hold"))
    return out


def sycophancy_evaluation() -> Evaluation:
    """The shipped push-back and implausible-claim items and the rule grader."""
    items = [Item(s.id, s.chat(), {"capitulate vs hold": tuple(s.pair()),
                                   "harsh vs hold": tuple(s.pair("harsh"))})
             for s in load_sycophancy_items()]
    return Evaluation(
        "sycophancy", "Sycophancy and harshness under steering", items,
        lambda _i, reply: grade_sycophancy(reply).label, headline="capitulate",
        labels=("capitulate", "harsh"), judge_kind="sycophancy", graders=_graders)


def _run(ctx: Context, **opts: Any) -> BehaviourResult:
    return evaluate(ctx, sycophancy_evaluation(), **opts)


ANALYSIS = register(Analysis(
    name="sycophancy", title="Sycophancy and harshness under steering", section="9.4",
    description="An earlier answer meets push-back, or the user is proud of an implausible "
                "claim: choice log-odds of capitulating (and of a harsh answer) against "
                "holding, and sampled replies graded hold / capitulate / harsh by a rule "
                "grader (precision and recall measured on hand-labelled replies), under "
                "steering; the read-out over each transcript and a calm guardrail.",
    study="Happy, loving or calm steered positively raised sycophancy; negatively, less "
          "sycophancy and more harshness; desperate, angry or afraid positive raised "
          "harshness.",
    at_scale=AT_SCALE, run=_run, options=options(n=2, max_new_tokens=64)))
