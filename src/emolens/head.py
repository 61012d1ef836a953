"""A calibrated read-out head beside the study's directions: shrinkage LDA (pure numpy).

The study's difference-of-means unit directions steer, and every analysis of the study
uses them; but read as a classifier (which emotion does this text carry?) they share one
weakness: a direction along which every emotion's texts vary (register, length, topic)
moves every score at once.  Linear discriminant analysis whitens the class means by the
within-emotion covariance, so such shared nuisance directions stop counting.

Everything here works from sufficient statistics (per-emotion sums of text means, their
counts, and the scatter ``sum m m^T``), so it fits from one streaming extraction pass and
merges across shards.  The shrinkage towards a scaled identity is chosen on a split of
the training corpus (two folds, each fitted on one and scored on the other by held-out
Gaussian log-likelihood, also computable from sufficient statistics).

>>> rng = np.random.default_rng(0)
>>> means = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
>>> x = np.concatenate([means[e] + rng.normal(size=(50, 3)) for e in (0, 1)])
>>> labels = np.repeat([0, 1], 50)
>>> sums = np.stack([x[labels == e].sum(0) for e in (0, 1)])
>>> w, b, c = lda_weights(sums, np.array([50, 50]), x.T @ x, shrinkage=0.1)
>>> float((((x - c) @ w.T + b).argmax(1) == labels).mean()) > 0.9
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emolens.errors import EmolensError, VectorFileError

__all__ = ["SHRINKAGE_GRID", "ReadoutHead", "choose_shrinkage", "heldout_loglik",
           "lda_weights", "within_covariance"]

#: Candidate shrinkage weights towards ``trace/d * I`` (0: plain covariance).
SHRINKAGE_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.4, 0.7, 0.9)


def _means(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class means of the classes that have texts, and which those are."""
    have = np.asarray(counts) > 0
    return sums[have] / np.asarray(counts)[have, None], have


def within_covariance(sums: np.ndarray, counts: np.ndarray, scatter: np.ndarray
                      ) -> np.ndarray:
    """Pooled within-class covariance from per-class sums [E, d], counts [E], ``sum x x^T``.

    >>> x = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    >>> within_covariance(np.array([[4.0, 0.0], [0.0, 4.0]]), np.array([2, 2]), x.T @ x)
    array([[1., 0.],
           [0., 1.]])
    """
    mu, have = _means(sums, counts)
    n = np.asarray(counts)[have]
    dof = int(n.sum()) - len(n)
    if dof <= 0:
        raise EmolensError("a read-out head needs more texts than emotions")
    within = scatter - (mu * n[:, None]).T @ mu
    return (within + within.T) / (2 * dof)


def _shrunk(cov: np.ndarray, alpha: float) -> np.ndarray:
    d = cov.shape[0]
    return (1 - alpha) * cov + alpha * (np.trace(cov) / d) * np.eye(d)


def heldout_loglik(fit: tuple[np.ndarray, np.ndarray, np.ndarray],
                   test: tuple[np.ndarray, np.ndarray, np.ndarray], alpha: float) -> float:
    """Mean Gaussian log-likelihood (up to a constant) of the ``test`` texts under the
    class means and shrunk covariance fitted on ``fit``; both are (sums, counts, scatter).

    Only sufficient statistics are needed: ``sum_i (x_i - mu_e)(x_i - mu_e)^T`` over the
    test texts is ``M - sum_e (s_e mu_e^T + mu_e s_e^T) + sum_e n_e mu_e mu_e^T``.
    """
    f_sums, f_counts, f_scatter = fit
    t_sums, t_counts, t_scatter = test
    if np.any((np.asarray(t_counts) > 0) & (np.asarray(f_counts) == 0)):
        raise EmolensError("every emotion of the test fold needs texts in the fitting fold")
    cov = _shrunk(within_covariance(f_sums, f_counts, f_scatter), alpha)
    have = np.asarray(f_counts) > 0
    mu = f_sums[have] / np.asarray(f_counts)[have, None]
    s, n = t_sums[have], np.asarray(t_counts)[have]
    q = t_scatter - s.T @ mu - mu.T @ s + (mu * n[:, None]).T @ mu
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0:
        return -np.inf
    return float(-0.5 * (np.trace(np.linalg.solve(cov, q)) / n.sum() + logdet))


def choose_shrinkage(folds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                     grid: Sequence[float] = SHRINKAGE_GRID) -> tuple[float, dict[str, float]]:
    """The shrinkage with the best mean held-out log-likelihood over the folds (each fitted
    on the others and scored on itself), and every candidate's score.

    >>> rng = np.random.default_rng(1)
    >>> def stats(x, y):
    ...     sums = np.stack([x[y == e].sum(0) for e in (0, 1)])
    ...     return sums, np.bincount(y, minlength=2), x.T @ x
    >>> y = np.repeat([0, 1], 20); x = rng.normal(size=(40, 30)) + y[:, None]
    >>> alpha, table = choose_shrinkage([stats(x[::2], y[::2]), stats(x[1::2], y[1::2])])
    >>> alpha > 0.01 and len(table) == len(SHRINKAGE_GRID)  # 20 texts in 30 dims: shrink
    True
    >>> f = [stats(x[::2], y[::2]), stats(x[1::2], y[1::2])]
    >>> fit = tuple(a for a in f[1]); slow = heldout_loglik(fit, f[0], 0.1)
    >>> fast = choose_shrinkage(f, grid=[0.1])[1]["0.1"]
    >>> abs(fast - (slow + heldout_loglik(f[0], f[1], 0.1)) / 2) < 1e-8
    True
    """
    if len(folds) < 2:
        raise EmolensError("choosing the shrinkage needs at least two folds")
    # one eigendecomposition per fold: every candidate is then a diagonal rescaling
    parts = []
    for k, test in enumerate(folds):
        rest = [f for j, f in enumerate(folds) if j != k]
        f_sums, f_counts, f_scatter = (sum(f[i] for f in rest) for i in range(3))
        t_sums, t_counts, t_scatter = test
        if np.any((np.asarray(t_counts) > 0) & (np.asarray(f_counts) == 0)):
            raise EmolensError("every emotion of a test fold needs texts in the other folds")
        cov = within_covariance(f_sums, f_counts, f_scatter)
        have = np.asarray(f_counts) > 0
        mu = f_sums[have] / np.asarray(f_counts)[have, None]
        s, n = t_sums[have], np.asarray(t_counts)[have]
        q = t_scatter - s.T @ mu - mu.T @ s + (mu * n[:, None]).T @ mu
        lam, vec = np.linalg.eigh(cov)
        parts.append((lam, np.einsum("di,de,ei->i", vec, q, vec), float(n.sum()),
                      float(np.trace(cov)) / len(lam)))
    table: dict[str, float] = {}
    for alpha in grid:
        scores = []
        for lam, qdiag, n_test, scale in parts:
            ev = (1 - alpha) * lam + alpha * scale
            scores.append(-np.inf if (ev <= 0).any() else
                          float(-0.5 * ((qdiag / ev).sum() / n_test + np.log(ev).sum())))
        table[repr(float(alpha))] = float(np.mean(scores))
    best = max(table, key=lambda a: table[a])
    return float(best), table


def lda_weights(sums: np.ndarray, counts: np.ndarray, scatter: np.ndarray, shrinkage: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shrinkage-LDA weights [E, d], biases [E] and centre [d] (equal class priors).

    The score of an activation ``h`` for emotion ``e`` is ``(h - c) @ w[e] + b[e]``, with
    ``c`` the mean of the class means (the vector file's centre): the Gaussian
    log-likelihood of ``h`` under emotion ``e`` up to a term shared by all emotions.
    """
    counts = np.asarray(counts)
    if np.any(counts <= 0):
        raise EmolensError("every emotion of a read-out head needs at least one text")
    mu = sums / counts[:, None]
    center = mu.mean(axis=0)
    cov = _shrunk(within_covariance(sums, counts, scatter), shrinkage)
    rel = mu - center
    weights = np.linalg.solve(cov, rel.T).T
    bias = -0.5 * np.einsum("ed,ed->e", rel, weights)
    return weights, bias, center


@dataclass(frozen=True, eq=False)
class ReadoutHead:
    """A linear read-out stored in a vector file: ``score = (h - center) @ weight.T + bias``.

    ``weight[l]`` [E, d] and ``bias[l]`` [E] at each of ``layers`` (rows in the vector
    file's emotion order); ``meta`` says how it was fitted (kind, shrinkage per layer).

    >>> h = ReadoutHead((2,), np.ones((1, 3, 4)), np.zeros((1, 3)), {"kind": "lda"})
    >>> h.at(2)[0].shape, h.subset([0, 2]).weight.shape
    ((3, 4), (1, 2, 4))
    """

    layers: tuple[int, ...]
    weight: np.ndarray
    bias: np.ndarray
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        w = np.ascontiguousarray(self.weight, dtype=np.float32)
        b = np.ascontiguousarray(self.bias, dtype=np.float32)
        layers = tuple(int(x) for x in self.layers)
        if w.ndim != 3 or b.shape != w.shape[:2] or len(layers) != w.shape[0]:
            raise VectorFileError(f"read-out head: weight {w.shape}, bias {b.shape} and "
                                  f"{len(layers)} layers do not fit together")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise VectorFileError("read-out head holds NaN or inf")
        w.setflags(write=False)
        b.setflags(write=False)
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias", b)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def kind(self) -> str:
        """What fitted it (``"lda"``)."""
        return str(self.meta.get("kind", "linear"))

    def at(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """``(weight [E, d], bias [E])`` at ``layer``; a layer without a head is refused."""
        if layer not in self.layers:
            stored = ", ".join(map(str, self.layers))
            raise VectorFileError(f"this vector file's {self.kind} read-out head covers "
                                  f"layers {stored}, not layer {layer}")
        i = self.layers.index(layer)
        return self.weight[i], self.bias[i]

    def subset(self, rows: Sequence[int]) -> ReadoutHead:
        """The head restricted to some emotions (rows, in the new order)."""
        idx = list(rows)
        return ReadoutHead(self.layers, self.weight[:, idx], self.bias[:, idx], self.meta)
