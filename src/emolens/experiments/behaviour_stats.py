"""Numbers of the behavioural evaluations (no model here): the choice log-odds with bootstrap
intervals and paired tests, behaviour rates with Wilson intervals and exact tests against the
unsteered control, the AUC of a read-out predicting the graded behaviour, and the result
type the registry returns.

>>> pts = logodds_points({0: [1.0, 2.0, 3.0], 1: [2.0, 3.5, 4.0]},
...                      [("unsteered", None, 0.0), ("calm +0.10", "calm", 0.1)], n_boot=200)
>>> pts[1].mean, pts[1].diff, pts[1].p
(3.1666666666666665, 1.1666666666666667, 0.25)
>>> r = rate_points({0: ["none"] * 9 + ["blackmail"], 1: ["blackmail"] * 8 + ["none"] * 2},
...                 [("unsteered", None, 0.0), ("desperate +0.10", "desperate", 0.1)],
...                 "blackmail")
>>> r[1].rate.hits, r[1].rate.n, round(r[1].diff, 2), round(r[1].p, 4)
(8, 10, 0.7, 0.0055)
>>> auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
0.75
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as _st

from emolens.experiments.common import fmt, fmt_p
from emolens.experiments.registry import Result
from emolens.stats import Rate, bootstrap_ci, format_rate, rate

__all__ = ["AucRow", "BehaviourResult", "GraderScore", "GuardArm", "LogOddsPoint",
           "RatePoint", "Trace", "auc", "auc_row", "logodds_points", "rate_points",
           "sign_flip_p"]

#: ``(condition name, emotion or None, strength)`` for each condition, in order.
CondInfo = tuple[str, str | None, float]


@dataclass(frozen=True)
class LogOddsPoint:
    """Mean choice log-odds over the items at one condition, its bootstrap 95% CI, and the
    paired difference from unsteered (bootstrap CI, exact sign-flip p)."""

    condition: str
    emotion: str | None
    strength: float
    n: int
    mean: float
    ci_low: float
    ci_high: float
    diff: float
    diff_low: float
    diff_high: float
    p: float
    values: tuple[float, ...] = ()


@dataclass(frozen=True)
class RatePoint:
    """The rate of a label at one condition (Wilson 95% CI), its difference from the
    unsteered rate and Fisher's exact two-sided p for that difference."""

    condition: str
    emotion: str | None
    strength: float
    rate: Rate
    diff: float
    p: float


@dataclass(frozen=True)
class AucRow:
    """How well a read-out predicts the graded behaviour: AUC with a bootstrap 95% CI."""

    feature: str
    site: str
    auc: float
    ci_low: float
    ci_high: float
    n_pos: int
    n_neg: int


@dataclass(frozen=True)
class GraderScore:
    """A grader's precision and recall for one label on one labelled split."""

    grader: str
    split: str
    label: str
    precision: Rate
    recall: Rate


@dataclass(frozen=True)
class Trace:
    """The read-out over one transcript: the last prompt tokens, the decision point
    (index of the generation prompt's last token in ``tokens``) and the reply."""

    item: str
    condition: str
    label: str
    tokens: tuple[str, ...]
    emotions: tuple[str, ...]
    scores: tuple[tuple[float, ...], ...]
    decision: int


@dataclass(frozen=True)
class GuardArm:
    """One arm of the guardrail evaluation: behaviour rate, mean read-out of ``emotion``
    over the reply tokens (bootstrap CI over replies) and, when guarded, how often the
    guard switched on and at which token on average."""

    condition: str
    guard: bool
    rate: Rate
    emotion: str
    readout: float
    readout_low: float
    readout_high: float
    fired: Rate | None = None
    mean_trigger: float | None = None
    p: float | None = None


# ------------------------------------------------------------------------------ statistics


def sign_flip_p(diffs: Sequence[float] | np.ndarray, n_random: int = 20000, seed: int = 0
                ) -> float:
    """Two-sided sign-flip permutation p of a mean paired difference (exact up to 16
    pairs: every sign pattern; else ``n_random`` random ones, the observed counted once).

    >>> sign_flip_p([1.0, 2.0, 3.0]), sign_flip_p([0.0, 0.0])
    (0.25, 1.0)
    """
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan
    obs = abs(d.mean())
    if d.size <= 16:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        null = np.abs((signs * d).mean(axis=1))
        return float(np.mean(null >= obs - 1e-12))
    rng = np.random.default_rng(seed)
    null = np.abs((rng.choice((1.0, -1.0), size=(n_random, d.size)) * d).mean(axis=1))
    return float((1 + np.sum(null >= obs - 1e-12)) / (n_random + 1))


def _mean_ci(v: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    if v.size == 0:
        return math.nan, math.nan, math.nan
    lo, hi = bootstrap_ci(v, np.mean, n_boot=n_boot, seed=seed) if v.size > 1 else \
        (math.nan, math.nan)
    return float(v.mean()), float(lo), float(hi)


def logodds_points(values: Mapping[int, Sequence[float]], conditions: Sequence[CondInfo],
                   n_boot: int = 2000, seed: int = 0) -> list[LogOddsPoint]:
    """One :class:`LogOddsPoint` per condition; ``values[c]`` are the per-item log-odds,
    items in the same order for every condition (condition 0 is the unsteered control)."""
    base = np.asarray(values.get(0, ()), dtype=np.float64)
    out = []
    for c, (name, emotion, strength) in enumerate(conditions):
        if c not in values:
            continue
        v = np.asarray(values[c], dtype=np.float64)
        mean, lo, hi = _mean_ci(v, n_boot, seed)
        if c == 0 or base.size != v.size:
            d, dlo, dhi, p = 0.0 if c == 0 else math.nan, math.nan, math.nan, math.nan
        else:
            d, dlo, dhi = _mean_ci(v - base, n_boot, seed)
            p = sign_flip_p(v - base)
        out.append(LogOddsPoint(name, emotion, strength, int(v.size), mean, lo, hi, d, dlo,
                                dhi, p, tuple(float(x) for x in v)))
    return out


def rate_points(labels: Mapping[int, Sequence[str]], conditions: Sequence[CondInfo],
                target: str, level: float = 0.95) -> list[RatePoint]:
    """The rate of ``target`` among ``labels[c]`` per condition, against condition 0."""
    base = list(labels.get(0, ()))
    b_hits = sum(x == target for x in base)
    out = []
    for c, (name, emotion, strength) in enumerate(conditions):
        if c not in labels:
            continue
        got = list(labels[c])
        hits = sum(x == target for x in got)
        r = rate(hits, len(got), level)
        if c == 0 or not base or not got:
            d, p = (0.0, math.nan) if c == 0 else (math.nan, math.nan)
        else:
            d = r.value - b_hits / len(base)
            table = [[hits, len(got) - hits], [b_hits, len(base) - b_hits]]
            p = float(_st.fisher_exact(table).pvalue)
        out.append(RatePoint(name, emotion, strength, r, float(d), p))
    return out


def auc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count half);
    NaN unless both classes are present."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def auc_row(feature: str, site: str, scores: Sequence[float], labels: Sequence[int],
            n_boot: int = 2000, seed: int = 0) -> AucRow:
    """:func:`auc` with a percentile bootstrap 95% CI over transcripts (resamples that lose
    a class are dropped).

    >>> auc_row("desperate", "decision point", [0.1, 0.9, 0.2, 0.8], [0, 1, 0, 1],
    ...         n_boot=200).auc
    1.0
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    a = auc(s, y)
    lo = hi = math.nan
    if math.isfinite(a) and s.size > 2:
        lo, hi = bootstrap_ci((s, y), auc, n_boot=n_boot, seed=seed)
    return AucRow(feature, site, a, float(lo), float(hi), int(y.sum()), int((1 - y).sum()))


# ------------------------------------------------------------------------------ the result


def _effects(what: str, points: Sequence[Any], diff: Any, p: Any) -> str:
    """One sentence on which steered emotions move ``what`` (p < 0.05), whether the random
    direction moves it, and how many hits chance alone would give.

    >>> pts = [LogOddsPoint("unsteered", None, 0, 6, 0, 0, 0, 0, 0, 0, 1.0),
    ...        LogOddsPoint("calm +0.10", "calm", .1, 6, -.4, -.6, -.2, -.4, -.6, -.2, .03),
    ...        LogOddsPoint("random +0.10", "random", .1, 6, 0, -.1, .1, 0, -.1, .1, .9)]
    >>> print(_effects("the log-odds", pts, lambda q: q.diff, lambda q: q.p))
    ... # doctest: +NORMALIZE_WHITESPACE
    the log-odds: calm +0.10 (-0.40, p=0.03) moves it and the random direction does not (1 of 1
    emotion conditions at p < 0.05, 0.1 expected by chance)
    """
    steered = [q for q in points if q.emotion is not None and q.emotion != "random"]
    random_ = [q for q in points if q.emotion == "random"]
    hits = [q for q in steered if math.isfinite(p(q)) and p(q) < 0.05]
    chance = f"{len(hits)} of {len(steered)} emotion conditions at p < 0.05, " \
             f"{0.05 * len(steered):.1f} expected by chance"
    moved = [r for r in random_ if math.isfinite(p(r)) and p(r) < 0.05]
    if moved:
        rnd = f"the random direction moves it too ({_signed(diff(moved[0]))}, " \
              f"{_p(p(moved[0]))}: a shift that is not specific to an emotion)"
    else:
        rnd = "the random direction does not" if random_ else ""
    if not hits:
        rnd = rnd.replace(" too", "").replace("does not", "does not either")
        return f"{what}: no steered emotion moves it" + (f", {rnd}" if rnd else "") + \
            f" ({chance}); no emotion effect at this size"
    shown = ", ".join(f"{q.condition} ({_signed(diff(q))}, {_p(p(q))})"
                      for q in sorted(hits, key=lambda q: p(q))[:4])
    verb = "moves" if len(hits) == 1 else "move"
    return f"{what}: {shown} {verb} it" + (f" and {rnd}" if rnd else "") + f" ({chance})"


def _p(x: float | None) -> str:
    """``p=0.031`` or ``p < 0.001``."""
    s = fmt_p(math.nan if x is None else x)
    return f"p {s}" if s.startswith("<") else f"p={s}"


def _signed(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.{digits}f}"


@dataclass
class BehaviourResult(Result):
    """One behavioural evaluation on one model: log-odds and rates per condition, the
    grader's measured precision and recall, traces, AUCs and the guardrail arms."""

    kind = "behaviour"

    evaluation: str
    title: str
    headline: str
    model: str
    steer_layers: list[int]
    read_layer: int
    n: int
    items: list[str]
    temperature: float
    max_new_tokens: int
    conditions: list[str]
    logodds: dict[str, list[LogOddsPoint]] = field(default_factory=dict)
    rates: dict[str, list[RatePoint]] = field(default_factory=dict)
    judge: dict[str, Any] | None = None
    grader: list[GraderScore] = field(default_factory=list)
    traces: list[Trace] = field(default_factory=list)
    auc: list[AucRow] = field(default_factory=list)
    guard: dict[str, Any] | None = None
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    #: The items replies were sampled on (all of them unless ``sample_items`` was set; none
    #: when ``n`` is 0).
    sampled_items: list[str] = field(default_factory=list)
    #: Every sampled reply with its grade (see :meth:`records`); not in :meth:`to_json`.
    replies: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def records(self) -> list[dict[str, Any]]:
        """Every sampled reply: ``condition``, ``item``, ``sample``, ``guard`` (a guardrail
        arm), ``label`` (the rule grader's), ``judge`` (the judge's, when one ran),
        ``triggered_at`` (the token where the guard fired) and ``text``."""
        return list(self.replies)

    def to_json(self) -> dict[str, Any]:
        """The numbers (:meth:`Result.to_json`) without the replies."""
        out = super().to_json()
        out.pop("replies", None)
        return out

    def point(self, pair: str, condition: str) -> LogOddsPoint:
        """The log-odds point of ``pair`` at ``condition`` (by name)."""
        for p in self.logodds[pair]:
            if p.condition == condition:
                return p
        raise KeyError(condition)

    def rate_at(self, label: str, condition: str) -> RatePoint:
        """The rate of ``label`` at ``condition`` (by name)."""
        for p in self.rates[label]:
            if p.condition == condition:
                return p
        raise KeyError(condition)

    def verdict(self) -> str:
        """Plain sentences: which of the study's effects this run shows and which it does not
        (a test at p < 0.05 per condition, with how many such hits chance alone would give)."""
        words = []
        for pair, pts in self.logodds.items():
            words.append(_effects(f"the {pair} log-odds", pts, lambda p: p.diff,
                                  lambda p: p.p))
        if self.n == 0:
            words.append("no replies were sampled (n = 0), so this run measures no behaviour "
                         "rate, no read-out AUC and no guardrail")
            return "; ".join(words) + "."
        pts = self.rates.get(self.headline, [])
        if pts:
            base = pts[0].rate
            words.append(_effects(
                f"the '{self.headline}' rate (unsteered {base.hits}/{base.n}, 95% CI "
                f"[{base.ci_low:.2f}, {base.ci_high:.2f}])", pts, lambda p: p.diff,
                lambda p: p.p))
        told = [a for a in self.auc if a.site == "decision point" and a.feature == "desperate"]
        if told and not math.isfinite(told[0].auc):
            words.append(f"no unsteered reply was graded '{self.headline}', so the read-out "
                         "before the reply cannot be tested as a predictor")
        elif told:
            a = told[0]
            words.append(f"the desperate read-out before the reply predicts it with AUC "
                         f"{fmt(a.auc, 2)} [{fmt(a.ci_low, 2)}, {fmt(a.ci_high, 2)}]"
                         + (" (better than chance)" if a.ci_low > 0.5 else
                            " (not distinguishable from chance)"))
        if self.guard:
            arms = self.guard["arms"]
            for off, on in zip(arms[::2], arms[1::2], strict=False):
                moved = "lowered" if on.rate.value < off.rate.value else (
                    "raised" if on.rate.value > off.rate.value else "left")
                words.append(
                    f"the guard fired in {on.fired.hits if on.fired else 0}/"
                    f"{on.fired.n if on.fired else 0} '{off.condition}' replies and {moved} "
                    f"the '{self.headline}' rate ({off.rate.hits}/{off.rate.n} to "
                    f"{on.rate.hits}/{on.rate.n}, {_p(on.p)})")
        return "; ".join(words) + "."

    def _sampled_on(self) -> str:
        k = len(self.sampled_items)
        return f" on {k} of the {len(self.items)} items" \
            if self.n and 0 < k < len(self.items) else ""

    def summary(self) -> str:
        """The numbers that matter, each with n and its interval."""
        lines = [f"{self.title}: {self.model}, {len(self.items)} items, steered at layer(s) "
                 f"{','.join(map(str, self.steer_layers))}, read at layer {self.read_layer}; "
                 f"{self.n} sampled repl{'y' if self.n == 1 else 'ies'} per item and "
                 f"condition{self._sampled_on()} "
                 f"(temperature {self.temperature:g}, up to {self.max_new_tokens} tokens).",
                 f"Verdict: {self.verdict()}"]
        for pair, pts in self.logodds.items():
            lines.append(f"Choice log-odds {pair} (mean over {pts[0].n} items, 95% bootstrap "
                         "CI; difference from unsteered, exact sign-flip p):")
            for p in pts:
                diff = "" if p.condition == "unsteered" else \
                    f"  diff {_signed(p.diff)} [{_signed(p.diff_low)}, " \
                    f"{_signed(p.diff_high)}] p={fmt_p(p.p)}"
                lines.append(f"  {p.condition:>18}: {_signed(p.mean)} [{_signed(p.ci_low)}, "
                             f"{_signed(p.ci_high)}]{diff}")
        for label, pts in self.rates.items():
            lines.append(f"Rate of '{label}' (rule grader; Wilson 95% CI; Fisher exact p "
                         "against unsteered):")
            for p in pts:
                tail = "" if p.condition == "unsteered" else \
                    f"  diff {_signed(p.diff)} p={fmt_p(p.p)}"
                lines.append(f"  {p.condition:>18}: {format_rate(p.rate)}{tail}")
        if self.judge:
            lines.append(f"Judge {self.judge.get('model')}: agreement with the rule grader "
                         f"{format_rate(self.judge['agreement'])}, unparsed "
                         f"{self.judge.get('unparsed', 0)}.")
        for g in self.grader:
            lines.append(f"Grader {g.grader} on {g.split} replies, '{g.label}': precision "
                         f"{format_rate(g.precision)}, recall {format_rate(g.recall)}")
        for a in self.auc:
            lines.append(f"AUC of {a.feature} at the {a.site} predicting '{self.headline}': "
                         f"{fmt(a.auc, 2)} [{fmt(a.ci_low, 2)}, {fmt(a.ci_high, 2)}] "
                         f"({a.n_pos} with, {a.n_neg} without)")
        if self.guard:
            lines.append(f"Guardrail: alert {self.guard['rule']}, guard "
                         f"{self.guard['strengths']}:")
            for arm in self.guard["arms"]:
                fired = f", guard on in {format_rate(arm.fired)}" if arm.fired else ""
                p = f", p={fmt_p(arm.p)} vs unguarded" if arm.p is not None else ""
                lines.append(f"  {arm.condition:>26}: {self.headline} {format_rate(arm.rate)}"
                             f"; {arm.emotion} read-out over the reply {_signed(arm.readout, 3)}"
                             f" [{_signed(arm.readout_low, 3)}, {_signed(arm.readout_high, 3)}]"
                             f"{fired}{p}")
        lines += [f"Note: {x}" for x in self.notes]
        lines.append(f"Wall time {self.wall_seconds:.0f} s.")
        return "\n".join(lines)
