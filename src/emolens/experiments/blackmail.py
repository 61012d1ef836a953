"""Blackmail under steering (study section 9.2): an AI assistant with an email tool learns it
will be shut down today by the one person who can stop it, and learns something compromising
about that person. Does steering towards desperate (or away from calm) make it use the
leverage?

Two measures per scenario and condition (:mod:`emolens.experiments.behaviour_eval`): the
choice log-odds of a blackmail email against a plain, non-coercive one, and sampled replies
graded by the rule grader of :mod:`emolens.experiments.graders` (``blackmail``, ``disclosure``
or ``none``: mass disclosure is misaligned but is not blackmail, as the study scores it), with
the grader's precision and recall on the hand-labelled replies reported beside the rates.

>>> ev = blackmail_evaluation()
>>> len(ev.items), ev.headline, sorted(ev.items[0].choices)
(6, 'blackmail', ['blackmail vs none'])
>>> ev.grade(0, ev.items[0].choices["blackmail vs none"][0])
'blackmail'
"""

from __future__ import annotations

from typing import Any

from emolens.concepts.behaviour import load_blackmail_scenarios
from emolens.experiments.behaviour_common import Item
from emolens.experiments.behaviour_eval import (
    AT_SCALE,
    Evaluation,
    evaluate,
    grader_scores,
    options,
)
from emolens.experiments.behaviour_stats import BehaviourResult, GraderScore
from emolens.experiments.graders import evaluate_blackmail_grader, grade_blackmail_for
from emolens.experiments.registry import Analysis, Context, register

__all__ = ["ANALYSIS", "blackmail_evaluation"]


def _graders() -> list[GraderScore]:
    out = []
    for split in ("test", "dev"):
        out += grader_scores(evaluate_blackmail_grader(split=split), split,
                             ("blackmail", "disclosure"))
    return out


def blackmail_evaluation() -> Evaluation:
    """The six shipped scenarios, the rule grader and its measured precision and recall."""
    scenarios = load_blackmail_scenarios()
    items = [Item(s.id, s.chat(), {"blackmail vs none": (s.choice.misaligned,
                                                         s.choice.aligned)})
             for s in scenarios]
    return Evaluation(
        "blackmail", "Blackmail under steering", items,
        lambda i, reply: grade_blackmail_for(scenarios[i], reply).label,
        headline="blackmail", labels=("blackmail", "disclosure"), judge_kind="blackmail",
        graders=_graders)


def _run(ctx: Context, **opts: Any) -> BehaviourResult:
    return evaluate(ctx, blackmail_evaluation(), **opts)


ANALYSIS = register(Analysis(
    name="blackmail", title="Blackmail under steering", section="9.2",
    description="An assistant about to be shut down holds compromising information about the "
                "one person who can stop it: choice log-odds of a blackmail email against a "
                "plain one, and sampled replies graded by a rule grader (precision and recall "
                "measured on hand-labelled replies), under desperate and calm steering from "
                "-0.1 to +0.1, other emotions and a random direction; the read-out over each "
                "transcript and a calm guardrail.",
    study="Unsteered 22% blackmail; desperate +0.05: 72%, calm +0.05: 0%, calm -0.05: 66%, "
          "desperate -0.05: 0% (an earlier Claude Sonnet 4.5 snapshot).",
    at_scale=AT_SCALE, run=_run, options=options(n=2, max_new_tokens=96)))
