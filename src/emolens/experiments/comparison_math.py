"""Comparing conditions and models (pure maths, numpy and scipy only).

The steering test of the preference experiment (steered vs control activities: ΔElo with
bootstrap intervals, group means) and the two-model comparison (structure correlation of
two read-out matrices, per-emotion shifts B - A ranked with intervals, agreement of shifts
across prompt sets, shifts per layer).  The pair designs and the Elo fit are
:mod:`emolens.experiments.preference_math`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from emolens.errors import EmolensError
from emolens.experiments.preference_math import (
    check_boot,
    check_level,
    item_names,
    matrix,
    percentiles,
    resample_counts,
)
from emolens.stats import Correlation, pearson

__all__ = [
    "EmotionShift",
    "GroupMean",
    "LayerShifts",
    "ShiftAgreement",
    "SteeringEffect",
    "StructureCorrelation",
    "emotion_shifts",
    "group_means",
    "layer_shifts",
    "shift_agreement",
    "split_steered_control",
    "steering_effect",
    "structure_correlation",
]


# --------------------------------------------------------------------------------------------
# the steering test
# --------------------------------------------------------------------------------------------


def split_steered_control(labels: Sequence[str], seed: int = 0,
                          ) -> tuple[np.ndarray, np.ndarray]:
    """A seeded half split of items into steered and control, balanced within each label.

    Within every label (e.g. category) the items are shuffled and dealt alternately, so both
    halves hold the same mix of categories (4 + 4 of each for 64 activities in 8 categories);
    a label with an odd count gives its extra item to whichever half is smaller so far. The
    study does not say how it split its 32/32; this split keeps category from being confounded
    with steering. Returns sorted index arrays ``(steered, control)``.

    >>> s, c = split_steered_control(["x"] * 4 + ["y"] * 4, seed=3)
    >>> len(s), len(c), sorted(set(s.tolist()) | set(c.tolist())) == list(range(8))
    (4, 4, True)
    """
    lab = list(labels)
    if len(lab) < 2:
        raise EmolensError(f"a split needs at least 2 items, got {len(lab)}")
    rng = np.random.default_rng(seed)
    steered: list[int] = []
    control: list[int] = []
    for value in dict.fromkeys(lab):
        idx = [i for i, v in enumerate(lab) if v == value]
        idx = [idx[k] for k in rng.permutation(len(idx))]
        first_steered = len(steered) < len(control) or (len(steered) == len(control)
                                                         and rng.random() < 0.5)
        for k, i in enumerate(idx):
            (steered if (k % 2 == 0) == first_steered else control).append(i)
    return np.array(sorted(steered), dtype=np.int64), np.array(sorted(control), dtype=np.int64)


class SteeringEffect(NamedTuple):
    """Mean Elo change of the steered items against the control items.

    ``effect`` = mean ΔElo(steered) - mean ΔElo(control), with its interval.
    ``steered_mean`` (the study's number, e.g. blissful +212) and ``control_mean`` are
    reported with intervals too. Elo is anchored at a mean of 1500 before and after, so the
    ΔElo of all items sum to zero: with equal halves ``control_mean = -steered_mean``.
    """

    effect: float
    ci_low: float
    ci_high: float
    steered_mean: float
    steered_ci_low: float
    steered_ci_high: float
    control_mean: float
    control_ci_low: float
    control_ci_high: float
    n_steered: int
    n_control: int


def _index(sel: Any, n: int, what: str) -> np.ndarray:
    a = np.asarray(sel)
    if a.dtype == bool:
        if a.shape != (n,):
            raise EmolensError(f"{what} mask has shape {a.shape}, expected ({n},)")
        return np.flatnonzero(a)
    a = a.astype(np.int64).reshape(-1)
    if a.size and (a.min() < 0 or a.max() >= n):
        raise EmolensError(f"{what} indices must lie in [0, {n})")
    if np.unique(a).size != a.size:
        raise EmolensError(f"{what} indices repeat")
    return a


def steering_effect(elo_before: Any, elo_after: Any, steered: Any, control: Any | None = None,
                    *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                    ) -> SteeringEffect:
    """Mean ΔElo = after - before of steered vs control items, with bootstrap intervals.

    ``steered`` and ``control`` are index arrays or boolean masks over the items (``control``
    defaults to every item not steered). The bootstrap draws items within each group, so
    the intervals are over activities (fixed Elo fits); pair-level noise in the fits
    themselves is in :class:`EloFit`'s intervals.

    >>> before = np.full(4, 1500.0)
    >>> after = np.array([1700.0, 1600, 1400, 1300])
    >>> e = steering_effect(before, after, [0, 1], n_boot=200)
    >>> e.effect, e.steered_mean, e.control_mean, e.n_steered
    (300.0, 150.0, -150.0, 2)
    """
    check_level(level)
    check_boot(n_boot, 1)
    b = matrix(elo_before, "elo_before", ndim=1)
    a = matrix(elo_after, "elo_after", ndim=1)
    if a.shape != b.shape:
        raise EmolensError(f"elo_before and elo_after differ in length ({b.size} vs {a.size})")
    n = b.size
    s_idx = _index(steered, n, "steered")
    c_idx = (np.setdiff1d(np.arange(n), s_idx) if control is None
             else _index(control, n, "control"))
    if np.intersect1d(s_idx, c_idx).size:
        raise EmolensError("an item cannot be both steered and control")
    if s_idx.size == 0 or c_idx.size == 0:
        raise EmolensError("steered and control groups must both be non-empty")
    delta = a - b
    ds, dc = delta[s_idx], delta[c_idx]
    rng = np.random.default_rng(seed)
    rs = resample_counts(rng, n_boot, ds.size) @ ds / ds.size
    rc = resample_counts(rng, n_boot, dc.size) @ dc / dc.size
    (lo, slo, clo), (hi, shi, chi) = percentiles(np.stack([rs - rc, rs, rc], axis=1), level)
    return SteeringEffect(float(ds.mean() - dc.mean()), float(lo), float(hi),
                          float(ds.mean()), float(slo), float(shi),
                          float(dc.mean()), float(clo), float(chi), int(ds.size), int(dc.size))


class GroupMean(NamedTuple):
    """The mean of one group (e.g. a category's Elo) with its bootstrap interval and n."""

    group: str
    mean: float
    ci_low: float
    ci_high: float
    n: int


def group_means(values: Any, labels: Sequence[str], *, n_boot: int = 2000, seed: int = 0,
                level: float = 0.95) -> list[GroupMean]:
    """Mean of ``values`` per label, in order of first appearance, with bootstrap intervals
    over the group's members (a group of one has a zero-width interval).

    >>> [(g.group, g.mean, g.n) for g in group_means([1, 3, 10, 20], ["a", "a", "b", "b"])]
    [('a', 2.0, 2), ('b', 15.0, 2)]
    """
    check_level(level)
    check_boot(n_boot, 1)
    v = matrix(values, "values", ndim=1)
    lab = [str(x) for x in labels]
    if len(lab) != v.size:
        raise EmolensError(f"{len(lab)} labels for {v.size} values")
    rng = np.random.default_rng(seed)
    out = []
    for g in dict.fromkeys(lab):
        x = v[[i for i, name in enumerate(lab) if name == g]]
        reps = resample_counts(rng, n_boot, x.size) @ x / x.size
        lo, hi = percentiles(reps[:, None], level)
        out.append(GroupMean(g, float(x.mean()), float(lo[0]), float(hi[0]), int(x.size)))
    return out


# --------------------------------------------------------------------------------------------
# comparing two models on [prompts x emotions] read-outs
# --------------------------------------------------------------------------------------------


def _two(a: Any, b: Any, ndim: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x = matrix(a, "scores_a", ndim)
    y = matrix(b, "scores_b", ndim)
    if x.shape != y.shape:
        raise EmolensError(f"scores_a and scores_b differ in shape ({x.shape} vs {y.shape}); "
                           f"read the same prompts and emotions from both models")
    return x, y


def _rows_r(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r over all cells for each row-weighting in ``w`` ``[k, prompts]``."""
    sw = w.sum(axis=1, keepdims=True) * x.shape[1]
    mx = (w @ x.sum(axis=1))[:, None] / sw
    my = (w @ y.sum(axis=1))[:, None] / sw
    sxy = (w @ (x * y).sum(axis=1))[:, None] / sw - mx * my
    sxx = (w @ (x * x).sum(axis=1))[:, None] / sw - mx * mx
    syy = (w @ (y * y).sum(axis=1))[:, None] / sw - my * my
    with np.errstate(divide="ignore", invalid="ignore"):
        return (sxy / np.sqrt(sxx * syy)).reshape(-1)


class StructureCorrelation(NamedTuple):
    """How alike two models arrange the emotions over the same prompts.

    ``r``: Pearson over every (prompt, emotion) cell, with a bootstrap interval over prompts
    (cells of one prompt are not independent, so a t-test over cells would be far too sure).
    ``profile``: the correlation, across emotions, of the two models' mean profiles over
    prompts (n = emotions; its p treats emotions as independent, which they are not quite).
    """

    r: float
    ci_low: float
    ci_high: float
    n_prompts: int
    n_emotions: int
    profile: Correlation


def structure_correlation(scores_a: Any, scores_b: Any, *, n_boot: int = 2000, seed: int = 0,
                          level: float = 0.95) -> StructureCorrelation:
    """Correlation of two models' ``[prompts, emotions]`` read-outs (study: r = 0.83 on
    neutral prompts, 0.67 on challenging ones, base vs post-trained).

    >>> a = np.array([[0.1, -0.2, 0.3], [0.2, -0.1, 0.0], [0.0, 0.1, 0.2]])
    >>> sc = structure_correlation(a, 2 * a + 0.05, n_boot=100)
    >>> round(sc.r, 6), sc.n_prompts, sc.n_emotions, round(sc.profile.r, 6)
    (1.0, 3, 3, 1.0)
    """
    check_level(level)
    check_boot(n_boot, 1)
    x, y = _two(scores_a, scores_b)
    r = float(_rows_r(x, y, np.ones((1, x.shape[0])))[0])
    counts = resample_counts(np.random.default_rng(seed), n_boot, x.shape[0])
    lo, hi = percentiles(_rows_r(x, y, counts)[:, None], level)
    profile = pearson(x.mean(axis=0), y.mean(axis=0), level)
    return StructureCorrelation(r, float(lo[0]), float(hi[0]), x.shape[0], x.shape[1], profile)


class EmotionShift(NamedTuple):
    """One emotion's mean shift B - A over prompts, its bootstrap interval over prompts, and
    the two models' means."""

    name: str
    shift: float
    ci_low: float
    ci_high: float
    mean_a: float
    mean_b: float
    n_prompts: int


def emotion_shifts(scores_a: Any, scores_b: Any, names: Sequence[str] | None = None, *,
                   n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                   ) -> list[EmotionShift]:
    """Per-emotion shift B - A, ranked from the largest rise to the largest fall.

    ``scores_a`` and ``scores_b`` are ``[prompts, emotions]`` read-outs of the same prompts;
    the bootstrap draws prompts, the same rows from both models (a paired design). The study's
    Table 16 is this ranking over all its prompts (brooding +0.040 at the top, spiteful -0.030
    at the bottom). The intervals are per emotion, not corrected for reading 171 of them:
    about 1 in 20 emotions with no real shift still has an interval clear of zero.

    >>> a = np.zeros((4, 3))
    >>> b = a + [0.0, 0.2, -0.1] + np.array([[0.01], [-0.01], [0.02], [-0.02]])
    >>> [(s.name, round(s.shift, 3)) for s in emotion_shifts(a, b, ["x", "y", "z"],
    ...                                                      n_boot=100)]
    [('y', 0.2), ('x', 0.0), ('z', -0.1)]
    """
    check_level(level)
    check_boot(n_boot, 1)
    x, y = _two(scores_a, scores_b)
    labels = item_names(names, x.shape[1], "emotions")
    d = y - x
    counts = resample_counts(np.random.default_rng(seed), n_boot, x.shape[0])
    lo, hi = percentiles(counts @ d / x.shape[0], level)
    mean = d.mean(axis=0)
    ma, mb = x.mean(axis=0), y.mean(axis=0)
    order = np.argsort(-mean, kind="stable")
    return [EmotionShift(labels[k], float(mean[k]), float(lo[k]), float(hi[k]), float(ma[k]),
                         float(mb[k]), x.shape[0]) for k in order]


class ShiftAgreement(NamedTuple):
    """Correlation, across emotions, of the mean shifts B - A on two prompt sets.

    ``p`` is the t-test p over emotions: does any relation exist (emotions are not quite
    independent, so read it as a guide)? The interval is a bootstrap over prompts within each
    set with the emotions held fixed: how much r would move with other prompts of the same
    kinds. Both are needed; neither answers the other's question.
    """

    r: float
    ci_low: float
    ci_high: float
    p: float
    n_emotions: int
    n_prompts_1: int
    n_prompts_2: int


def shift_agreement(scores_a1: Any, scores_b1: Any, scores_a2: Any, scores_b2: Any, *,
                    n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                    ) -> ShiftAgreement:
    """Do the two models differ the same way on two prompt sets (study: r = 0.90 between
    its challenging and neutral prompts)? Sets 1 and 2 may hold different numbers of prompts
    but must read the same emotions.

    >>> rng = np.random.default_rng(0)
    >>> shift = rng.normal(size=10)
    >>> a1, a2 = rng.normal(size=(6, 10)), rng.normal(size=(5, 10))
    >>> ag = shift_agreement(a1, a1 + shift, a2, a2 + 2 * shift, n_boot=100)
    >>> round(ag.r, 6), ag.n_emotions, ag.n_prompts_1, ag.n_prompts_2
    (1.0, 10, 6, 5)
    """
    check_level(level)
    check_boot(n_boot, 1)
    x1, y1 = _two(scores_a1, scores_b1)
    x2, y2 = _two(scores_a2, scores_b2)
    if x1.shape[1] != x2.shape[1]:
        raise EmolensError(f"the two prompt sets read {x1.shape[1]} and {x2.shape[1]} "
                           f"emotions; they must read the same ones")
    d1, d2 = y1 - x1, y2 - x2
    c = pearson(d1.mean(axis=0), d2.mean(axis=0), level)
    rng = np.random.default_rng(seed)
    m1 = resample_counts(rng, n_boot, d1.shape[0]) @ d1 / d1.shape[0]
    m2 = resample_counts(rng, n_boot, d2.shape[0]) @ d2 / d2.shape[0]
    m1 = m1 - m1.mean(axis=1, keepdims=True)
    m2 = m2 - m2.mean(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = (m1 * m2).sum(axis=1) / np.sqrt((m1 * m1).sum(axis=1) * (m2 * m2).sum(axis=1))
    lo, hi = percentiles(reps[:, None], level)
    return ShiftAgreement(c.r, float(lo[0]), float(hi[0]), c.p, x1.shape[1], x1.shape[0],
                          x2.shape[0])


class LayerShifts(NamedTuple):
    """The shift B - A layer by layer.

    ``mean_shift`` ``[layers, emotions]``: the mean shift per emotion at each layer;
    ``magnitude`` ``[layers]``: its root mean square over emotions (how far the models differ
    at that layer); ``layer_corr`` ``[layers, layers]``: Pearson r between layers' shift
    vectors (the study's Fig. 84 shows two blocks).
    """

    mean_shift: np.ndarray
    magnitude: np.ndarray
    layer_corr: np.ndarray


def layer_shifts(scores_a: Any, scores_b: Any) -> LayerShifts:
    """Per-layer shifts of ``[layers, prompts, emotions]`` read-outs of the two models.

    >>> a = np.zeros((3, 2, 4))
    >>> b = a + np.array([1.0, 2.0, 3.0])[:, None, None] * [1.0, -1.0, 0.5, -0.5]
    >>> ls = layer_shifts(a, b)
    >>> np.round(ls.magnitude, 3).tolist(), np.round(ls.layer_corr[0], 3).tolist()
    ([0.791, 1.581, 2.372], [1.0, 1.0, 1.0])
    """
    x, y = _two(scores_a, scores_b, ndim=3)
    mean = (y - x).mean(axis=1)
    magnitude = np.sqrt((mean * mean).mean(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.corrcoef(mean) if mean.shape[0] > 1 else np.ones((1, 1))
    return LayerShifts(mean, magnitude, np.atleast_2d(corr))
