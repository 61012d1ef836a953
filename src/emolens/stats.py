"""Statistics for the report: every rate with its n and a confidence interval, every
correlation with its n, a p-value and a confidence interval.

Pure numpy/scipy, no model code.

>>> c = pearson([1, 2, 3, 4, 5, 6, 7, 8], [2, 1, 4, 3, 6, 5, 8, 7])
>>> format_correlation(c)
'r = 0.90 (n = 8, 95% CI 0.55-0.98, p = 0.002)'
>>> format_rate(topk_accuracy([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 1, 1], k=1))
'0.67 (2/3, 95% CI 0.21-0.94)'
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats as _st

from emolens.errors import EmolensError

__all__ = [
    "Correlation",
    "Permutation",
    "Rate",
    "binomial_p",
    "bootstrap_ci",
    "confusion_matrix",
    "format_correlation",
    "format_rate",
    "mean_rank",
    "pearson",
    "permutation_p",
    "permutation_test",
    "rank_of_true",
    "rate",
    "spearman",
    "topk_accuracy",
    "wilson_ci",
]


class Correlation(NamedTuple):
    """A correlation coefficient with its sample size, two-sided p-value and CI."""

    r: float
    n: int
    p: float
    ci_low: float
    ci_high: float


class Rate(NamedTuple):
    """A proportion ``hits / n`` with its Wilson confidence interval."""

    value: float
    hits: int
    n: int
    ci_low: float
    ci_high: float


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise EmolensError(f"confidence level must lie in (0, 1), got {level}")
    return float(_st.norm.ppf(0.5 + level / 2.0))


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` trials
    (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at k = 0 or
    k = n. With n = 0 nothing is known and the interval is the whole of [0, 1]. This is the
    package's only proportion interval: every :class:`Rate` carries it.

    >>> [round(x, 4) for x in wilson_ci(8, 10)]
    [0.4902, 0.9433]
    >>> [round(x, 4) for x in wilson_ci(0, 10)]
    [0.0, 0.2775]
    """
    k, n = int(k), int(n)
    if n < 0 or k < 0 or k > n:
        raise EmolensError(f"need 0 <= k <= n for a proportion, got k={k}, n={n}")
    _z(level)
    if n == 0:
        return 0.0, 1.0
    ci = _st.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def rate(hits: int, n: int, level: float = 0.95) -> Rate:
    """``hits / n`` with its Wilson interval (value is NaN when n = 0).

    >>> rate(3, 4).value
    0.75
    """
    lo, hi = wilson_ci(hits, n, level)
    return Rate(hits / n if n else math.nan, int(hits), int(n), lo, hi)


def binomial_p(hits: int, n: int, chance: float) -> float:
    """One-sided binomial p-value of ``hits`` or more out of ``n`` at success rate ``chance``
    (``scipy.stats.binomtest``; NaN when n = 0).

    >>> round(binomial_p(20, 24, 0.5), 5)
    0.00077
    """
    if n == 0:
        return math.nan
    return float(_st.binomtest(int(hits), int(n), float(chance), alternative="greater").pvalue)


def format_rate(r: Rate, level: float = 0.95, digits: int = 2) -> str:
    """One-line text for a rate, e.g. ``'0.42 (21/50, 95% CI 0.29-0.56)'``.

    >>> format_rate(rate(21, 50))
    '0.42 (21/50, 95% CI 0.29-0.56)'
    """
    if r.n == 0:
        return "n/a (0/0)"
    return (f"{r.value:.{digits}f} ({r.hits}/{r.n}, {_pct(level)} CI "
            f"{_range(r.ci_low, r.ci_high, digits)})")


def _pct(level: float) -> str:
    return f"{100 * level:g}%"


def _range(lo: float, hi: float, digits: int) -> str:
    if math.isnan(lo) or math.isnan(hi):
        return "n/a"
    a, b = f"{lo:.{digits}f}", f"{hi:.{digits}f}"
    # "a-b" is unreadable once a bound is negative ("-0.40--0.10"), so spell it out then.
    return f"{a}-{b}" if lo >= 0 and hi >= 0 else f"{a} to {b}"


# --------------------------------------------------------------------------------------------
# correlations
# --------------------------------------------------------------------------------------------


def _pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(y, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise EmolensError(f"x and y differ in length ({a.size} vs {b.size})")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise EmolensError("x and y must be finite (drop missing values first)")
    return a, b


def _constant(a: np.ndarray) -> bool:
    return bool(a.size and np.all(a == a[0]))


def _snap(r: float) -> float:
    """r clipped to [-1, 1], with rounding error at the ends removed (a perfect monotone
    relation gives exactly 1, not 0.9999999999999999)."""
    r = float(np.clip(r, -1.0, 1.0))
    return math.copysign(1.0, r) if abs(r) > 1.0 - 1e-13 else r


def _fisher_ci(r: float, n: int, level: float, se_scale: float) -> tuple[float, float]:
    """Fisher-z interval: atanh(r) is close to normal with sd se_scale / sqrt(n - 3)."""
    if n <= 3 or math.isnan(r):
        return math.nan, math.nan
    z = math.atanh(max(-1.0 + 1e-15, min(1.0 - 1e-15, r)))
    half = _z(level) * se_scale / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
            level: float = 0.95) -> Correlation:
    """Pearson r with its two-sided p and Fisher-z CI (``scipy.stats.pearsonr`` and its
    ``confidence_interval``).

    p and CI are NaN when n is too small (p needs n >= 3, the CI n >= 4) or a variable is
    constant (then r is NaN too).

    >>> c = pearson([1, 2, 3, 4], [1, 3, 2, 4])
    >>> round(c.r, 3), c.n, round(c.p, 3)
    (0.8, 4, 0.2)
    """
    a, b = _pair(x, y)
    _z(level)
    n = int(a.size)
    if n < 2 or _constant(a) or _constant(b):
        return Correlation(math.nan, n, math.nan, math.nan, math.nan)
    res = _st.pearsonr(a, b)
    r = _snap(res.statistic)
    if n < 3:
        return Correlation(r, n, math.nan, math.nan, math.nan)
    if n <= 3 or abs(r) >= 1.0:
        lo, hi = _fisher_ci(r, n, level, 1.0)
    else:
        ci = res.confidence_interval(confidence_level=level)
        lo, hi = float(ci.low), float(ci.high)
    return Correlation(r, n, float(res.pvalue), lo, hi)


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
             level: float = 0.95) -> Correlation:
    """Spearman rank correlation with its p (``scipy.stats.spearmanr``: average ranks for
    ties, t approximation) and a Fisher-z CI with the Fieller-Hartley-Pearson variance
    1.06 / (n - 3) (scipy has no Spearman interval).

    >>> spearman([1, 2, 3, 4, 5], [1, 4, 9, 16, 25]).r
    1.0
    """
    a, b = _pair(x, y)
    _z(level)
    n = int(a.size)
    if n < 2 or _constant(a) or _constant(b):
        return Correlation(math.nan, n, math.nan, math.nan, math.nan)
    res = _st.spearmanr(a, b)
    r = _snap(res.statistic)
    if n < 3:
        return Correlation(r, n, math.nan, math.nan, math.nan)
    lo, hi = _fisher_ci(r, n, level, math.sqrt(1.06))
    return Correlation(r, n, float(res.pvalue), lo, hi)


def format_correlation(c: Correlation, symbol: str = "r", level: float = 0.95,
                       digits: int = 2) -> str:
    """One-line text for a correlation, as the report prints it.

    >>> format_correlation(Correlation(0.81, 45, 1e-11, 0.68, 0.89))
    'r = 0.81 (n = 45, 95% CI 0.68-0.89, p < 0.001)'
    >>> format_correlation(Correlation(-0.2, 30, 0.29, -0.53, 0.17), symbol="rho")
    'rho = -0.20 (n = 30, 95% CI -0.53 to 0.17, p = 0.29)'
    """
    if math.isnan(c.r):
        return f"{symbol} = n/a (n = {c.n})"
    parts = [f"n = {c.n}"]
    if not (math.isnan(c.ci_low) or math.isnan(c.ci_high)):
        parts.append(f"{_pct(level)} CI {_range(c.ci_low, c.ci_high, digits)}")
    parts.append(_format_p(c.p))
    return f"{symbol} = {c.r:.{digits}f} ({', '.join(parts)})"


def _format_p(p: float) -> str:
    if math.isnan(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2g}" if p < 0.01 else f"p = {p:.2f}"


# --------------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------------


def _is_pair(data: Any) -> bool:
    return (isinstance(data, tuple | list) and len(data) == 2
            and all(np.ndim(d) >= 1 for d in data))


def bootstrap_ci(data: Any, statistic: Callable[..., float], n_boot: int = 2000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (``scipy.stats.bootstrap``).

    ``data`` is either one array (rows are resampled; ``statistic(sample)``) or a pair
    ``(x, y)`` of equal length whose rows are resampled together (``statistic(xs, ys)``).
    Rows may be vectors (a 2-d array resamples whole rows). Replicates where the statistic
    is NaN (e.g. a constant resample) are dropped; one row gives a zero-width interval.

    >>> lo, hi = bootstrap_ci(np.arange(100.0), np.mean, n_boot=500)
    >>> bool(40 < lo < 49.5 < hi < 59)
    True
    """
    pair = _is_pair(data)
    arrays = [np.asarray(d) for d in data] if pair else [np.asarray(data)]
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    if any(a.ndim == 0 or a.shape[0] != n for a in arrays) or n == 0:
        raise EmolensError("bootstrap needs non-empty data (and x, y of equal length)")
    if n_boot < 1:
        raise EmolensError(f"n_boot must be >= 1, got {n_boot}")
    _z(level)

    def on_rows(idx: np.ndarray) -> float:
        return float(statistic(*(a[idx.astype(np.int64)] for a in arrays)))

    if n == 1:
        value = on_rows(np.zeros(1, np.int64))
        return (value, value) if math.isfinite(value) else (math.nan, math.nan)
    # rows are resampled through their indices, so rows may be vectors and pairs stay paired
    with warnings.catch_warnings():  # a degenerate resample is handled below, not warned
        warnings.simplefilter("ignore", _st.DegenerateDataWarning)
        res = _st.bootstrap((np.arange(n),), on_rows, n_resamples=int(n_boot),
                            vectorized=False, confidence_level=level, method="percentile",
                            rng=np.random.default_rng(seed))
    reps = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    if np.all(np.isfinite(reps)):
        return float(res.confidence_interval.low), float(res.confidence_interval.high)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(reps, alpha)), float(np.quantile(reps, 1.0 - alpha))


class Permutation(NamedTuple):
    """A permutation test: the observed statistic, its p-value and the null distribution."""

    statistic: float
    p: float
    null: np.ndarray


def permutation_test(stat_fn: Callable[[np.ndarray, np.ndarray], float], x: Any, y: Any,
                     n: int = 5000, seed: int = 0, alternative: str = "two-sided"
                     ) -> Permutation:
    """Permutation test of ``stat_fn(x, y)`` against shuffles of ``y``'s rows relative to
    ``x`` (``scipy.stats.permutation_test``, ``permutation_type="pairings"``).

    ``alternative``: ``"two-sided"`` compares absolute values, ``"greater"`` / ``"less"``
    one tail. A NaN statistic of a shuffle counts as 0. With more shuffles asked for than
    there are orderings the test is exact; otherwise the observed statistic counts as one
    shuffle, so p >= 1 / (n + 1).

    >>> t = permutation_test(lambda a, b: float(a @ b), np.arange(6.0), np.arange(6.0), n=99)
    >>> t.statistic, t.p, t.null.shape
    (55.0, 0.01, (99,))
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise EmolensError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    if n < 1:
        raise EmolensError(f"number of permutations must be >= 1, got {n}")
    xa, ya = np.asarray(x), np.asarray(y)
    if xa.shape[0] != ya.shape[0]:
        raise EmolensError(f"x and y differ in length ({xa.shape[0]} vs {ya.shape[0]})")
    obs = float(stat_fn(xa, ya))
    if math.isnan(obs):
        return Permutation(math.nan, math.nan, np.zeros(0))
    two = alternative == "two-sided"

    def shuffled(idx: np.ndarray) -> float:
        v = float(stat_fn(xa, ya[idx.astype(np.int64)]))
        v = 0.0 if math.isnan(v) else v
        return abs(v) if two else v

    res = _st.permutation_test((np.arange(ya.shape[0]),), shuffled, vectorized=False,
                               permutation_type="pairings", n_resamples=int(n),
                               alternative="greater" if two else alternative,
                               rng=np.random.default_rng(seed))
    null = np.asarray(res.null_distribution, dtype=np.float64)
    return Permutation(obs, float(res.pvalue), null)


def permutation_p(stat_fn: Callable[[np.ndarray, np.ndarray], float], x: Any, y: Any,
                  n: int = 5000, seed: int = 0, alternative: str = "two-sided") -> float:
    """The p-value of :func:`permutation_test`.

    >>> x = np.arange(20.0)
    >>> permutation_p(lambda a, b: pearson(a, b).r, x, 2 * x + 1, n=999)
    0.001
    """
    return permutation_test(stat_fn, x, y, n=n, seed=seed, alternative=alternative).p


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------


def _scores_labels(scores: Any, true_idx: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    t = np.asarray(true_idx, dtype=np.int64).reshape(-1)
    if s.ndim != 2 or s.shape[0] != t.shape[0] or s.shape[0] == 0:
        raise EmolensError(f"{s.shape[0]} score rows for {t.shape[0]} labels (need >= 1)")
    if t.min() < 0 or t.max() >= s.shape[1]:
        raise EmolensError(f"true indices must lie in [0, {s.shape[1]})")
    return s, t


def rank_of_true(scores: Any, true_idx: Any) -> np.ndarray:
    """Rank of the true class in each row, 1 = highest score.

    A tie favours the true class (rank = 1 + number of strictly higher scores), matching
    :func:`topk_accuracy`.

    >>> rank_of_true([[0.1, 0.5, 0.4], [0.3, 0.3, 0.0]], [2, 1]).tolist()
    [2, 1]
    """
    s, t = _scores_labels(scores, true_idx)
    true_scores = s[np.arange(t.size), t]
    return 1 + (s > true_scores[:, None]).sum(axis=1)


def topk_accuracy(scores: Any, true_idx: Any, k: int = 1, level: float = 0.95) -> Rate:
    """Top-k accuracy of ``scores [n, classes]`` against ``true_idx [n]``, as a :class:`Rate`.

    >>> topk_accuracy([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]], [0, 1], k=2).hits
    2
    """
    if k < 1:
        raise EmolensError(f"k must be >= 1, got {k}")
    ranks = rank_of_true(scores, true_idx)
    return rate(int((ranks <= k).sum()), int(ranks.size), level)


def mean_rank(scores: Any, true_idx: Any) -> float:
    """Mean rank of the true class (1 = always first; chance is (classes + 1) / 2).

    >>> mean_rank([[0.1, 0.5, 0.4], [0.3, 0.2, 0.0]], [2, 0])
    1.5
    """
    return float(rank_of_true(scores, true_idx).mean())


def confusion_matrix(true_idx: Any, pred_idx: Any, n_classes: int) -> np.ndarray:
    """Counts ``[n_classes, n_classes]``: row = true class, column = predicted class.

    >>> confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], 3).tolist()
    [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    """
    t = np.asarray(true_idx, dtype=np.int64).reshape(-1)
    p = np.asarray(pred_idx, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise EmolensError(f"{t.size} true labels but {p.size} predictions")
    if n_classes < 1:
        raise EmolensError(f"n_classes must be >= 1, got {n_classes}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise EmolensError(f"class indices must lie in [0, {n_classes})")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm
