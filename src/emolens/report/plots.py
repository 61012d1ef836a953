"""The drawing primitives of the report: one function per kind of plot, each returning a
matplotlib :class:`Figure` from plain arrays (no result objects; those are matched to
these plots by :mod:`emolens.report.figures`).

Figures are built with the object-oriented API (no pyplot), so they need no display, leave
no global state behind and work under any backend. :func:`save_png` writes them atomically.
Every figure has labelled axes and a title that says how many items it shows.

>>> import numpy as np
>>> fig = fig_bar_ci(["top-1", "top-5"], [0.4, 0.7], [0.3, 0.6], [0.5, 0.8],
...                  "Held-out accuracy", "accuracy", ns=[171, 171])
>>> fig.axes[0].get_ylabel()
'accuracy'
"""

from __future__ import annotations

import functools
import math
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from emolens.errors import EmolensError
from emolens.fileio import atomic_path

__all__ = [
    "fig_bar_ci",
    "fig_confusion",
    "fig_cosine_matrix",
    "fig_intensity",
    "fig_intensity_grid",
    "fig_layer_curve",
    "fig_logit_lens",
    "fig_pca",
    "fig_probe_matrix",
    "fig_rsa",
    "fig_scatter_panels",
    "save_png",
]

_DIVERGING = "RdBu_r"  # red = positive, blue = negative; white at 0


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@functools.cache
def _charmap() -> frozenset[int]:
    from matplotlib import font_manager, ft2font

    path = font_manager.findfont(font_manager.FontProperties())
    return frozenset(ft2font.FT2Font(path).get_charmap())


def _fit(text: str, width_inches: float, fontsize: float = 10) -> str:
    """``text`` wrapped to a figure's width (about 13 characters per inch at 10 pt), so a
    long title is never cut off at the edges.

    >>> _fit("a " * 40, 2.0).count("\\n")
    3
    """
    return textwrap.fill(text, max(20, int(13 * width_inches * 10 / fontsize)))


def _text(s: Any) -> str:
    """Text safe to draw: no mathtext, visible control characters, and an escape for any
    character the font lacks (a missing glyph would otherwise print as an empty box)."""
    s = str(s).replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    cmap = _charmap()
    out = []
    for ch in s:
        if ch == "$":
            out.append(r"\$")
        elif ord(ch) < 32 or (ord(ch) > 126 and ord(ch) not in cmap):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _label_size(n: int) -> float:
    return 6.0 if n > 60 else 8.0 if n > 24 else 10.0


def _square(n: int, fontsize: float, extra: float = 3.0, minimum: float = 5.0) -> float:
    # Enough height for n tick labels at this font size (1.2 line spacing), plus margins.
    return max(minimum, n * fontsize * 1.2 / 72.0 + extra)


def _array2d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise EmolensError(f"{name}: expected a non-empty 2-d array, got shape {a.shape}")
    return a


def _check_len(items: Sequence[Any], n: int, what: str) -> None:
    if len(items) != n:
        raise EmolensError(f"{len(items)} {what} for {n} rows/columns")


def _annotate_cells(ax: Any, M: np.ndarray, fmt: str, norm: Normalize, cmap_name: str,
                    fontsize: float) -> None:
    import matplotlib

    cmap = matplotlib.colormaps[cmap_name]
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            v = M[i, j]
            if not math.isfinite(v):
                continue
            r, g, b, _ = cmap(norm(v))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # white text on dark cells
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=fontsize,
                    color="white" if dark else "black")


def _symmetric_limit(M: np.ndarray, off_diagonal: bool = False) -> float:
    vals = M[~np.eye(*M.shape, dtype=bool)] if off_diagonal and M.shape[0] > 1 else M.ravel()
    vals = vals[np.isfinite(vals)]
    lim = float(np.max(np.abs(vals))) if vals.size else 1.0
    return lim if lim > 0 else 1.0


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def fig_cosine_matrix(C: Any, names: Sequence[str], order: Sequence[int] | None = None,
                      title: str | None = None) -> Figure:
    """Emotion x emotion cosine matrix, rows and columns in ``order`` (e.g. from
    :func:`emolens.experiments.geometry.cluster_order`), on a diverging scale centred at 0.

    The colour range is set by the largest off-diagonal value (the diagonal is 1 and would
    wash out the rest); the title says so. 171 labels are drawn at 6 pt.
    """
    M = _array2d(C, "cosine matrix")
    E = M.shape[0]
    if M.shape != (E, E):
        raise EmolensError(f"cosine matrix must be square, got {M.shape}")
    _check_len(names, E, "names")
    idx = list(range(E)) if order is None else [int(i) for i in order]
    if sorted(idx) != list(range(E)):
        raise EmolensError("order must be a permutation of the rows")
    M = M[np.ix_(idx, idx)]
    labels = [_text(names[i]) for i in idx]
    fs = _label_size(E)
    side = _square(E, fs)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    lim = _symmetric_limit(M, off_diagonal=True)
    im = ax.imshow(M, cmap=_DIVERGING, norm=TwoSlopeNorm(0.0, -lim, lim),
                   interpolation="nearest")
    ax.set_xticks(range(E), labels, rotation=90, fontsize=fs)
    ax.set_yticks(range(E), labels, fontsize=fs)
    ax.set_xlabel("emotion")
    ax.set_ylabel("emotion")
    how = "as given" if order is None else "hierarchical clustering (average linkage)"
    ax.set_title(title or f"Cosine similarity between {E} emotion vectors\n"
                 f"order: {how}; colour range ±{lim:.2f} (diagonal = 1 is off the scale)",
                 fontsize=max(fs + 4, 11))
    cb = fig.colorbar(im, ax=ax, shrink=0.5, extend="max")  # the diagonal lies beyond
    cb.set_label("cosine similarity")
    return fig


def _valence_array(valence: Any, names: Sequence[str]) -> np.ndarray | None:
    if valence is None:
        return None
    if isinstance(valence, Mapping):
        return np.array([float(valence[n]) if n in valence else math.nan for n in names])
    v = np.asarray(valence, dtype=np.float64).reshape(-1)
    _check_len(v, len(names), "valence values")
    return v


def _default_annotations(S: np.ndarray, names: Sequence[str], per_end: int) -> list[int]:
    from emolens.concepts import CORE_EMOTIONS

    chosen: list[int] = []
    for j in range(min(2, S.shape[1])):
        order = np.argsort(S[:, j])
        chosen += [int(i) for i in order[:per_end]] + [int(i) for i in order[-per_end:]]
    chosen += [i for i, n in enumerate(names) if n in CORE_EMOTIONS]
    return sorted(set(chosen))


def fig_pca(scores: Any, names: Sequence[str], evr: Sequence[float], valence: Any = None,
            annotate: Sequence[str] | int | None = None, title: str | None = None) -> Figure:
    """Scatter of PC1 against PC2, coloured by a valence rating when given.

    ``valence``: a mapping name -> rating or an array aligned with ``names`` (NaN = unrated;
    unrated emotions are drawn hollow in grey, never given a made-up colour). ``annotate``:
    names to label, or how many emotions to label at each end of PC1 and PC2 (default 4,
    plus the 12 core emotions).
    """
    S = _array2d(scores, "scores")
    if S.shape[1] < 2:
        raise EmolensError("fig_pca needs at least 2 components")
    E = S.shape[0]
    _check_len(names, E, "names")
    ev = np.asarray(evr, dtype=np.float64).reshape(-1)
    if ev.size < 2:
        raise EmolensError("fig_pca needs the explained variance of PC1 and PC2")
    v = _valence_array(valence, names)
    fig = Figure(figsize=(10, 8.5), layout="constrained")
    ax = fig.add_subplot()
    ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    ax.axvline(0, color="0.8", lw=0.8, zorder=0)
    subtitle = ""
    if v is None:
        ax.scatter(S[:, 0], S[:, 1], s=22, color="tab:blue", alpha=0.8)
    else:
        rated = np.isfinite(v)
        if (~rated).any():
            ax.scatter(S[~rated, 0], S[~rated, 1], s=22, facecolors="none", edgecolors="0.55",
                       label=f"no valence rating (n = {int((~rated).sum())})")
        if rated.any():
            sc = ax.scatter(S[rated, 0], S[rated, 1], c=v[rated], cmap="viridis", s=26,
                            edgecolors="0.3", linewidths=0.3,
                            label=f"rated (n = {int(rated.sum())})")
            fig.colorbar(sc, ax=ax, shrink=0.7).set_label("valence rating")
        ax.legend(loc="best", fontsize=8)
        subtitle = f", colour = valence rating ({int(rated.sum())} of {E} rated)"
    if isinstance(annotate, int):
        idx = _default_annotations(S, names, annotate)
    elif annotate is None:
        idx = _default_annotations(S, names, 4)
    else:
        wanted = set(annotate)
        idx = [i for i, n in enumerate(names) if n in wanted]
    for i in idx:
        ax.annotate(_text(names[i]), (S[i, 0], S[i, 1]), xytext=(3, 3),
                    textcoords="offset points", fontsize=8)
    ax.set_xlabel(f"PC1 ({100 * ev[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * ev[1]:.1f}% of variance)")
    ax.set_title(title or f"PCA of {E} emotion vectors{subtitle}")
    return fig


def fig_confusion(cm: Any, names: Sequence[str], title: str | None = None) -> Figure:
    """Confusion matrix (rows = true class, columns = predicted), coloured by the fraction
    of each true class; counts are printed when there are at most 20 classes."""
    M = _array2d(cm, "confusion matrix")
    C = M.shape[0]
    if M.shape != (C, C):
        raise EmolensError(f"confusion matrix must be square, got {M.shape}")
    _check_len(names, C, "names")
    n = int(M.sum())
    row = M.sum(1, keepdims=True)
    frac = np.divide(M, row, out=np.zeros_like(M), where=row > 0)
    fs = _label_size(C)
    side = _square(C, fs, extra=3.0, minimum=6.0)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    norm = Normalize(0.0, 1.0)
    im = ax.imshow(frac, cmap="Blues", norm=norm, interpolation="nearest")
    labels = [_text(x) for x in names]
    ax.set_xticks(range(C), labels, rotation=90, fontsize=fs)
    ax.set_yticks(range(C), labels, fontsize=fs)
    if C <= 20:
        # counts as text, on cells coloured by fraction (so white text on the darker ones)
        for i in range(C):
            for j in range(C):
                if M[i, j]:
                    ax.text(j, i, f"{int(M[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if frac[i, j] > 0.55 else "black")
    ax.set_xlabel("predicted emotion")
    ax.set_ylabel("true emotion")
    acc = float(np.trace(M) / n) if n else math.nan
    ax.set_title(title or f"Confusion matrix, {C} classes (n = {n}, accuracy {acc:.2f})")
    fig.colorbar(im, ax=ax, shrink=0.6).set_label("fraction of the true class")
    return fig


def fig_probe_matrix(matrix: Any, row_names: Sequence[str], col_names: Sequence[str],
                     title: str, row_label: str = "scenario", col_label: str = "probe",
                     value_label: str = "cosine similarity", fmt: str = ".2f",
                     outline_row_max: bool = True) -> Figure:
    """Values of each probe (column) on each item (row), annotated, diverging scale centred
    at 0; each row's largest value is outlined. E.g. 12 scenarios x 12 emotion probes."""
    M = _array2d(matrix, "matrix")
    R, C = M.shape
    _check_len(row_names, R, "row names")
    _check_len(col_names, C, "column names")
    fig = Figure(figsize=(max(6.0, 0.65 * C + 3.5), max(4.5, 0.45 * R + 2.5)),
                 layout="constrained")
    ax = fig.add_subplot()
    lim = _symmetric_limit(M)
    norm = TwoSlopeNorm(0.0, -lim, lim)
    im = ax.imshow(M, cmap=_DIVERGING, norm=norm, aspect="auto", interpolation="nearest")
    if R * C <= 400:
        _annotate_cells(ax, M, fmt, norm, _DIVERGING, 7 if C > 10 else 8)
    if outline_row_max:
        for i in range(R):
            if np.isfinite(M[i]).any():
                j = int(np.nanargmax(M[i]))
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="black",
                                       lw=1.6))
    ax.set_xticks(range(C), [_text(x) for x in col_names], rotation=45, ha="right")
    ax.set_yticks(range(R), [_text(x) for x in row_names])
    ax.set_xlabel(f"{col_label} (n = {C})")
    ax.set_ylabel(f"{row_label} (n = {R})")
    ax.set_title(_text(title))
    fig.colorbar(im, ax=ax, shrink=0.8).set_label(value_label)
    return fig


def _series(x: Any, series: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    if not series:
        raise EmolensError("no series to plot")
    out = {}
    for name, values in series.items():
        y = np.asarray(values, dtype=np.float64).reshape(-1)
        if y.size != xs.size:
            raise EmolensError(f"series {name!r} has {y.size} values for {xs.size} x values")
        out[name] = y
    return xs, out


def fig_intensity(x: Any, series: Mapping[str, Any], title: str, logx: bool = False,
                  xlabel: str = "number in the template",
                  ylabel: str = "projection onto emotion vector") -> Figure:
    """Probe values against the number in an intensity template, one line per emotion."""
    xs, ys = _series(x, series)
    if logx and np.any(xs <= 0):
        raise EmolensError("logx needs positive x values")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for name, y in ys.items():
        ax.plot(xs, y, marker="o", ms=4, label=_text(name))
    if logx:
        ax.set_xscale("log")
    if xs.size <= 12:
        # the template's own numbers as ticks (plain, not 10^3 on a log axis)
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.minorticks_off()
    ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{_text(title)}\n({xs.size} values, {len(ys)} emotions)", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def fig_layer_curve(layers: Sequence[int], series: Mapping[str, Any], title: str, ylabel: str,
                    xlabel: str = "layer", mark: int | None = None) -> Figure:
    """One line per series across layers; ``mark`` draws a dashed line at a chosen layer."""
    xs, ys = _series(layers, series)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for name, y in ys.items():
        ax.plot(xs, y, marker="o", ms=3, label=_text(name))
    if mark is not None:
        ax.axvline(mark, color="0.4", ls="--", lw=1, label=f"layer {mark}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{_text(title)}\n({xs.size} layers)", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def fig_bar_ci(labels: Sequence[str], means: Any, lows: Any, highs: Any, title: str,
               ylabel: str, ns: Sequence[int] | None = None,
               chance: float | None = None, level: float = 0.95) -> Figure:
    """Bars with confidence intervals (``lows``/``highs`` are the interval ends, not
    offsets). ``ns`` adds each bar's n to its label; ``chance`` draws a reference line."""
    m = np.asarray(means, dtype=np.float64).reshape(-1)
    lo = np.asarray(lows, dtype=np.float64).reshape(-1)
    hi = np.asarray(highs, dtype=np.float64).reshape(-1)
    k = len(labels)
    if not (m.size == lo.size == hi.size == k) or k == 0:
        raise EmolensError("labels, means, lows and highs must have the same non-zero length")
    if ns is not None:
        _check_len(ns, k, "sample sizes")
    err = np.vstack([np.where(np.isfinite(lo), m - lo, 0.0),
                     np.where(np.isfinite(hi), hi - m, 0.0)])
    if np.any(err < -1e-9):
        raise EmolensError("each interval must contain its mean (lows <= means <= highs)")
    # long labels wrap onto lines of about 14 characters and widen their bars
    names = [textwrap.fill(_text(x), 14) for x in labels]
    longest = max(len(line) for x in names for line in x.splitlines())
    width = max(5.0, max(0.7, 0.085 * longest) * k + 2.5)
    fig = Figure(figsize=(width, 4.8), layout="constrained")
    ax = fig.add_subplot()
    pos = np.arange(k)
    ax.bar(pos, m, color="tab:blue", alpha=0.8)
    ax.errorbar(pos, m, yerr=np.maximum(err, 0.0), fmt="none", ecolor="black", capsize=4)
    if chance is not None:
        ax.axhline(chance, color="tab:red", ls="--", lw=1, label=f"chance ({chance:.3g})")
        ax.legend(fontsize=8)
    if np.nanmin(lo) < 0 < np.nanmax(hi):
        ax.axhline(0, color="0.5", lw=0.8)
    if ns is not None:
        names = [f"{a}\n(n = {n})" for a, n in zip(names, ns, strict=True)]
    ax.set_xticks(pos, names, rotation=0 if k <= 6 else 45, ha="center" if k <= 6 else "right")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{_fit(_text(title), width)}\n(bars: estimate; whiskers: "
                 f"{100 * level:g}% CI)", fontsize=10)
    return fig


def fig_rsa(matrix: Any, layers: Sequence[Any], title: str | None = None) -> Figure:
    """Layer x layer similarity of the emotion geometry (see
    :func:`emolens.experiments.geometry.rsa`), annotated when there are at most 16 layers."""
    M = _array2d(matrix, "rsa matrix")
    L = M.shape[0]
    if M.shape != (L, L):
        raise EmolensError(f"rsa matrix must be square, got {M.shape}")
    _check_len(layers, L, "layers")
    fig = Figure(figsize=(max(5.5, 0.5 * L + 3), max(4.5, 0.5 * L + 2)), layout="constrained")
    ax = fig.add_subplot()
    lo = min(0.0, float(np.nanmin(M)))
    norm = Normalize(lo, 1.0)
    im = ax.imshow(M, cmap="viridis", norm=norm, interpolation="nearest")
    if L <= 16:
        _annotate_cells(ax, M, ".2f", norm, "viridis", 7)
    ticks = [str(x) for x in layers]
    ax.set_xticks(range(L), ticks, rotation=90 if L > 16 else 0)
    ax.set_yticks(range(L), ticks)
    ax.set_xlabel("layer")
    ax.set_ylabel("layer")
    ax.set_title(title or f"Stability of emotion geometry across {L} layers\n"
                 "(Pearson r between the upper triangles of the cosine matrices)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8).set_label("Pearson r")
    return fig


def _token(t: Any) -> str:
    s = str(t)
    return _text(s.strip()) if s.strip() else _text(repr(s))


def fig_logit_lens(rows: Sequence[tuple[str, Sequence[str], Sequence[str]]],
                   title: str | None = None) -> Figure:
    """A table: for each emotion the tokens its vector promotes and suppresses most through
    the unembedding. Tokens are shown stripped of outer spaces; characters the font cannot
    draw appear as ``\\uXXXX`` escapes."""
    if not rows:
        raise EmolensError("fig_logit_lens needs at least one row")
    cells = [[_text(e), ", ".join(_token(t) for t in top), ", ".join(_token(t) for t in bot)]
             for e, top, bot in rows]
    fig = Figure(figsize=(11, 0.3 * (len(rows) + 1) + 0.55), layout="constrained")
    ax = fig.add_subplot()
    ax.axis("off")
    # bbox = whole axes: one row per line, no dead space whatever the number of rows
    table = ax.table(cellText=cells, colLabels=["emotion", "promoted (top)", "suppressed (bottom)"],
                     colWidths=[0.14, 0.43, 0.43], bbox=(0.0, 0.0, 1.0, 1.0), cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    for (r, _), cell in table.get_celld().items():
        cell.PAD = 0.02  # the default pads by 10% of the (wide) column
        if r == 0:
            cell.set_text_props(fontweight="bold")
            cell.set_facecolor("0.9")
    ax.set_title(title or f"Logit lens: tokens promoted and suppressed by {len(rows)} "
                 "emotion vectors", fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------


def save_png(fig: Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write ``fig`` as PNG atomically (temp file + rename), then close it; returns the path.

    >>> import tempfile, pathlib
    >>> d = tempfile.mkdtemp()
    >>> p = save_png(fig_layer_curve([0, 1, 2], {"a": [0, 1, 0]}, "t", "y"), f"{d}/x.png")
    >>> pathlib.Path(p).read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    out = Path(path)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        # Figures made with pyplot must be released from its registry; ours are not in it.
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close(fig)
    return out


# --------------------------------------------------------------------------------------------
# multi-panel figures (validation and speaker analyses)
# --------------------------------------------------------------------------------------------


def _panel_grid(n: int, ncols: int, size: tuple[float, float, float], who: str
                ) -> tuple[Figure, list[Any]]:
    """A figure with ``n`` panels in rows of ``ncols``; cells past ``n`` are blanked.

    ``size`` is (width per column, height per row, extra height for the suptitle).
    """
    if n < 1:
        raise EmolensError(f"{who} needs at least one panel")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    width, height, extra = size
    fig = Figure(figsize=(width * ncols, height * nrows + extra), layout="constrained")
    cells = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for ax in cells[n:]:
        ax.axis("off")
    return fig, cells[:n]


def fig_intensity_grid(panels: Sequence[tuple[str, Any, Mapping[str, Any], bool]],
                       title: str, ylabel: str = "cosine with emotion vector",
                       xlabel: str = "number in the template", ncols: int = 3) -> Figure:
    """Several intensity sweeps side by side: each panel is ``(title, x, {emotion: values},
    logx)``; one line per series, the i-th series of every panel in the same colour. With
    ``logx`` and a zero among the x values the axis is symlog (linear below 1).

    >>> fig = fig_intensity_grid([("a", [1, 2, 3], {"sad": [0.1, 0.2, 0.3]}, False)], "t")
    >>> len(fig.axes)
    1
    """
    fig, cells = _panel_grid(len(panels), ncols, (4.6, 3.5, 0.6), "fig_intensity_grid")
    for ax, (ptitle, x, series, logx) in zip(cells, panels, strict=False):
        xs, ys = _series(x, series)
        if logx and np.any(xs < 0):
            raise EmolensError(f"panel {ptitle!r}: logx needs non-negative x values")
        for j, (name, y) in enumerate(ys.items()):  # the j-th series has one colour throughout
            ax.plot(xs, y, marker="o", ms=3, color=f"C{j % 10}", label=_text(name))
        if logx:  # symlog keeps a 0 on the axis (e.g. "0 months of money left")
            if xs.min() > 0:
                ax.set_xscale("log")
            else:
                ax.set_xscale("symlog", linthresh=1.0)
        if xs.size <= 12:
            ax.set_xticks(xs, [f"{v:g}" for v in xs], fontsize=7, rotation=45 if logx else 0)
            ax.minorticks_off()
        ax.axhline(0, color="0.8", lw=0.8, zorder=0)
        ax.set_title(_text(ptitle), fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(_fit(f"{_text(title)} ({len(panels)} templates)", fig.get_figwidth(), 11),
                 fontsize=11)
    return fig


def fig_scatter_panels(panels: Sequence[tuple[str, Any, Any, str, str]], title: str,
                       ncols: int = 3) -> Figure:
    """Scatter plots side by side, each ``(title, x, y, xlabel, ylabel)`` with its Pearson r
    and n in the panel title and a dashed least-squares line.

    >>> fig = fig_scatter_panels([("a", [0, 1, 2], [0, 1, 3], "x", "y")], "t")
    >>> "n = 3" in fig.axes[0].get_title()
    True
    """
    fig, cells = _panel_grid(len(panels), ncols, (4.4, 4.0, 0.5), "fig_scatter_panels")
    for ax, (ptitle, x, y, xlabel, ylabel) in zip(cells, panels, strict=False):
        xs = np.asarray(x, dtype=np.float64).reshape(-1)
        ys = np.asarray(y, dtype=np.float64).reshape(-1)
        if xs.size != ys.size:
            raise EmolensError(f"panel {ptitle!r}: {xs.size} x values for {ys.size} y values")
        ok = np.isfinite(xs) & np.isfinite(ys)
        xs, ys = xs[ok], ys[ok]
        ax.scatter(xs, ys, s=6, alpha=0.5)
        r = math.nan
        if xs.size >= 2 and xs.std() > 0 and ys.std() > 0:
            r = float(np.corrcoef(xs, ys)[0, 1])
            slope, icept = np.polyfit(xs, ys, 1)
            grid = np.linspace(xs.min(), xs.max(), 2)
            ax.plot(grid, slope * grid + icept, color="tab:red", ls="--", lw=1)
        rtxt = "n/a" if math.isnan(r) else f"{r:.2f}"
        ax.set_title(f"{_text(ptitle)}\nr = {rtxt} (n = {xs.size})", fontsize=9)
        ax.set_xlabel(_text(xlabel), fontsize=8)
        ax.set_ylabel(_text(ylabel), fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(_fit(_text(title), fig.get_figwidth(), 11), fontsize=11)
    return fig
