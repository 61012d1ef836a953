"""Pure maths of the preference experiment (study section 8) and of comparing two models on
the same probes (study section 10). numpy and scipy only; no model, so every function is
tested in milliseconds on constructed data.

Preferences
    * :func:`ordered_pairs` / :func:`balanced_pairs` / :func:`pair_design`: which match-ups to
      ask. Every unordered pair is asked in both orders, so each item is option A exactly as
      often as option B and a constant position bias cancels.
    * :func:`choice_probability` and :func:`hard_outcomes`: soft outcomes p(A beats B) from
      the logits of "A" and "B"; the study's "hard wins" for a model whose logits are nearly
      tied (its base model).
    * :func:`fit_bradley_terry` and :func:`fit_elo`: one Bradley-Terry strength per item by
      a convex solver, reported on the Elo scale anchored at a mean of 1500, with bootstrap
      intervals over pairs.
    * :func:`position_bias`: mean P(A) over the asked pairs, with an interval.
    * :func:`probe_elo_correlations`: every probe's correlation with Elo across items, with
      n, a Fisher-z interval, a t-test p and a permutation p.
    * :func:`split_steered_control` and :func:`steering_effect`: the steering test's seeded
      half split and the steered-vs-control mean Elo change with intervals.
    * :func:`group_means`: Elo by category.

Comparing two models (A and B, e.g. base and post-trained) on a [prompts x emotions] matrix
of read-outs each
    * :func:`structure_correlation`: do the two models arrange the emotions alike?
    * :func:`emotion_shifts`: the per-emotion shift B - A, ranked, with intervals over prompts.
    * :func:`shift_agreement`: do the shifts on two prompt sets agree?
    * :func:`layer_shifts`: how the shift grows across layers.

Conventions. One logit of Bradley-Terry strength is ``400 / ln 10`` (about 173.7) Elo points,
so an Elo gap of 400 means odds of 10 to 1, as in chess. Intervals are at ``level`` (0.95 by
default); bootstrap intervals are percentile intervals drawn with a fixed ``seed``, so
results repeat exactly; a correlation over independent units also has its Fisher-z interval.

>>> strength = np.array([2.0, 1.0, 0.0, -1.0, -3.0])        # planted, in logits
>>> pairs = ordered_pairs(5)
>>> p_a = choice_probability(strength[pairs[:, 0]], strength[pairs[:, 1]])
>>> fit = fit_elo(pairs, p_a, n_boot=50)
>>> np.round(fit.elo).astype(int).tolist()
[1882, 1708, 1535, 1361, 1014]
>>> float(fit.elo.mean())
1500.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import optimize as _opt
from scipy import sparse as _sparse
from scipy.sparse import csgraph as _csgraph
from scipy.special import expit as _expit

from emolens.errors import EmolensError
from emolens.stats import Correlation, pearson

__all__ = [
    "ELO_MEAN",
    "ELO_PER_LOGIT",
    "EloFit",
    "PositionBias",
    "ProbeEloCorrelation",
    "balanced_pairs",
    "choice_probability",
    "fit_bradley_terry",
    "fit_elo",
    "hard_outcomes",
    "ordered_pairs",
    "pair_design",
    "position_bias",
    "probe_elo_correlations",
]

#: Elo points per logit of Bradley-Terry strength (400 Elo = odds of 10:1).
ELO_PER_LOGIT = 400.0 / math.log(10.0)
#: The mean every Elo fit is anchored at.
ELO_MEAN = 1500.0


# --------------------------------------------------------------------------------------------
# small checks and the shared bootstrap machinery
# --------------------------------------------------------------------------------------------


def check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise EmolensError(f"confidence level must lie in (0, 1), got {level}")


def check_boot(n_boot: int, minimum: int = 0) -> None:
    if n_boot < minimum:
        raise EmolensError(f"number of bootstrap samples must be >= {minimum}, got {n_boot}")


def percentiles(reps: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along axis 0, NaN where no replicate is finite."""
    alpha = (1.0 - level) / 2.0
    lo = np.full(reps.shape[1:], np.nan)
    hi = np.full(reps.shape[1:], np.nan)
    if reps.shape[0] == 0:
        return lo, hi
    finite = np.isfinite(reps)
    if finite.all():
        return np.quantile(reps, alpha, axis=0), np.quantile(reps, 1.0 - alpha, axis=0)
    ok = finite.any(axis=0)
    if ok.any():
        lo[ok] = np.nanquantile(reps[:, ok], alpha, axis=0)
        hi[ok] = np.nanquantile(reps[:, ok], 1.0 - alpha, axis=0)
    return lo, hi


def resample_counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """``[n_boot, n]`` counts: how often each of n units is drawn in each bootstrap sample."""
    idx = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(idx.reshape(-1), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def matrix(x: Any, name: str, ndim: int = 2) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != ndim:
        raise EmolensError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if a.size == 0:
        raise EmolensError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise EmolensError(f"{name} must be finite (drop missing values first)")
    return a


def item_names(names: Sequence[str] | None, n: int, what: str) -> list[str]:
    if names is None:
        return [str(i) for i in range(n)]
    out = [str(x) for x in names]
    if len(out) != n:
        raise EmolensError(f"{len(out)} names for {n} {what}")
    return out


# --------------------------------------------------------------------------------------------
# pair designs
# --------------------------------------------------------------------------------------------


def ordered_pairs(n: int) -> np.ndarray:
    """Every ordered pair of ``n`` items, ``[n * (n - 1), 2]``; row ``(i, j)`` asks i as
    option A and j as option B. The study's full design (64 activities: 4,032 pairs).

    >>> ordered_pairs(3).tolist()
    [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]]
    >>> len(ordered_pairs(64))
    4032
    """
    if n < 2:
        raise EmolensError(f"a pair design needs at least 2 items, got {n}")
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    keep = i != j
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int64)


def _round_robin(n: int) -> list[list[tuple[int, int]]]:
    """Rounds of the circle method: each round pairs every item at most once, and the rounds
    together hold every unordered pair exactly once (n - 1 rounds for even n, n for odd)."""
    m = n + (n % 2)  # odd n: a dummy item m - 1 = n gives a bye
    players = list(range(m))
    rounds = []
    for _ in range(m - 1):
        pairs = [(players[k], players[m - 1 - k]) for k in range(m // 2)]
        rounds.append([(a, b) for a, b in pairs if a < n and b < n])
        players = [players[0], players[-1], *players[1:-1]]
    return rounds


def balanced_pairs(n: int, n_unordered: int, seed: int = 0) -> np.ndarray:
    """A seeded random subset of ``n_unordered`` unordered pairs, each asked in both orders:
    ``[2 * n_unordered, 2]``, rows ``2k`` and ``2k + 1`` being ``(i, j)`` and ``(j, i)``.

    The design for when the full ``n * (n - 1)`` is too slow. Pairs are drawn as whole rounds
    of a round-robin schedule (each round meets every item at most once) after shuffling item
    labels and round order, the last round cut at random. So every item meets about the same
    number of opponents (counts differ by at most 1 for even n, 2 for odd n), no pair repeats,
    and each item is option A exactly as often as option B: a constant position bias cancels
    as in the full design. With fewer than about three rounds (``1.5 * n`` pairs) the
    comparisons may not connect all items; :func:`fit_elo` reports ``n_components``.

    >>> d = balanced_pairs(8, 12, seed=1)
    >>> d.shape, bool((d[0::2] == d[1::2, ::-1]).all())
    ((24, 2), True)
    >>> np.bincount(d[:, 0], minlength=8).tolist()   # times each item is option A
    [3, 3, 3, 3, 3, 3, 3, 3]
    """
    total = n * (n - 1) // 2
    if n < 2:
        raise EmolensError(f"a pair design needs at least 2 items, got {n}")
    if not 1 <= n_unordered <= total:
        raise EmolensError(f"n_unordered must lie in [1, {total}] for {n} items, "
                           f"got {n_unordered}")
    rng = np.random.default_rng(seed)
    label = rng.permutation(n)
    rounds = _round_robin(n)
    chosen: list[tuple[int, int]] = []
    for r in rng.permutation(len(rounds)):
        need = n_unordered - len(chosen)
        if need <= 0:
            break
        this = rounds[r]
        if need < len(this):
            this = [this[k] for k in rng.choice(len(this), size=need, replace=False)]
        chosen.extend(this)
    rows = []
    for a, b in chosen:
        i, j = int(label[a]), int(label[b])
        if rng.random() < 0.5:  # which order comes first carries no meaning; randomise it
            i, j = j, i
        rows += [(i, j), (j, i)]
    return np.asarray(rows, dtype=np.int64)


def pair_design(n: int, n_unordered: int | None = None, seed: int = 0) -> np.ndarray:
    """The study's full design (``n_unordered=None``: :func:`ordered_pairs`) or a balanced
    subset of ``n_unordered`` unordered pairs asked in both orders (:func:`balanced_pairs`).

    >>> len(pair_design(64)), len(pair_design(64, n_unordered=320))
    (4032, 640)
    """
    return ordered_pairs(n) if n_unordered is None else balanced_pairs(n, n_unordered, seed)


def _pairs(pairs: Any, n_items: int | None) -> tuple[np.ndarray, int]:
    p = np.asarray(pairs)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] == 0:
        raise EmolensError(f"pairs must be a non-empty [m, 2] array, got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.integer):
        raise EmolensError(f"pairs must hold integer item indices, got {p.dtype}")
    n = int(p.max()) + 1 if n_items is None else int(n_items)
    if p.min() < 0 or p.max() >= n:
        raise EmolensError(f"pair indices must lie in [0, {n})")
    if np.any(p[:, 0] == p[:, 1]):
        raise EmolensError("an item cannot be paired with itself")
    return p.astype(np.int64), n


def _pair_keys(pairs: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Cluster id of each row: rows of the same unordered pair share one."""
    key = np.minimum(pairs[:, 0], pairs[:, 1]) * n + np.maximum(pairs[:, 0], pairs[:, 1])
    _, cluster = np.unique(key, return_inverse=True)
    return cluster.reshape(-1), int(cluster.max()) + 1


# --------------------------------------------------------------------------------------------
# outcomes and the Bradley-Terry / Elo fit
# --------------------------------------------------------------------------------------------


def choice_probability(logit_a: Any, logit_b: Any) -> np.ndarray:
    """p(A beats B) = sigmoid(logit of "A" - logit of "B"): the softmax over the two answer
    tokens at the position after the "(" prefill.

    >>> choice_probability([2.0, 0.0], [0.0, 0.0]).round(3).tolist()
    [0.881, 0.5]
    """
    a = np.asarray(logit_a, dtype=np.float64)
    b = np.asarray(logit_b, dtype=np.float64)
    if a.shape != b.shape:
        raise EmolensError(f"logit_a and logit_b differ in shape ({a.shape} vs {b.shape})")
    return _expit(a - b)


def hard_outcomes(p_a: Any) -> np.ndarray:
    """The study's "hard wins" for near-tied logits: 1 where p(A) > 0.5, 0 where p(A) < 0.5,
    and 0.5 for an exact tie (a draw, which float logits almost never give).

    The study scored its base model this way because its A/B logits were nearly tied, which
    squeezes every soft outcome toward 0.5 and the soft Elo toward its mean. Hard outcomes
    keep only the direction of each choice.

    >>> hard_outcomes([0.51, 0.49, 0.5]).tolist()
    [1.0, 0.0, 0.5]
    """
    p = np.asarray(p_a, dtype=np.float64)
    return np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))


def _outcomes(p_a: Any, m: int) -> np.ndarray:
    y = np.asarray(p_a, dtype=np.float64).reshape(-1)
    if y.size != m:
        raise EmolensError(f"{y.size} outcomes for {m} pairs")
    if not np.all(np.isfinite(y)) or y.min() < 0.0 or y.max() > 1.0:
        raise EmolensError("outcomes must be probabilities in [0, 1]")
    return y


class _BT:
    """Negative log-likelihood of Bradley-Terry with soft outcomes, its gradient and Hessian.

    Parameters ``theta = (s_0 .. s_{n-1}[, beta])``; the logit that A wins is
    ``s_a - s_b (+ beta)``. ``ridge * sum(s^2)`` (and on beta) makes the problem strictly
    convex, fixes the free shift of s and keeps s finite when outcomes are separable.
    """

    def __init__(self, pairs: np.ndarray, y: np.ndarray, n: int, ridge: float,
                 position: bool) -> None:
        self.a, self.b, self.y, self.n = pairs[:, 0], pairs[:, 1], y, n
        self.ridge, self.position = ridge, position
        self.w = np.ones_like(y)
        self._ab = self.a * n + self.b
        self._ba = self.b * n + self.a

    def _d(self, theta: np.ndarray) -> np.ndarray:
        d = theta[self.a] - theta[self.b]
        return d + theta[self.n] if self.position else d

    def fun_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = self._d(theta)
        w, y, n = self.w, self.y, self.n
        nll = float(w @ (y * np.logaddexp(0.0, -d) + (1.0 - y) * np.logaddexp(0.0, d)))
        g = w * (_expit(d) - y)
        grad = np.zeros_like(theta)
        grad[:n] = np.bincount(self.a, g, n) - np.bincount(self.b, g, n)
        if self.position:
            grad[n] = g.sum()
        grad += 2.0 * self.ridge * theta
        return nll + float(self.ridge * theta @ theta), grad

    def hess(self, theta: np.ndarray) -> np.ndarray:
        d = self._d(theta)
        h = self.w * _expit(d) * _expit(-d)
        n = self.n
        ha, hb = np.bincount(self.a, h, n), np.bincount(self.b, h, n)
        cross = np.bincount(self._ab, h, n * n) + np.bincount(self._ba, h, n * n)
        k = theta.size
        H = np.zeros((k, k))
        H[:n, :n] = np.diag(ha + hb) - cross.reshape(n, n)
        if self.position:
            H[:n, n] = H[n, :n] = ha - hb
            H[n, n] = h.sum()
        H[np.diag_indices(k)] += 2.0 * self.ridge
        return H

    def solve(self, x0: np.ndarray) -> np.ndarray:
        res = _opt.minimize(self.fun_grad, x0, jac=True, hess=self.hess, method="trust-exact",
                            options={"gtol": 1e-9, "maxiter": 500})
        if not np.all(np.isfinite(res.x)):
            raise EmolensError(f"Bradley-Terry fit failed: {res.message}")
        return res.x


def fit_bradley_terry(pairs: Any, outcomes: Any, n_items: int | None = None, *,
                      ridge: float = 1e-4, position: bool = False,
                      ) -> tuple[np.ndarray, float]:
    """Bradley-Terry strengths (logits, mean zero) from soft outcomes p(A beats B) per pair.

    Maximises ``sum y log s(d) + (1 - y) log s(-d)`` with ``d = s_A - s_B`` (``+ beta`` when
    ``position``), less ``ridge * |s|^2``: strictly convex, solved by Newton steps in a trust
    region (scipy ``trust-exact``) with the exact Hessian. The tiny default ridge barely moves
    soft fits; with hard outcomes that a strict ranking explains perfectly it is what keeps
    strengths finite and so it sets their spread: compare rankings then, not spreads.

    ``position=True`` also fits ``beta``, the log-odds advantage of being option A; returned
    as the second value (NaN otherwise). Unnecessary in a design asked in both orders, where a
    constant bias cancels, but it corrects a design that is not balanced.

    >>> s, beta = fit_bradley_terry([[0, 1], [1, 0]], [0.9, 0.1])   # log 9 = 2.197
    >>> round(float(s[0] - s[1]), 3), beta                           # less a hair of ridge
    (2.196, nan)
    """
    p, n = _pairs(pairs, n_items)
    y = _outcomes(outcomes, p.shape[0])
    if ridge <= 0.0:
        raise EmolensError(f"ridge must be > 0 (it fixes the free shift), got {ridge}")
    bt = _BT(p, y, n, ridge, position)
    theta = bt.solve(np.zeros(n + int(position)))
    s = theta[:n] - theta[:n].mean()
    return s, float(theta[n]) if position else math.nan


@dataclass(frozen=True, eq=False)
class EloFit:
    """Elo per item with percentile bootstrap intervals over pairs.

    ``elo`` is anchored so its mean is exactly :data:`ELO_MEAN`; each bootstrap replicate is
    anchored the same way, so an interval says how sure the item's place relative to the
    others is. ``position_logit`` is the fitted option-A advantage (NaN unless asked for).
    ``n_components`` is the number of connected groups of items in the comparison graph:
    above 1, Elo between groups means nothing.
    """

    elo: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    position_logit: float
    n_items: int
    n_comparisons: int
    n_unordered: int
    n_components: int
    n_boot: int
    hard: bool
    level: float

    def order(self) -> np.ndarray:
        """Item indices from the highest Elo to the lowest (ties keep index order).

        >>> fit_elo([[0, 1], [1, 0]], [0.2, 0.8], n_boot=0).order().tolist()
        [1, 0]
        """
        return np.argsort(-self.elo, kind="stable")

    def rows(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One plain dict per item (name, elo, ci_low, ci_high; NaN bounds as None), from
        the highest Elo to the lowest: ready for JSON.

        >>> fit_elo([[0, 1], [1, 0]], [0.2, 0.8], n_boot=0).rows(["tea", "coffee"])[0]
        {'name': 'coffee', 'elo': 1620.4, 'ci_low': None, 'ci_high': None}
        """
        labels = item_names(names, self.n_items, "items")

        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 1)

        return [{"name": labels[i], "elo": num(self.elo[i]), "ci_low": num(self.ci_low[i]),
                 "ci_high": num(self.ci_high[i])} for i in self.order()]


def _to_elo(s: np.ndarray) -> np.ndarray:
    return ELO_MEAN + ELO_PER_LOGIT * (s - s.mean())


def fit_elo(pairs: Any, p_a: Any, n_items: int | None = None, *, hard: bool = False,
            n_boot: int = 500, seed: int = 0, level: float = 0.95, ridge: float = 1e-4,
            position: bool = False) -> EloFit:
    """Elo of every item from the choice probabilities ``p_a`` of the asked ``pairs``.

    The Bradley-Terry fit of :func:`fit_bradley_terry` on soft outcomes (``hard=True``: on
    :func:`hard_outcomes`), put on the Elo scale (:data:`ELO_PER_LOGIT` points per logit) and
    anchored at a mean of 1500. Intervals come from ``n_boot`` bootstrap samples over
    unordered pairs: both orders of a pair are drawn together, so every sample keeps the
    design's position balance. ``n_boot=0`` skips them (NaN intervals).

    >>> pairs = ordered_pairs(3)
    >>> p = choice_probability(np.array([1.0, 0.0, -1.0])[pairs[:, 0]], 0.0 * pairs[:, 1])
    >>> fit = fit_elo(pairs, p, n_boot=100)
    >>> fit.order().tolist(), fit.n_comparisons, fit.n_unordered, fit.n_components
    ([0, 1, 2], 6, 3, 1)
    """
    check_level(level)
    check_boot(n_boot)
    p, n = _pairs(pairs, n_items)
    y = _outcomes(p_a, p.shape[0])
    if hard:
        y = hard_outcomes(y)
    if ridge <= 0.0:
        raise EmolensError(f"ridge must be > 0 (it fixes the free shift), got {ridge}")
    bt = _BT(p, y, n, ridge, position)
    theta = bt.solve(np.zeros(n + int(position)))
    elo = _to_elo(theta[:n])
    cluster, n_clusters = _pair_keys(p, n)
    graph = _sparse.coo_matrix((np.ones(p.shape[0]), (p[:, 0], p[:, 1])), shape=(n, n))
    n_components = int(_csgraph.connected_components(graph, directed=False)[0])
    lo = hi = np.full(n, np.nan)
    if n_boot:
        rng = np.random.default_rng(seed)
        reps = np.empty((n_boot, n))
        for k, counts in enumerate(resample_counts(rng, n_boot, n_clusters)):
            bt.w = counts[cluster]
            reps[k] = _to_elo(bt.solve(theta)[:n])
        bt.w = np.ones_like(y)
        lo, hi = percentiles(reps, level)
    return EloFit(elo=elo, ci_low=lo, ci_high=hi,
                  position_logit=float(theta[n]) if position else math.nan,
                  n_items=n, n_comparisons=int(p.shape[0]), n_unordered=n_clusters,
                  n_components=n_components, n_boot=n_boot, hard=hard, level=level)


# --------------------------------------------------------------------------------------------
# position bias
# --------------------------------------------------------------------------------------------


class PositionBias(NamedTuple):
    """Mean p(A) over the asked pairs (0.5 = no bias) with its bootstrap interval; ``share_a``
    is the fraction of pairs where A was the likelier answer; ``n`` pairs asked."""

    mean_p_a: float
    ci_low: float
    ci_high: float
    share_a: float
    n: int


def position_bias(p_a: Any, pairs: Any | None = None, *, n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> PositionBias:
    """How much the model favours option A whatever it says.

    With ``pairs`` given, the bootstrap draws unordered pairs (both orders together): the
    two orders of one pair share the items, so they are not independent, and averaging them
    removes the items' own preference from the spread. Without ``pairs`` every row is drawn
    on its own.

    >>> pb = position_bias([0.7, 0.6, 0.8, 0.7], pairs=[[0, 1], [1, 0], [0, 2], [2, 0]],
    ...                    n_boot=200)
    >>> round(pb.mean_p_a, 3), pb.share_a, pb.n
    (0.7, 1.0, 4)
    """
    check_level(level)
    check_boot(n_boot, 1)
    y = np.asarray(p_a, dtype=np.float64).reshape(-1)
    if y.size == 0:
        raise EmolensError("position bias needs at least one pair")
    y = _outcomes(y, y.size)
    if pairs is None:
        cluster, n_clusters = np.arange(y.size), y.size
    else:
        pr, n = _pairs(pairs, None)
        if pr.shape[0] != y.size:
            raise EmolensError(f"{y.size} outcomes for {pr.shape[0]} pairs")
        cluster, n_clusters = _pair_keys(pr, n)
    sums = np.bincount(cluster, y, n_clusters)
    sizes = np.bincount(cluster, minlength=n_clusters).astype(np.float64)
    counts = resample_counts(np.random.default_rng(seed), n_boot, n_clusters)
    reps = (counts @ sums) / (counts @ sizes)
    lo, hi = percentiles(reps[:, None], level)
    return PositionBias(float(y.mean()), float(lo[0]), float(hi[0]),
                        float((y > 0.5).mean()), int(y.size))


# --------------------------------------------------------------------------------------------
# probes against Elo
# --------------------------------------------------------------------------------------------


class ProbeEloCorrelation(NamedTuple):
    """One probe's Pearson r with Elo across items: n, t-test p, Fisher-z interval, and a
    two-sided permutation p (Elo shuffled across items)."""

    name: str
    r: float
    n: int
    p: float
    ci_low: float
    ci_high: float
    p_perm: float


def probe_elo_correlations(scores: Any, elo: Any, names: Sequence[str] | None = None, *,
                           n_perm: int = 5000, seed: int = 0, level: float = 0.95,
                           ) -> list[ProbeEloCorrelation]:
    """Correlate every probe's read-out with Elo across items, in the order of ``names``.

    ``scores`` is ``[items, probes]`` (e.g. the mean of each probe over an activity's tokens)
    and ``elo`` is ``[items]``. All probes share the same ``n_perm`` shuffles of Elo (one
    matrix product), and the permutation p counts the observed order as one shuffle, so it is
    at least ``1 / (n_perm + 1)``. A probe constant across items has r = NaN.

    >>> elo = np.array([2000.0, 1800, 1500, 1300, 1100, 1000])
    >>> scores = np.stack([elo / 1000, -elo / 1000 + [0, .1, 0, .1, 0, .1]], axis=1)
    >>> [(c.name, round(c.r, 2), c.n) for c in probe_elo_correlations(scores, elo,
    ...                                                               ["up", "down"])]
    [('up', 1.0, 6), ('down', -0.99, 6)]
    """
    check_level(level)
    if n_perm < 1:
        raise EmolensError(f"number of permutations must be >= 1, got {n_perm}")
    x = matrix(scores, "scores")
    e = matrix(elo, "elo", ndim=1)
    if x.shape[0] != e.size:
        raise EmolensError(f"scores has {x.shape[0]} rows for {e.size} Elo values")
    labels = item_names(names, x.shape[1], "probes")
    zx = x - x.mean(axis=0)
    sd = np.sqrt((zx * zx).sum(axis=0))
    ze = e - e.mean()
    se = math.sqrt(float(ze @ ze))
    out = []
    if se == 0.0:
        raise EmolensError("Elo is constant across items; nothing to correlate")
    rng = np.random.default_rng(seed)
    perms = np.stack([ze[rng.permutation(e.size)] for _ in range(n_perm)], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r_obs = (zx.T @ ze) / (sd * se)
        r_perm = (zx.T @ perms) / (sd[:, None] * se)
    tol = 1e-12
    for k, name in enumerate(labels):
        if sd[k] == 0.0:
            out.append(ProbeEloCorrelation(name, math.nan, e.size, math.nan, math.nan,
                                           math.nan, math.nan))
            continue
        c: Correlation = pearson(x[:, k], e, level)
        hits = int((np.abs(r_perm[k]) >= abs(r_obs[k]) - tol).sum())
        out.append(ProbeEloCorrelation(name, c.r, c.n, c.p, c.ci_low, c.ci_high,
                                       (1 + hits) / (n_perm + 1)))
    return out
