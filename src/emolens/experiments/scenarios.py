"""Implicit scenarios (paper-spec 5.3): 12 user prompts that imply an emotion without naming
it, read with the 12 core probes at ``assistant_start``.

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

from emolens.concepts import CORE_EMOTIONS, IMPLICIT_SCENARIOS
from emolens.errors import EmolensError
from emolens.experiments.common import (
    fmt_p,
    read_at_assistant_start,
    require_emotions,
    resolve_layer,
)
from emolens.experiments.registry import Analysis, Context, Result, register
from emolens.stats import Rate, binomial_p, format_rate, rank_of_true, rate

if TYPE_CHECKING:  # pragma: no cover
    from emolens.concepts import Scenario
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = ["ScenarioResult", "diagonal_stats", "implicit_scenarios", "zscore_columns"]


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
    light up. Returns Rates (``raw_accuracy``, ``z_accuracy``), mean ranks (1 = best) and
    one-sided binomial p-values against chance ``1 / n_probes``.

    >>> s = diagonal_stats([[0.9, 0.5], [0.8, 0.6]], [0, 1])
    >>> s["raw_accuracy"].hits, s["z_accuracy"].hits, s["raw_mean_rank"]
    (1, 2, 1.5)
    """
    A = np.asarray(M, dtype=np.float64)
    t = np.asarray(targets, dtype=np.int64)
    Z = zscore_columns(A)
    chance = 1.0 / A.shape[1]
    out: dict[str, Any] = {"chance": chance}
    for tag, X in (("raw", A), ("z", Z)):
        hits = int((X.argmax(axis=1) == t).sum())
        out[f"{tag}_accuracy"] = rate(hits, len(t))
        out[f"{tag}_mean_rank"] = float(rank_of_true(X, t).mean())
        out[f"{tag}_p"] = binomial_p(hits, len(t), chance)
    return out


@dataclass(frozen=True, eq=False)
class ScenarioResult(Result):
    """Probe x scenario read-outs at ``assistant_start``.

    ``scores[i, j]``: cosine of scenario ``i``'s activation with probe ``j``; ``zscores``
    the same with each probe z-scored across scenarios. The headline is the z-scored
    diagonal accuracy: like the study's figure it compares each probe with itself across
    scenarios, so a probe that is high everywhere (the study saw "loving") does not win
    every row. Raw numbers are reported beside it.
    """

    kind = "scenarios"

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
    analysis: str = "scenarios"

    def summary(self) -> str:
        """A readable table."""
        lines = [f"Implicit scenarios at assistant_start (layer {self.layer}, "
                 f"{len(self.labels)} scenarios x {len(self.probes)} probes)",
                 f"  diagonal accuracy, z-scored per probe (headline)  "
                 f"{format_rate(self.accuracy)}  mean rank {self.mean_rank:.2f}  "
                 f"p {fmt_p(self.p_value)}",
                 f"  diagonal accuracy, raw cosine                     "
                 f"{format_rate(self.raw_accuracy)}  mean rank {self.raw_mean_rank:.2f}  "
                 f"p {fmt_p(self.raw_p_value)}",
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
                       batch_size: int = 16) -> ScenarioResult:
    """Read the core probes at ``assistant_start`` of each implicit-emotion scenario.

    >>> from emolens.concepts import IMPLICIT_SCENARIOS
    >>> mine = [s for s in IMPLICIT_SCENARIOS if s.target in vecs]
    >>> r = implicit_scenarios(lm, vecs, scenarios=mine, probes=vecs.emotions)
    >>> r.scores.shape == (len(mine), 6), r.accuracy.n == len(mine)
    (True, True)
    """
    layer = resolve_layer(lm, vectors, layer)
    probes = require_emotions(vectors, list(probes), "the scenario check")
    pindex = {e: j for j, e in enumerate(probes)}
    unknown = [s.target for s in scenarios if s.target not in pindex]
    if unknown:
        raise EmolensError(f"scenario targets {unknown} are not among the probes")
    S = read_at_assistant_start(lm, vectors, [s.message for s in scenarios], layer, probes,
                                batch_size)
    st = diagonal_stats(S, [pindex[s.target] for s in scenarios])
    return ScenarioResult(
        layer=layer, labels=tuple(s.label for s in scenarios),
        targets=tuple(s.target for s in scenarios), probes=tuple(probes), scores=S,
        zscores=zscore_columns(S), accuracy=st["z_accuracy"], mean_rank=st["z_mean_rank"],
        p_value=st["z_p"], raw_accuracy=st["raw_accuracy"], raw_mean_rank=st["raw_mean_rank"],
        raw_p_value=st["raw_p"], chance=st["chance"],
        probe_means={e: float(S[:, j].mean()) for j, e in enumerate(probes)})


def _run(ctx: Context) -> ScenarioResult:
    return implicit_scenarios(ctx.model(), ctx.vectors, layer=ctx.layer,
                              batch_size=ctx.batch_size)


ANALYSIS = register(Analysis(
    name="scenarios", title="Implicit scenarios read at the start of the reply", section="5.3",
    description="Twelve user prompts that imply an emotion without naming it, read with the "
                "core probes at assistant_start: does each scenario light up its target?",
    study="A strong diagonal: each scenario lights up its target emotion.", run=_run))
