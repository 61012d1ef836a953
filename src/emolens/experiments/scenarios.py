"""Implicit scenarios (paper-spec 5.3): 12 user prompts that imply an emotion without naming
it, read with the 12 core probes at ``assistant_start``.

The analysis reads two batteries side by side: the study's twelve in the project's own
wording (:data:`~emolens.concepts.IMPLICIT_SCENARIOS`) and twelve in fresh wording from the
evaluation set (:func:`~emolens.concepts.evalset.load_eval_scenarios`, written apart and
never used to choose anything). Each reports the target's place among the z-scored probes
(first, top 3) and the raw scores' *dominance*: how many scenarios rank the single most
frequent raw winner first (a direction that is high on every text shows as 10/12;
:func:`~emolens.experiments.outofstyle.dominance`).

>>> M = np.array([[0.3, 0.1], [0.2, 0.4], [0.5, 0.0]])
>>> s = diagonal_stats(M, [0, 1, 0])
>>> s["raw_accuracy"].hits, s["z_accuracy"].hits
(3, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.concepts import CORE_EMOTIONS, IMPLICIT_SCENARIOS, Scenario
from emolens.concepts.evalset import load_eval_scenarios
from emolens.errors import EmolensError
from emolens.experiments.common import (
    fmt_p,
    read_at_assistant_start,
    require_emotions,
    resolve_layer,
)
from emolens.experiments.outofstyle import dominance
from emolens.experiments.registry import (
    Analysis,
    Context,
    Option,
    Result,
    WordingComparison,
    register,
)
from emolens.readout import resolve_mode
from emolens.stats import Rate, binomial_p, format_rate, rank_of_true, rate

if TYPE_CHECKING:  # pragma: no cover
    from emolens.concepts.evalset import EvalScenario
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = ["ScenarioComparison", "ScenarioResult", "diagonal_stats", "fresh_scenarios",
           "implicit_scenarios", "zscore_columns"]


def zscore_columns(M: Any) -> np.ndarray:
    """Each column minus its mean, over its standard deviation (population); a constant
    column becomes 0.

    >>> zscore_columns([[1.0, 5.0], [3.0, 5.0]]).tolist()
    [[-1.0, 0.0], [1.0, 0.0]]
    """
    A = np.asarray(M, dtype=np.float64)
    sd = A.std(axis=0)
    return np.divide(A - A.mean(axis=0), sd, out=np.zeros_like(A), where=sd > 0)


def diagonal_stats(M: Any, targets: Sequence[int]) -> dict[str, Any]:
    """How often each row's target column wins, raw and after z-scoring each column.

    ``M[i, j]`` is probe ``j`` on item ``i``; ``targets[i]`` the probe item ``i`` should
    light up. Returns Rates (``raw_accuracy``, ``z_accuracy``; ``raw_top3``, ``z_top3``: the
    target among the row's 3 highest, ties favouring it), mean ranks (1 = best) and
    one-sided binomial p-values of the top-1 rates against chance ``1 / n_probes``.

    >>> s = diagonal_stats([[0.9, 0.5], [0.8, 0.6]], [0, 1])
    >>> s["raw_accuracy"].hits, s["z_accuracy"].hits, s["raw_mean_rank"]
    (1, 2, 1.5)
    """
    A = np.asarray(M, dtype=np.float64)
    t = np.asarray(targets, dtype=np.int64)
    Z = zscore_columns(A)
    chance = 1.0 / A.shape[1]
    out: dict[str, Any] = {"chance": chance, "chance_top3": min(3, A.shape[1]) / A.shape[1]}
    for tag, X in (("raw", A), ("z", Z)):
        hits = int((X.argmax(axis=1) == t).sum())
        ranks = rank_of_true(X, t)
        out[f"{tag}_accuracy"] = rate(hits, len(t))
        out[f"{tag}_top3"] = rate(int((ranks <= 3).sum()), len(t))
        out[f"{tag}_mean_rank"] = float(ranks.mean())
        out[f"{tag}_p"] = binomial_p(hits, len(t), chance)
    return out


@dataclass(frozen=True, eq=False)
class ScenarioResult(Result):
    """Probe x scenario read-outs at ``assistant_start``, for one battery of scenarios.

    ``scores[i, j]``: scenario ``i``'s read-out with probe ``j``; ``zscores`` the same with
    each probe z-scored across scenarios. The headline is the z-scored diagonal accuracy:
    like the study's figure it compares each probe with itself across scenarios, so a probe
    that is high everywhere (the study saw "loving") does not win every row. ``top3``: the
    target among the 3 highest z-scores. ``dominant``/``dominance``: the probe ranked first
    by the raw scores most often and on how many scenarios (see :func:`dominance`).
    """

    kind = "scenario_battery"

    layer: int
    labels: tuple[str, ...]
    targets: tuple[str, ...]
    probes: tuple[str, ...]
    scores: np.ndarray
    zscores: np.ndarray
    accuracy: Rate
    mean_rank: float
    p_value: float
    raw_accuracy: Rate
    raw_mean_rank: float
    raw_p_value: float
    chance: float
    probe_means: dict[str, float]
    top3: Rate
    chance_top3: float
    dominant: str
    dominance: Rate
    wording: str = "in-project wording"
    mode: str = "auto"
    analysis: str = "scenarios"

    def summary(self) -> str:
        """A readable table."""
        d = self.dominance
        lines = [f"Implicit scenarios, {self.wording}, at assistant_start (layer {self.layer}, "
                 f"read-out {self.mode}, {len(self.labels)} scenarios x {len(self.probes)} "
                 "probes)",
                 f"  diagonal accuracy, z-scored per probe (headline)  "
                 f"{format_rate(self.accuracy)}  mean rank {self.mean_rank:.2f}  "
                 f"p {fmt_p(self.p_value)}",
                 f"  target in the z-scored top 3                      "
                 f"{format_rate(self.top3)}  chance {self.chance_top3:.3f}",
                 f"  diagonal accuracy, raw read-out                   "
                 f"{format_rate(self.raw_accuracy)}  mean rank {self.raw_mean_rank:.2f}  "
                 f"p {fmt_p(self.raw_p_value)}",
                 f"  raw dominance: {self.dominant} ranks first for {d.hits} of {d.n}",
                 f"  chance {self.chance:.3f}, mean rank by chance "
                 f"{(len(self.probes) + 1) / 2:.1f}"]
        for i, (lab, tgt) in enumerate(zip(self.labels, self.targets, strict=True)):
            win = self.probes[int(self.zscores[i].argmax())]
            raw = self.probes[int(self.scores[i].argmax())]
            lines.append(f"    {lab[:28]:<28} target {tgt:<10} top (z) {win:<10} top (raw) {raw}")
        return "\n".join(lines)


def implicit_scenarios(lm: LanguageModel, vectors: EmotionVectors, layer: Any = None,
                       scenarios: Sequence[Scenario] = IMPLICIT_SCENARIOS,
                       probes: Sequence[str] = CORE_EMOTIONS,
                       batch_size: int = 16, mode: str = "auto",
                       wording: str = "in-project wording") -> ScenarioResult:
    """Read the core probes at ``assistant_start`` of each implicit-emotion scenario.

    >>> from emolens.concepts import IMPLICIT_SCENARIOS
    >>> mine = [s for s in IMPLICIT_SCENARIOS if s.target in vecs]
    >>> r = implicit_scenarios(lm, vecs, scenarios=mine, probes=vecs.emotions)
    >>> r.scores.shape == (len(mine), 6), r.accuracy.n == len(mine)
    (True, True)
    """
    layer = resolve_layer(lm, vectors, layer)
    used = resolve_mode(vectors, mode)
    probes = require_emotions(vectors, list(probes), "the scenario check")
    pindex = {e: j for j, e in enumerate(probes)}
    unknown = [s.target for s in scenarios if s.target not in pindex]
    if unknown:
        raise EmolensError(f"scenario targets {unknown} are not among the probes")
    if not scenarios:
        raise EmolensError("the scenario check needs at least one scenario")
    S = read_at_assistant_start(lm, vectors, [s.message for s in scenarios], layer, probes,
                            batch_size, mode)
    st = diagonal_stats(S, [pindex[s.target] for s in scenarios])
    top, share = dominance(S)
    return ScenarioResult(
        layer=layer, labels=tuple(s.label for s in scenarios),
        targets=tuple(s.target for s in scenarios), probes=tuple(probes), scores=S,
        zscores=zscore_columns(S), accuracy=st["z_accuracy"], mean_rank=st["z_mean_rank"],
        p_value=st["z_p"], raw_accuracy=st["raw_accuracy"], raw_mean_rank=st["raw_mean_rank"],
        raw_p_value=st["raw_p"], chance=st["chance"],
        probe_means={e: float(S[:, j].mean()) for j, e in enumerate(probes)},
        top3=st["z_top3"], chance_top3=st["chance_top3"], dominant=probes[top],
        dominance=share, wording=wording, mode=used)


def _label(text: str, words: int = 4) -> str:
    """A short row label from a message's first words.

    >>> _label("I'm on the porch with a mug of tea.")
    "I'm on the porch ..."
    """
    parts = text.split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def fresh_scenarios(lm: LanguageModel, vectors: EmotionVectors, layer: Any = None,
                    scenarios: Sequence[EvalScenario] | None = None,
                    probes: Sequence[str] = CORE_EMOTIONS, batch_size: int = 16,
                    mode: str = "auto") -> ScenarioResult:
    """:func:`implicit_scenarios` on the evaluation set's scenarios in fresh wording
    (default: :func:`~emolens.concepts.evalset.load_eval_scenarios`, one per core emotion).

    >>> from emolens.concepts.evalset import load_eval_scenarios
    >>> mine = [s for s in load_eval_scenarios() if s.emotion in vecs]
    >>> r = fresh_scenarios(lm, vecs, scenarios=mine, probes=vecs.emotions)
    >>> r.wording, r.top3.n, r.dominance.n
    ('fresh wording', 6, 6)
    """
    battery = load_eval_scenarios() if scenarios is None else list(scenarios)
    return implicit_scenarios(
        lm, vectors, layer, [Scenario(_label(s.text), s.emotion, s.text) for s in battery],
        probes, batch_size, mode, wording="fresh wording")


@dataclass(frozen=True, eq=False)
class ScenarioComparison(WordingComparison):
    """The scenario check on two batteries side by side: ``in_project`` (the study's twelve
    in the project's wording) and ``fresh`` (the evaluation set's twelve, fresh wording)."""

    kind = "scenarios"

    in_project: ScenarioResult
    fresh: ScenarioResult
    analysis: str = "scenarios"


def _run(ctx: Context, mode: str) -> WordingComparison:
    return ScenarioComparison.run_both(ctx, mode, implicit_scenarios, fresh_scenarios)


ANALYSIS = register(Analysis(
    name="scenarios", title="Implicit scenarios read at the start of the reply", section="5.3",
    description="User prompts that imply an emotion without naming it, read with the core "
                "probes at assistant_start: does each scenario light up its target? Twelve "
                "in the project's own wording and twelve in fresh wording (the evaluation "
                "set), side by side.",
    study="A strong diagonal: each scenario lights up its target emotion.", run=_run,
    options=(Option("mode", "auto", "read-out mode passed to the read path (auto, cosine, "
                                    "centered, projection, or a head the file stores)"),)))
