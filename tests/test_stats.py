"""Statistics with known answers: Wilson intervals, correlations against scipy, resampling,
classification metrics and the report's text format."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from emolens.errors import EmolensError
from emolens.stats import (
    Correlation,
    binomial_p,
    bootstrap_ci,
    confusion_matrix,
    format_correlation,
    format_rate,
    mean_rank,
    pearson,
    permutation_p,
    permutation_test,
    rank_of_true,
    rate,
    spearman,
    topk_accuracy,
    wilson_ci,
)

# ------------------------------------------------------------------------------ Wilson


def test_wilson_textbook_values():
    # 8/10 at 95%: the classic worked example (0.490, 0.943); 0/10 upper bound 0.2775
    lo, hi = wilson_ci(8, 10)
    assert lo == pytest.approx(0.49016, abs=1e-4) and hi == pytest.approx(0.94331, abs=1e-4)
    assert wilson_ci(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_ci(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-4)


@pytest.mark.parametrize("k,n,level", [(0, 5, 0.95), (3, 7, 0.95), (50, 171, 0.9),
                                       (170, 171, 0.99), (1, 1, 0.95)])
def test_wilson_matches_scipy(k, n, level):
    ci = st.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    assert wilson_ci(k, n, level) == pytest.approx((ci.low, ci.high), abs=1e-10)


def test_wilson_edge_cases_and_errors():
    assert wilson_ci(0, 0) == (0.0, 1.0)
    r = rate(0, 0)
    assert math.isnan(r.value) and format_rate(r) == "n/a (0/0)"
    with pytest.raises(EmolensError):
        wilson_ci(5, 4)
    with pytest.raises(EmolensError):
        wilson_ci(1, 4, level=1.5)


def test_rate_and_format():
    r = rate(21, 50)
    assert (r.value, r.hits, r.n) == (0.42, 21, 50)
    assert format_rate(r) == "0.42 (21/50, 95% CI 0.29-0.56)"


# ------------------------------------------------------------------------------ correlations


def _data(n=45, rho=0.6, seed=1, ties=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = rho * x + math.sqrt(1 - rho ** 2) * rng.normal(size=n)
    if ties:
        x, y = np.round(x), np.round(y * 2) / 2
    return x, y


@pytest.mark.parametrize("n,rho,seed", [(45, 0.6, 1), (10, -0.3, 2), (171, 0.05, 3)])
def test_pearson_matches_scipy(n, rho, seed):
    x, y = _data(n, rho, seed)
    ref = st.pearsonr(x, y)
    c = pearson(x, y)
    assert c.n == n
    assert c.r == pytest.approx(ref.statistic, abs=1e-12)
    assert c.p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-15)
    ci = ref.confidence_interval(0.95)  # scipy's default is the same Fisher-z interval
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-10)
    assert c.ci_low < c.r < c.ci_high


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_matches_scipy(ties):
    x, y = _data(40, 0.5, 7, ties=ties)
    ref = st.spearmanr(x, y)
    c = spearman(x, y)
    assert c.r == pytest.approx(ref.statistic, abs=1e-12)
    assert c.p == pytest.approx(ref.pvalue, rel=1e-8)
    # Fisher z with the 1.06 / (n - 3) variance, computed by hand
    half = 1.959963984540054 * math.sqrt(1.06 / 37)
    z = math.atanh(c.r)
    assert (c.ci_low, c.ci_high) == pytest.approx((math.tanh(z - half), math.tanh(z + half)))


def test_correlation_small_and_degenerate():
    assert spearman([1, 2, 3], [3, 2, 1]).r == -1.0
    c = pearson([1, 2, 3], [1, 2, 4])
    assert c.n == 3 and not math.isnan(c.p) and math.isnan(c.ci_low)  # CI needs n >= 4
    const = pearson([1, 2, 3, 4], [5, 5, 5, 5])
    assert math.isnan(const.r) and math.isnan(const.p)
    assert format_correlation(const) == "r = n/a (n = 4)"
    with pytest.raises(EmolensError):
        pearson([1, 2, 3], [1, 2])
    with pytest.raises(EmolensError):
        pearson([1, 2, np.nan], [1, 2, 3])


def test_format_correlation():
    assert (format_correlation(Correlation(0.81, 45, 2e-11, 0.68, 0.89))
            == "r = 0.81 (n = 45, 95% CI 0.68-0.89, p < 0.001)")
    assert (format_correlation(Correlation(-0.42, 20, 0.0654, -0.73, 0.03), symbol="rho")
            == "rho = -0.42 (n = 20, 95% CI -0.73 to 0.03, p = 0.07)")
    assert (format_correlation(Correlation(0.5, 30, 0.0049, 0.17, 0.73))
            == "r = 0.50 (n = 30, 95% CI 0.17-0.73, p = 0.0049)")


# ------------------------------------------------------------------------------ resampling


def test_bootstrap_mean_matches_normal_theory():
    rng = np.random.default_rng(0)
    x = rng.normal(10.0, 2.0, size=400)
    lo, hi = bootstrap_ci(x, np.mean, n_boot=2000, seed=0)
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - 1.96 * se, abs=0.05)
    assert hi == pytest.approx(x.mean() + 1.96 * se, abs=0.05)
    assert bootstrap_ci(x, np.mean, n_boot=200, seed=3) == bootstrap_ci(x, np.mean, n_boot=200,
                                                                         seed=3)


def test_bootstrap_pairs_resampled_together():
    x = np.arange(30.0)
    # y is an exact function of x: any joint resample keeps r = 1, a separate one would not
    lo, hi = bootstrap_ci((x, 3 * x - 2), lambda a, b: pearson(a, b).r, n_boot=300)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    with pytest.raises(EmolensError):
        bootstrap_ci((x, x[:-1]), lambda a, b: 0.0)


def test_permutation_p():
    x = np.arange(30.0)
    r = lambda a, b: pearson(a, b).r  # noqa: E731
    assert permutation_p(r, x, x + 0.1 * np.sin(x), n=999, seed=0) == pytest.approx(1 / 1000)
    rng = np.random.default_rng(5)
    p_null = permutation_p(r, x, rng.normal(size=30), n=999, seed=0)
    assert p_null > 0.05
    # one-sided: a perfect negative relation is extreme for "less", not for "greater"
    assert permutation_p(r, x, -x, n=199, alternative="less") == pytest.approx(1 / 200)
    assert permutation_p(r, x, -x, n=199, alternative="greater") == pytest.approx(1.0)


# ------------------------------------------------------------------------------ classification


def test_topk_rank_confusion():
    scores = np.array([
        [0.9, 0.05, 0.05],   # true 0, rank 1
        [0.5, 0.3, 0.2],     # true 1, rank 2
        [0.6, 0.3, 0.1],     # true 2, rank 3
        [0.2, 0.2, 0.6],     # true 0, tied with class 1 -> rank 2 (1 strictly higher)
    ])
    true = [0, 1, 2, 0]
    assert rank_of_true(scores, true).tolist() == [1, 2, 3, 2]
    assert mean_rank(scores, true) == 2.0
    top1, top2 = topk_accuracy(scores, true, 1), topk_accuracy(scores, true, 2)
    assert (top1.hits, top1.n, top1.value) == (1, 4, 0.25)
    assert (top2.hits, top2.value) == (3, 0.75)
    assert (top1.ci_low, top1.ci_high) == pytest.approx(wilson_ci(1, 4))
    cm = confusion_matrix(true, scores.argmax(1), 3)
    assert cm.tolist() == [[1, 0, 1], [1, 0, 0], [1, 0, 0]]
    assert cm.sum() == 4 and np.trace(cm) == top1.hits
    with pytest.raises(EmolensError):
        topk_accuracy(scores, [0, 1, 3, 0], 1)
    with pytest.raises(EmolensError):
        confusion_matrix([0, 1], [0, 5], 3)


# ------------------------------------------------------------------------------ scipy underneath


def test_binomial_p_matches_scipy():
    assert binomial_p(7, 10, 0.5) == pytest.approx(st.binom.sf(6, 10, 0.5))
    assert math.isnan(binomial_p(0, 0, 0.5))


def test_permutation_test_null_and_exactness():
    x = np.arange(30.0)
    t = permutation_test(lambda a, b: float(np.corrcoef(a, b)[0, 1]), x, x[::-1], n=199,
                         alternative="less")
    assert t.statistic == pytest.approx(-1.0) and t.p == pytest.approx(1 / 200)
    assert t.null.shape == (199,) and abs(t.null.mean()) < 0.1
    # with fewer orderings than shuffles asked for, every ordering is used: an exact p
    small = permutation_test(lambda a, b: float(a @ b), np.arange(4.0), np.arange(4.0), n=999,
                             alternative="greater")
    assert small.null.shape == (24,) and small.p == pytest.approx(1 / 24)
    nan = permutation_test(lambda a, b: float("nan"), x, x, n=10)
    assert math.isnan(nan.p) and nan.null.size == 0
    with pytest.raises(EmolensError):
        permutation_test(lambda a, b: 0.0, x, x, alternative="sideways")


def test_bootstrap_rows_may_be_vectors_and_one_row_is_a_point():
    rows = np.arange(20.0).reshape(10, 2)
    lo, hi = bootstrap_ci(rows, lambda r: float(r[:, 1].mean() - r[:, 0].mean()), n_boot=50)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    assert bootstrap_ci(np.array([3.0]), np.mean) == (3.0, 3.0)
    assert all(math.isnan(v) for v in bootstrap_ci(np.arange(5.0), lambda r: float("nan"),
                                                    n_boot=20))

