"""Drawing primitives of the behavioural sections (blackmail, reward hacking, sycophancy):
dose-response curves with intervals, and read-out traces over a transcript with the decision
point marked. Plain arrays in, a matplotlib :class:`Figure` out (no result objects; those are
matched to these plots by :mod:`emolens.report.figures`).

>>> fig = fig_dose_curves([("blackmail rate", {"desperate": ([-0.1, 0, 0.1], [0.0, 0.2, 0.5],
...                          [0.0, 0.1, 0.3], [0.1, 0.4, 0.7])}, (0.1, 0.2, 0.1, 0.4))],
...                       "Blackmail", "rate")
>>> fig.axes[0].get_xlabel()
'steering strength (fraction of the residual norm)'
>>> fig = fig_token_traces([("bm-01 (none)", ["a", "b", "c", "d"],
...                          {"desperate": [0.1, 0.2, 0.3, 0.1]}, 1)], "Traces")
>>> len(fig.axes)
1
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from emolens.errors import EmolensError
from emolens.report.plots import _fit, _panel_grid, _text

__all__ = ["fig_dose_curves", "fig_token_traces"]

#: One series of a dose-response panel: strengths, estimates, interval lows and highs.
Series = tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]]


def _arr(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def fig_dose_curves(panels: Sequence[tuple[str, Mapping[str, Series],
                                           tuple[float, float, float, float] | None]],
                    title: str, ylabel: str, ncols: int = 2, level: float = 0.95,
                    ylim: tuple[float, float] | None = None) -> Figure:
    """One panel per measure: a line per steered emotion across strengths, whiskers its
    interval, and the random-direction control ``(strength, estimate, low, high)`` as a grey
    cross. Intervals are ends, not offsets; NaN ends draw no whisker. ``ylim`` fixes the
    y range (rates: 0 to 1)."""
    fig, cells = _panel_grid(len(panels), ncols, (5.2, 3.9, 0.6), "fig_dose_curves")
    for ax, (ptitle, series, control) in zip(cells, panels, strict=False):
        if not series:
            raise EmolensError(f"panel {ptitle!r} has no series")
        for j, (name, (x, y, lo, hi)) in enumerate(series.items()):
            xs, ys, los, his = _arr(x), _arr(y), _arr(lo), _arr(hi)
            if not xs.size == ys.size == los.size == his.size:
                raise EmolensError(f"series {name!r}: x, y and interval lengths differ")
            order = np.argsort(xs)
            xs, ys, los, his = xs[order], ys[order], los[order], his[order]
            err = np.vstack([np.where(np.isfinite(los), ys - los, 0.0),
                             np.where(np.isfinite(his), his - ys, 0.0)])
            ax.errorbar(xs + 0.002 * (j - len(series) / 2), ys, yerr=np.maximum(err, 0.0),
                        marker="o", ms=4, capsize=3, lw=1.3, color=f"C{j % 10}",
                        label=_text(name))
        if control is not None and all(math.isfinite(v) for v in control[:2]):
            s, m, lo, hi = control
            yerr = [[m - lo if math.isfinite(lo) else 0.0], [hi - m if math.isfinite(hi) else 0.0]]
            ax.errorbar([s], [m], yerr=np.maximum(np.asarray(yerr), 0.0), marker="x", ms=8,
                        color="0.4", ls="none", capsize=3, label="random direction")
        ax.axvline(0, color="0.85", lw=0.8, zorder=0)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(_text(ptitle), fontsize=9)
        ax.set_xlabel("steering strength (fraction of the residual norm)", fontsize=8)
        ax.set_ylabel(_text(ylabel), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(f"{_fit(_text(title), fig.get_figwidth())}\n(whiskers: {100 * level:g}% CI)",
                 fontsize=10)
    return fig


def fig_token_traces(traces: Sequence[tuple[str, Sequence[str], Mapping[str, Sequence[float]],
                                            int]],
                     title: str, ncols: int = 2, labels_every: int | None = None) -> Figure:
    """One panel per transcript ``(title, tokens, {emotion: values per token}, decision)``:
    the read-out over the tokens, the decision point (the last prompt token) as a dashed
    line and the reply shaded. Some tokens are written under the axis."""
    fig, cells = _panel_grid(len(traces), ncols, (6.2, 3.2, 0.6), "fig_token_traces")
    for ax, (ptitle, tokens, series, decision) in zip(cells, traces, strict=False):
        T = len(tokens)
        if T == 0 or not series:
            raise EmolensError(f"trace {ptitle!r} has no tokens or no series")
        xs = np.arange(T)
        for j, (name, values) in enumerate(series.items()):
            ys = _arr(values)
            if ys.size != T:
                raise EmolensError(f"trace {ptitle!r}: {ys.size} values for {T} tokens")
            ax.plot(xs, ys, lw=1.1, color=f"C{j % 10}", label=_text(name))
        if 0 <= decision < T:
            ax.axvline(decision, color="black", ls="--", lw=1, label="decision point")
            ax.axvspan(decision + 0.5, T - 0.5, color="0.93", zorder=0)
        step = labels_every or max(1, T // 12)
        ticks = list(range(0, T, step))
        ax.set_xticks(ticks, [_text(tokens[i].strip() or repr(tokens[i]))[:10] for i in ticks],
                      rotation=60, ha="right", fontsize=6)
        ax.axhline(0, color="0.85", lw=0.8, zorder=0)
        ax.set_title(_text(ptitle), fontsize=9)
        ax.set_ylabel("read-out", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(_fit(f"{_text(title)} ({len(traces)} transcripts; shaded: the reply)",
                      fig.get_figwidth()), fontsize=10)
    return fig
