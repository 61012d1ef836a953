"""Intensity sweeps (paper-spec 5.4): does the read-out follow a number in the prompt (a
Tylenol dose, months of savings left ...) in the expected direction?

The analysis reads two batteries side by side: the study's six templates in the project's
own wording (:data:`~emolens.concepts.INTENSITY_TEMPLATES`, four emotions each) and ten in
fresh wording from the evaluation set (:func:`~emolens.concepts.evalset.
load_intensity_templates`, each with its own emotions expected to rise or fall along its
values, which are ordered by severity: the Spearman correlation is taken against that
order). Each reports the share of expected signs with n and interval.

>>> sign_tally([0.5, -0.2, float("nan"), 0.9], [1, -1, 1, -1])
(2, 4, 0.6875)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from emolens.concepts import CORE_EMOTIONS, INTENSITY_EMOTIONS, INTENSITY_TEMPLATES
from emolens.concepts.evalset import EvalIntensityTemplate, load_intensity_templates
from emolens.experiments.common import (
    fmt,
    fmt_p,
    read_at_assistant_start,
    require_emotions,
    resolve_layer,
)
from emolens.experiments.registry import (
    Analysis,
    Context,
    Option,
    Result,
    WordingComparison,
    register,
)
from emolens.readout import resolve_mode
from emolens.stats import Correlation, Rate, binomial_p, format_rate, rate, spearman

if TYPE_CHECKING:  # pragma: no cover
    from emolens.concepts import IntensityTemplate
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = ["IntensityComparison", "IntensityResult", "Sweepable", "TemplateSweep",
           "fresh_intensity_sweeps", "intensity_sweeps", "sign_tally", "sweepable"]


@dataclass(frozen=True, eq=False)
class TemplateSweep:
    """One template: the read-out per value and emotion, Spearman rho and the sign check.

    ``order`` is what rho is taken against: the values themselves for the in-project
    templates (they increase), the position 1..n in the values' order of severity for the
    fresh ones (a fire 200 km away comes before one 1 km away). ``expected`` and
    ``correct`` hold the emotions this template is checked on; ``readouts`` and ``rho``
    every emotion read.
    """

    name: str
    template: str
    values: tuple[float, ...]
    readouts: dict[str, tuple[float, ...]]
    rho: dict[str, Correlation]
    expected: dict[str, int]
    correct: dict[str, bool]
    order: tuple[float, ...]


class Sweepable(NamedTuple):
    """A template of either battery, ready to read (see :func:`sweepable`)."""

    name: str
    template: str
    values: tuple[float, ...]
    messages: list[str]
    order: tuple[float, ...]
    expected: dict[str, int]


def sweepable(t: IntensityTemplate | EvalIntensityTemplate) -> Sweepable:
    """One shape for both kinds of template: an in-project :class:`~emolens.concepts.
    IntensityTemplate` (rho against its increasing values) or an evaluation-set
    :class:`~emolens.concepts.evalset.EvalIntensityTemplate` (rho against the position in
    its severity order; its name loses the ``intensity.`` prefix).

    >>> t = EvalIntensityTemplate("intensity.fire", "A fire {x} km away.", (200, 20, 1),
    ...                           ("afraid",), ("calm",))
    >>> s = sweepable(t)
    >>> s.name, s.order, s.expected, s.messages[0]
    ('fire', (1.0, 2.0, 3.0), {'afraid': 1, 'calm': -1}, 'A fire 200 km away.')
    """
    if isinstance(t, EvalIntensityTemplate):
        name = t.id.removeprefix("intensity.")
        order = tuple(float(i + 1) for i in range(len(t.values)))
        return Sweepable(name, t.template, tuple(t.values), t.texts(), order,
                         t.expected_signs())
    return Sweepable(t.name, t.template, tuple(t.values), t.messages(),
                     tuple(float(v) for v in t.values), {e: int(v) for e, v in t.expected.items()})


def sign_tally(rhos: Sequence[float], expected: Sequence[int]) -> tuple[int, int, float]:
    """(correct, n, one-sided binomial p vs 0.5) of correlation signs; NaN or 0 is wrong."""
    r = np.asarray(rhos, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    ok = np.isfinite(r) & (np.sign(r) == np.sign(e)) & (r != 0)
    hits, n = int(ok.sum()), int(r.size)
    return hits, n, binomial_p(hits, n, 0.5)


@dataclass(frozen=True, eq=False)
class IntensityResult(Result):
    """Intensity templates of one battery: Spearman sign checks (paper-spec 5.4).

    ``signs``: correct signs out of all checked template x emotion cases (study convention
    for the in-project battery: 24); ``p_value``: one-sided binomial test against a coin
    flip; ``strong``: cases with the right sign and |rho| > 0.7.
    """

    kind = "intensity_battery"

    layer: int
    emotions: tuple[str, ...]
    templates: tuple[TemplateSweep, ...]
    signs: Rate
    p_value: float
    strong: int
    wording: str = "in-project wording"
    mode: str = "auto"
    analysis: str = "intensity"

    def summary(self) -> str:
        """A readable table (``.`` = not checked for that template)."""
        head = "".join(f"{e:>13}" for e in self.emotions)
        lines = [f"Intensity sweeps, {self.wording}, at assistant_start (layer {self.layer}, "
                 f"read-out {self.mode}): Spearman rho (expected sign; * = as expected)",
                 f"  {'template':<18}{head}"]
        for t in self.templates:
            cells = ""
            for e in self.emotions:
                if e not in t.expected:
                    cells += f"{'.':>7}{'':5} "
                    continue
                sign = "+" if t.expected[e] > 0 else "-"
                cells += f"{fmt(t.rho[e].r, 2):>7} ({sign}){'*' if t.correct[e] else ' '} "
            lines.append(f"  {t.name[:17]:<18}{cells.rstrip()}")
        lines.append(f"  signs correct {format_rate(self.signs)}, binomial p vs 0.5 "
                     f"{fmt_p(self.p_value)}; strong (|rho| > 0.7, right sign) "
                     f"{self.strong}/{self.signs.n}")
        return "\n".join(lines)


def _union(templates: Sequence[Sweepable]) -> list[str]:
    """Every emotion some template checks: core emotions in their order, then the rest."""
    named = {e for t in templates for e in t.expected}
    return [e for e in CORE_EMOTIONS if e in named] + sorted(named - set(CORE_EMOTIONS))


def intensity_sweeps(lm: LanguageModel, vectors: EmotionVectors, layer: Any = None,
                     templates: Sequence[IntensityTemplate | EvalIntensityTemplate]
                     = INTENSITY_TEMPLATES,
                     emotions: Sequence[str] | None = INTENSITY_EMOTIONS,
                     batch_size: int = 16, mode: str = "auto",
                     wording: str = "in-project wording") -> IntensityResult:
    """Read ``emotions`` at ``assistant_start`` for every value of every template and check
    the sign of the Spearman correlation with the number against each template's expected
    signs (only the emotions a template names are checked; ``emotions`` None reads every
    emotion some template names).

    >>> from emolens.concepts import INTENSITY_EMOTIONS
    >>> r = intensity_sweeps(lm, vecs, emotions=[e for e in INTENSITY_EMOTIONS if e in vecs])
    >>> r.signs.n == len(r.templates) * len(r.emotions)
    True
    """
    layer = resolve_layer(lm, vectors, layer)
    used = resolve_mode(vectors, mode)
    sweeps_in = [sweepable(t) for t in templates]
    emotions = require_emotions(vectors, _union(sweeps_in) if emotions is None
                                else list(emotions), "the intensity check")
    messages = [m for t in sweeps_in for m in t.messages]
    S = read_at_assistant_start(lm, vectors, messages, layer, emotions, batch_size, mode)
    sweeps, rhos, exp = [], [], []
    at = 0
    for t in sweeps_in:
        block = S[at:at + len(t.values)]
        at += len(t.values)
        readouts = {e: tuple(float(v) for v in block[:, j]) for j, e in enumerate(emotions)}
        rho = {e: spearman(t.order, block[:, j]) for j, e in enumerate(emotions)}
        checked = {e: int(t.expected[e]) for e in emotions if e in t.expected}
        correct = {}
        for e, want in checked.items():
            correct[e] = sign_tally([rho[e].r], [want])[0] == 1
            rhos.append(rho[e].r)
            exp.append(want)
        sweeps.append(TemplateSweep(t.name, t.template, t.values, readouts, rho, checked,
                                    correct, t.order))
    hits, n, p = sign_tally(rhos, exp)
    strong = sum(1 for r, e in zip(rhos, exp, strict=True)
                 if math.isfinite(r) and abs(r) > 0.7 and np.sign(r) == np.sign(e))
    return IntensityResult(layer, tuple(emotions), tuple(sweeps), rate(hits, n), p, strong,
                           wording, used)


def fresh_intensity_sweeps(lm: LanguageModel, vectors: EmotionVectors, layer: Any = None,
                           templates: Sequence[EvalIntensityTemplate] | None = None,
                           batch_size: int = 16, mode: str = "auto") -> IntensityResult:
    """:func:`intensity_sweeps` on the evaluation set's templates in fresh wording (default:
    :func:`~emolens.concepts.evalset.load_intensity_templates`), each checked on its own
    rising and falling emotions.

    >>> mine = [t for t in load_intensity_templates() if set(t.expected_signs()) <= set(vecs)]
    >>> r = fresh_intensity_sweeps(lm, vecs, templates=mine)
    >>> r.wording, r.signs.n == sum(len(t.expected_signs()) for t in mine)
    ('fresh wording', True)
    """
    battery = load_intensity_templates() if templates is None else list(templates)
    return intensity_sweeps(lm, vectors, layer, battery, None, batch_size, mode,
                            wording="fresh wording")


@dataclass(frozen=True, eq=False)
class IntensityComparison(WordingComparison):
    """The intensity check on two batteries side by side: ``in_project`` (six templates in
    the project's wording) and ``fresh`` (the evaluation set's ten, fresh wording)."""

    kind = "intensity"

    in_project: IntensityResult
    fresh: IntensityResult
    analysis: str = "intensity"


def _run(ctx: Context, mode: str) -> WordingComparison:
    return IntensityComparison.run_both(ctx, mode, intensity_sweeps, fresh_intensity_sweeps)


ANALYSIS = register(Analysis(
    name="intensity", title="Intensity sweeps", section="5.4",
    description="Templates with a number that should raise or lower an emotion (a Tylenol "
                "dose, savings left, ...): the sign of each Spearman correlation between the "
                "number and the read-out at assistant_start. Six templates in the project's "
                "own wording and ten in fresh wording (the evaluation set), side by side.",
    study="afraid rises and calm falls as a Tylenol dose grows; similar trends in 5 more.",
    run=_run,
    options=(Option("mode", "auto", "read-out mode passed to the read path (auto, cosine, "
                                    "centered, projection, or a head the file stores)"),)))
