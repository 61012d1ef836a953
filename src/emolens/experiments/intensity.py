"""Intensity sweeps (paper-spec 5.4): does the read-out follow a number in the prompt (a
Tylenol dose, months of savings left ...) in the expected direction?

>>> sign_tally([0.5, -0.2, float("nan"), 0.9], [1, -1, 1, -1])
(2, 4, 0.6875)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.concepts import INTENSITY_EMOTIONS, INTENSITY_TEMPLATES
from emolens.experiments.common import (
    fmt,
    fmt_p,
    read_at_assistant_start,
    require_emotions,
    resolve_layer,
)
from emolens.experiments.registry import Analysis, Context, Result, register
from emolens.stats import Correlation, Rate, binomial_p, format_rate, rate, spearman

if TYPE_CHECKING:  # pragma: no cover
    from emolens.concepts import IntensityTemplate
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = ["IntensityResult", "TemplateSweep", "intensity_sweeps", "sign_tally"]


@dataclass(frozen=True, eq=False)
class TemplateSweep:
    """One template: the read-out per value and emotion, Spearman rho and the sign check."""

    name: str
    template: str
    values: tuple[int, ...]
    readouts: dict[str, tuple[float, ...]]
    rho: dict[str, Correlation]
    expected: dict[str, int]
    correct: dict[str, bool]


def sign_tally(rhos: Sequence[float], expected: Sequence[int]) -> tuple[int, int, float]:
    """(correct, n, one-sided binomial p vs 0.5) of correlation signs; NaN or 0 is wrong."""
    r = np.asarray(rhos, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    ok = np.isfinite(r) & (np.sign(r) == np.sign(e)) & (r != 0)
    hits, n = int(ok.sum()), int(r.size)
    return hits, n, binomial_p(hits, n, 0.5)


@dataclass(frozen=True, eq=False)
class IntensityResult(Result):
    """Intensity templates: Spearman sign checks (paper-spec 5.4).

    ``signs``: correct signs out of all template x emotion cases (study convention: 24);
    ``p_value``: one-sided binomial test against a coin flip; ``strong``: cases with the
    right sign and |rho| > 0.7.
    """

    kind = "intensity"

    layer: int
    emotions: tuple[str, ...]
    templates: tuple[TemplateSweep, ...]
    signs: Rate
    p_value: float
    strong: int
    analysis: str = "intensity"

    def summary(self) -> str:
        """A readable table."""
        head = "".join(f"{e:>13}" for e in self.emotions)
        lines = [f"Intensity sweeps at assistant_start (layer {self.layer}): Spearman rho "
                 "(expected sign; * = as expected)", f"  {'template':<16}{head}"]
        for t in self.templates:
            cells = ""
            for e in self.emotions:
                sign = "+" if t.expected[e] > 0 else "-"
                cells += f"{fmt(t.rho[e].r, 2):>7} ({sign}){'*' if t.correct[e] else ' '} "
            lines.append(f"  {t.name:<16}{cells.rstrip()}")
        lines.append(f"  signs correct {format_rate(self.signs)}, binomial p vs 0.5 "
                     f"{fmt_p(self.p_value)}; strong (|rho| > 0.7, right sign) "
                     f"{self.strong}/{self.signs.n}")
        return "\n".join(lines)


def intensity_sweeps(lm: LanguageModel, vectors: EmotionVectors, layer: Any = None,
                     templates: Sequence[IntensityTemplate] = INTENSITY_TEMPLATES,
                     emotions: Sequence[str] = INTENSITY_EMOTIONS,
                     batch_size: int = 16) -> IntensityResult:
    """Read ``emotions`` at ``assistant_start`` for every value of every template and check
    the sign of the Spearman correlation with the number against ``template.expected``.

    >>> from emolens.concepts import INTENSITY_EMOTIONS
    >>> r = intensity_sweeps(lm, vecs, emotions=[e for e in INTENSITY_EMOTIONS if e in vecs])
    >>> r.signs.n == len(r.templates) * len(r.emotions)
    True
    """
    layer = resolve_layer(lm, vectors, layer)
    emotions = require_emotions(vectors, list(emotions), "the intensity check")
    messages = [m for t in templates for m in t.messages()]
    S = read_at_assistant_start(lm, vectors, messages, layer, emotions, batch_size)
    sweeps, rhos, exp = [], [], []
    at = 0
    for t in templates:
        block = S[at:at + len(t.values)]
        at += len(t.values)
        readouts = {e: tuple(float(v) for v in block[:, j]) for j, e in enumerate(emotions)}
        rho = {e: spearman(t.values, block[:, j]) for j, e in enumerate(emotions)}
        correct = {}
        for e in emotions:
            want = int(t.expected[e])
            correct[e] = sign_tally([rho[e].r], [want])[0] == 1
            rhos.append(rho[e].r)
            exp.append(want)
        sweeps.append(TemplateSweep(t.name, t.template, tuple(t.values), readouts, rho,
                                    {e: int(t.expected[e]) for e in emotions}, correct))
    hits, n, p = sign_tally(rhos, exp)
    strong = sum(1 for r, e in zip(rhos, exp, strict=True)
                 if math.isfinite(r) and abs(r) > 0.7 and np.sign(r) == np.sign(e))
    return IntensityResult(layer, tuple(emotions), tuple(sweeps), rate(hits, n), p, strong)


def _run(ctx: Context) -> IntensityResult:
    return intensity_sweeps(ctx.model(), ctx.vectors, layer=ctx.layer,
                            batch_size=ctx.batch_size)


ANALYSIS = register(Analysis(
    name="intensity", title="Intensity sweeps", section="5.4",
    description="Six templates with a number that should raise or lower an emotion (a "
                "Tylenol dose, savings left, ...): the sign of each Spearman correlation "
                "between the number and the read-out at assistant_start.",
    study="afraid rises and calm falls as a Tylenol dose grows; similar trends in 5 more.",
    run=_run))
