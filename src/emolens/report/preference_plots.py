"""Drawing primitives of the preference and model-comparison sections: ranked horizontal
bars with intervals (Elo of activities, probe-Elo correlations, per-emotion shifts), and a
scatter with vertical intervals and a control band (ΔElo against probe-Elo r). Plain arrays
in, a matplotlib :class:`Figure` out (no result objects; those are matched to these plots by
:mod:`emolens.report.figures`).

>>> fig = fig_ranked_ci(["a", "b"], [0.5, -0.2], [0.3, -0.4], [0.7, 0.0], "Two", "r")
>>> fig.axes[0].get_xlabel()
'r'
>>> fig = fig_ci_scatter([0.5, -0.5, 0.1], [100, -80, 5], [50, -120, -20], [150, -40, 30],
...                      ["x", "y", "z"], "Steering", "probe r", "ΔElo",
...                      control=("random", 3.0, -10.0, 16.0))
>>> "r = " in fig.axes[0].get_title()
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from emolens.errors import EmolensError
from emolens.report.plots import _fit, _panel_grid, _text

__all__ = ["fig_ci_scatter", "fig_ranked_ci", "fig_ranked_panels"]


def _arr(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _err(m: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Error-bar offsets (zero where an interval end is missing)."""
    return np.maximum(np.vstack([np.where(np.isfinite(lo), m - lo, 0.0),
                                 np.where(np.isfinite(hi), hi - m, 0.0)]), 0.0)


def _check(names: Sequence[str], *arrays: np.ndarray) -> None:
    if not names or any(a.size != len(names) for a in arrays):
        raise EmolensError("names, values, lows and highs must have the same non-zero length")


def _draw_ranked(ax: Any, names: Sequence[str], m: np.ndarray, lo: np.ndarray,
                 hi: np.ndarray, colors: Sequence[str] | None, xlabel: str,
                 reference: float | None) -> None:
    pos = np.arange(len(names))[::-1]  # the first item at the top
    fc = list(colors) if colors is not None else \
        ["tab:red" if v > (reference or 0.0) else "tab:blue" for v in m]
    ax.barh(pos, m - (reference or 0.0), left=reference or 0.0, color=fc, alpha=0.8)
    ax.errorbar(m, pos, xerr=_err(m, lo, hi), fmt="none", ecolor="black", capsize=2, lw=0.8)
    ax.axvline(reference or 0.0, color="0.4", lw=0.8)
    size = 6.0 if len(names) > 40 else 7.5 if len(names) > 20 else 9.0
    ax.set_yticks(pos, [_text(n) for n in names], fontsize=size)
    ax.set_ylim(-0.8, len(names) - 0.2)
    ax.set_xlabel(_text(xlabel), fontsize=9)
    ax.tick_params(axis="x", labelsize=8)


def fig_ranked_ci(names: Sequence[str], values: Any, lows: Any, highs: Any, title: str,
                  xlabel: str, colors: Sequence[str] | None = None,
                  legend: dict[str, str] | None = None, reference: float | None = None,
                  level: float = 0.95) -> Figure:
    """Horizontal bars in the given order (first at the top) with interval whiskers; bars
    start at ``reference`` (default 0). ``colors`` per bar (default: red above the reference,
    blue below) with ``legend`` mapping labels to colours."""
    m, lo, hi = _arr(values), _arr(lows), _arr(highs)
    _check(names, m, lo, hi)
    if colors is not None and len(colors) != len(names):
        raise EmolensError(f"{len(colors)} colours for {len(names)} bars")
    fig = Figure(figsize=(8.5, max(3.0, 0.16 * len(names) + 1.6)), layout="constrained")
    ax = fig.add_subplot()
    _draw_ranked(ax, names, m, lo, hi, colors, xlabel, reference)
    if legend:
        ax.legend(handles=[Patch(color=c, label=_text(k)) for k, c in legend.items()],
                  fontsize=7, loc="lower right")
    ax.set_title(f"{_text(title)}\n({len(names)} items; whiskers: {100 * level:g}% CI)",
                 fontsize=10)
    return fig


def fig_ranked_panels(panels: Sequence[tuple[str, Sequence[str], Any, Any, Any]],
                      title: str, xlabel: str, ncols: int = 3) -> Figure:
    """:func:`fig_ranked_ci` panels side by side, each ``(title, names, values, lows,
    highs)``.

    >>> fig = fig_ranked_panels([("a", ["x", "y"], [1, -1], [0, -2], [2, 0])], "t", "v")
    >>> len(fig.axes)
    1
    """
    tallest = max((len(p[1]) for p in panels), default=1)
    fig, cells = _panel_grid(len(panels), ncols, (4.6, 0.16 * tallest + 1.4, 0.6),
                             "fig_ranked_panels")
    for ax, (ptitle, names, values, lows, highs) in zip(cells, panels, strict=False):
        m, lo, hi = _arr(values), _arr(lows), _arr(highs)
        _check(names, m, lo, hi)
        _draw_ranked(ax, names, m, lo, hi, None, xlabel, None)
        ax.set_title(_text(ptitle), fontsize=9)
    fig.suptitle(_fit(_text(title), fig.get_figwidth(), 11), fontsize=11)
    return fig


def fig_ci_scatter(x: Any, y: Any, ylows: Any, yhighs: Any, labels: Sequence[str],
                   title: str, xlabel: str, ylabel: str,
                   control: tuple[str, float, float, float] | None = None) -> Figure:
    """Points with vertical interval whiskers, each labelled, a least-squares line and
    Pearson r in the title; ``control`` ``(label, value, low, high)`` is drawn as a
    horizontal line with its interval shaded (a condition that has no x, such as a random
    direction)."""
    xs, ys, lo, hi = _arr(x), _arr(y), _arr(ylows), _arr(yhighs)
    _check(labels, xs, ys, lo, hi)
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    if control is not None:
        name, value, c_lo, c_hi = control
        ax.axhspan(c_lo if math.isfinite(c_lo) else value, c_hi if math.isfinite(c_hi)
                   else value, color="0.85", zorder=0)
        ax.axhline(value, color="0.4", ls="--", lw=1, label=f"{_text(name)} (control)")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.axvline(0, color="0.6", lw=0.6)
    ax.errorbar(xs, ys, yerr=_err(ys, lo, hi), fmt="o", ms=4, color="tab:blue",
                ecolor="0.3", capsize=2, lw=0.8)
    for xi, yi, lab in zip(xs, ys, labels, strict=True):
        ax.annotate(_text(lab), (xi, yi), xytext=(3, 3), textcoords="offset points",
                    fontsize=7)
    ok = np.isfinite(xs) & np.isfinite(ys)
    r = math.nan
    if ok.sum() >= 2 and xs[ok].std() > 0 and ys[ok].std() > 0:
        r = float(np.corrcoef(xs[ok], ys[ok])[0, 1])
        slope, icept = np.polyfit(xs[ok], ys[ok], 1)
        grid = np.linspace(xs[ok].min(), xs[ok].max(), 2)
        ax.plot(grid, slope * grid + icept, color="tab:red", ls="--", lw=1)
    if control is not None:
        ax.legend(fontsize=8)
    ax.set_xlabel(_text(xlabel))
    ax.set_ylabel(_text(ylabel))
    rtxt = "n/a" if math.isnan(r) else f"{r:.2f}"
    ax.set_title(f"{_text(title)}\nr = {rtxt} (n = {int(ok.sum())}); whiskers: 95% CI",
                 fontsize=10)
    return fig
