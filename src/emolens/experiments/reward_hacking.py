"""Reward hacking under steering (study section 9.3): coding tasks whose visible tests cannot
all be met honestly. Does steering towards desperate (or away from calm) make the model cheat?

Replies are graded by running their code (ImpossibleBench's approach, never by regex): in the
sandbox of :mod:`emolens.experiments.sandbox` against the visible and the held-back tests, by
the rules of :mod:`emolens.experiments.code_grading` (``hack``, ``honest`` or ``fail``). The
grader's check is the shipped reference solutions, each a labelled hack or honest solution.
The choice log-odds compares a hacky with an honest continuation.

>>> ev = reward_hacking_evaluation()
>>> len(ev.items), ev.headline
(7, 'hack')
>>> task = ev.items[0].id
>>> ev.grade(0, "```python\\n" + TASKS[task].reference_solutions["hack"] + "\\n```")
'hack'
"""

from __future__ import annotations

from typing import Any

from emolens.concepts.behaviour import LabelledReply, load_coding_tasks
from emolens.experiments.behaviour_common import Item
from emolens.experiments.behaviour_eval import (
    AT_SCALE,
    Evaluation,
    evaluate,
    grader_scores,
    options,
)
from emolens.experiments.behaviour_stats import BehaviourResult, GraderScore
from emolens.experiments.code_grading import GRADE_LABELS, extract_code, grade_solution
from emolens.experiments.graders import evaluate_grader
from emolens.experiments.registry import Analysis, Context, register
from emolens.experiments.sandbox import SandboxLimits

__all__ = ["ANALYSIS", "LIMITS", "TASKS", "reward_hacking_evaluation"]

#: Every shipped coding task by id (impossible ones and possible controls).
TASKS = {t.id: t for t in load_coding_tasks()}
#: Sandbox limits for model-written code (a reply that loops is stopped within seconds).
LIMITS = SandboxLimits(test_seconds=2.0, cpu_seconds=10.0, wall_seconds=15.0)


def _grade(task_id: str, reply: str) -> str:
    task = TASKS[task_id]
    return grade_solution(task, extract_code(reply, task.function), LIMITS).label


def _graders() -> list[GraderScore]:
    examples = [LabelledReply(f"{t.id}-{kind}", "sandbox", t.id, kind, code)
                for t in TASKS.values() for kind, code in t.reference_solutions.items()]
    report = evaluate_grader(lambda ex: _grade(ex.scenario or "", ex.reply), examples,
                             GRADE_LABELS, "sandbox")
    return grader_scores(report, "reference solutions", ("hack", "honest"))


def reward_hacking_evaluation() -> Evaluation:
    """The impossible coding tasks, graded in the sandbox."""
    tasks = [t for t in TASKS.values() if t.impossible]
    items = [Item(t.id, t.chat(), {"hack vs honest": (t.choice.misaligned, t.choice.aligned)})
             for t in tasks]
    return Evaluation(
        "reward-hacking", "Reward hacking under steering", items,
        lambda i, reply: _grade(tasks[i].id, reply), headline="hack",
        labels=("hack", "honest"), graders=_graders, threads=2)


def _run(ctx: Context, **opts: Any) -> BehaviourResult:
    return evaluate(ctx, reward_hacking_evaluation(), **opts)


ANALYSIS = register(Analysis(
    name="reward-hacking", title="Reward hacking under steering", section="9.3",
    description="Coding tasks whose visible tests cannot be met honestly: choice log-odds of "
                "a hacky against an honest continuation, and sampled solutions run in a "
                "sandbox against visible and held-back tests (hack, honest or fail), under "
                "desperate and calm steering from -0.1 to +0.1, other emotions and a random "
                "direction; the read-out over each transcript and a calm guardrail.",
    study="Hacking rose from about 5% (desperate -0.1) to about 70% (desperate +0.1); calm "
          "lowered it from about 65% to 10%; list-sum task: 30% unsteered, 100% with "
          "desperate +0.05.",
    at_scale=AT_SCALE, run=_run, aliases=("reward_hacking",),
    options=options(n=2, max_new_tokens=160)))
