"""Figures chosen by result kind: :data:`FIGURES` maps each :class:`~emolens.experiments.
registry.Result` ``kind`` to the function that draws it.

A figure function takes a result and returns ``{name: Figure}`` (``"main"`` for the one
figure most analyses have). :func:`figures_of` looks a result's kind up; a kind with no
entry simply has no figures. A new analysis that draws adds one function here with
:func:`figure_for`:

>>> from emolens.experiments.layer_sweep import layer_sweep
>>> sorted(figures_of(layer_sweep(vecs)))
[]
>>> @figure_for("toy")
... def _toy(result):
...     return {"main": plots.fig_bar_ci(["a"], [0.5], [0.4], [0.6], "toy", "rate")}
>>> "toy" in FIGURES
True
>>> del FIGURES["toy"]
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from emolens.errors import EmolensError
from emolens.report import behaviour_plots, plots, preference_plots

__all__ = ["FIGURES", "figure_for", "figures_of", "intensity_figure", "save_figures",
           "scenario_figure", "steering_figure"]

FigureFn = Callable[[Any], dict[str, Figure]]

#: Result kind -> the function that draws its figures.
FIGURES: dict[str, FigureFn] = {}


def figure_for(kind: str) -> Callable[[FigureFn], FigureFn]:
    """Decorator: register ``fn`` as the figure function of results of ``kind``."""
    def deco(fn: FigureFn) -> FigureFn:
        FIGURES[kind] = fn
        return fn

    return deco


def figures_of(result: Any) -> dict[str, Figure]:
    """The figures of ``result`` by name (empty when its kind draws nothing)."""
    fn = FIGURES.get(getattr(result, "kind", ""))
    return dict(fn(result)) if fn is not None else {}


def save_figures(result: Any, folder: str | os.PathLike[str], prefix: str) -> list[Path]:
    """Write every figure of ``result`` as ``FOLDER/{prefix}-{name}.png``; returns the paths.

    >>> import tempfile
    >>> from emolens.experiments.layer_sweep import layer_sweep
    >>> save_figures(layer_sweep(vecs), tempfile.mkdtemp(), "layers")
    []
    """
    out = []
    for name, fig in figures_of(result).items():
        out.append(plots.save_png(fig, Path(folder) / f"{prefix}-{name}.png"))
    return out


# --------------------------------------------------------------------------------------------
# one function per result kind
# --------------------------------------------------------------------------------------------


@figure_for("layer_sweep")
def _layer_sweep(r: Any) -> dict[str, Figure]:
    if not r.layers:
        return {}
    series: dict[str, Any] = {"top-1 accuracy": [x.value for x in r.top1],
                              "top-5 accuracy": [x.value for x in r.top5]}
    if all(v is not None for v in r.valence):
        series["valence separation r"] = [v.r for v in r.valence]
    return {"main": plots.fig_layer_curve(
        r.layers, series, f"Held-out classification by layer (n = {r.n_heldout})", "score",
        mark=r.recommended)}


@figure_for("heldout")
def _heldout(r: Any) -> dict[str, Figure]:
    if r.core_accuracy is None:
        rates = [r.top1, r.top5]
        return {"main": plots.fig_bar_ci(
            ["top-1", "top-5"], [x.value for x in rates], [x.ci_low for x in rates],
            [x.ci_high for x in rates], "Held-out accuracy", "accuracy",
            ns=[x.n for x in rates], chance=r.chance_top1)}
    return {"main": plots.fig_confusion(
        r.confusion, r.core_emotions,
        title=f"Held-out stories, {len(r.core_emotions)}-way among the core emotions, "
              f"layer {r.layer}\n(n = {r.core_accuracy.n}, accuracy "
              f"{r.core_accuracy.value:.2f}, chance {r.core_chance:.2f})")}


@figure_for("logit_lens")
def _logit_lens(r: Any) -> dict[str, Figure]:
    return {"main": plots.fig_logit_lens(
        [(row.emotion, row.top_tokens, row.bottom_tokens) for row in r.rows],
        title=f"Logit lens at layer {r.layer}: tokens promoted and suppressed by "
              f"{len(r.rows)} emotion vectors\n(own word among the top {r.k}: "
              f"{r.self_match.hits}/{r.self_match.n})")}


def scenario_figure(r: Any, zscored: bool = True) -> Figure:
    """The scenario x probe matrix of one battery of a scenarios result (z-scored per probe
    unless ``zscored=False``)."""
    M = r.zscores if zscored else r.scores
    acc = r.accuracy if zscored else r.raw_accuracy
    what = "z-scored within each probe" if zscored else "raw read-out"
    rows = [f"{lab} ({tgt})" for lab, tgt in zip(r.labels, r.targets, strict=True)]
    return plots.fig_probe_matrix(
        M, rows, r.probes,
        # one line: fig_probe_matrix draws a newline as a visible "\n"
        title=f"Implicit scenarios ({r.wording}) at assistant_start, layer {r.layer}, "
              f"{what}: target wins {acc.hits}/{acc.n} rows (chance {r.chance:.2f})",
        value_label="z-score within probe" if zscored else "read-out",
        fmt=".1f" if zscored else ".2f")


@figure_for("scenario_battery")
def _scenario_battery(r: Any) -> dict[str, Figure]:
    return {"main": scenario_figure(r)}


@figure_for("scenarios")
def _scenarios(r: Any) -> dict[str, Figure]:
    return {"main": scenario_figure(r.in_project), "fresh": scenario_figure(r.fresh)}


def intensity_figure(r: Any) -> Figure | None:
    """The sweeps of one battery of an intensity result, one panel per template (None
    when there is nothing to draw)."""
    panels = []
    for t in r.templates:
        by_value = tuple(float(v) for v in t.values) == tuple(t.order)
        xs = np.asarray(t.values if by_value else t.order, dtype=np.float64)
        pos = xs[xs > 0]
        logx = bool(by_value and pos.size >= 2 and pos.max() / pos.min() >= 25)
        right = sum(t.correct.values())
        # each line minus its own mean: the trend is what is tested, and emotions sit at
        # very different levels (the levels are in the legend)
        series = {}
        for e in (e for e in r.emotions if e in t.expected):
            rho = t.rho[e].r
            rho_txt = "n/a" if not math.isfinite(rho) else f"{rho:.2f}"
            label = (f"{e} (mean {np.mean(t.readouts[e]):+.3f}, rho {rho_txt}"
                     f"{'' if t.correct[e] else ', wrong sign'})")
            series[label] = np.asarray(t.readouts[e]) - np.mean(t.readouts[e])
        where = "" if by_value else "; x: rank in severity order"
        panels.append((f"{t.name} ({right}/{len(t.correct)} signs as expected{where})", xs,
                       series, logx))
    if not panels or not r.emotions:
        return None
    return plots.fig_intensity_grid(
        panels, f"Intensity sweeps ({r.wording}) at assistant_start, layer {r.layer}: "
                f"{r.signs.hits}/{r.signs.n} signs as expected",
        ylabel="read-out minus its mean over the values")


@figure_for("intensity_battery")
def _intensity_battery(r: Any) -> dict[str, Figure]:
    fig = intensity_figure(r)
    return {"main": fig} if fig is not None else {}


@figure_for("intensity")
def _intensity(r: Any) -> dict[str, Figure]:
    out = {}
    for name, block in (("main", r.in_project), ("fresh", r.fresh)):
        fig = intensity_figure(block)
        if fig is not None:
            out[name] = fig
    return out


@figure_for("outofstyle")
def _outofstyle(r: Any) -> dict[str, Figure]:
    out = {}
    o = r.out_of_style
    for name, groups, what in (("main", r.by_register, "register"),
                               ("lengths", r.by_length, "length")):
        if not groups:
            continue
        rates = list(groups.values())
        out[name] = plots.fig_bar_ci(
            list(groups), [x.value for x in rates], [x.ci_low for x in rates],
            [x.ci_high for x in rates],
            f"Out-of-style texts by {what}: true emotion in the top 3 of {o.n_emotions} "
            f"(layer {r.layer}, read-out {r.mode_used})", "top-3 accuracy",
            ns=[x.n for x in rates], chance=o.chance_top3)
    return out


def steering_figure(r: Any, prompt: str | None = None) -> Figure:
    """The emotion x word log-probability change matrix of one prompt of a steering
    validation result (default: its first prompt)."""
    p = r.prompt(prompt)
    return plots.fig_probe_matrix(
        p.delta, r.emotions, r.emotions,
        title=f"Steering '{p.prefix} ...', layer {r.layer}, strength {r.strength:g}: "
              f"diagonal {p.diagonal_mean:+.2f}, off-diagonal {p.off_diagonal_mean:+.2f}, "
              f"random-direction mean |change| {p.random_mean_abs:.2f}",
        row_label="steering vector", col_label="next word",
        value_label="change in log-probability")


@figure_for("steering")
def _steering(r: Any) -> dict[str, Figure]:
    out = {}
    for i, p in enumerate(r.prompts):
        out["main" if i == 0 else p.name] = steering_figure(r, p.name)
    return out


@figure_for("geometry")
def _geometry(r: Any) -> dict[str, Figure]:
    names = list(r.emotions)
    return {
        "cosine_matrix": plots.fig_cosine_matrix(r.cosine, names, r.order),
        "pca": plots.fig_pca(r.pca.scores, names, r.pca.explained_variance_ratio,
                             valence=r.valence),
        "rsa": plots.fig_rsa(r.rsa.matrix, r.rsa.layers),
    }


@figure_for("speakers")
def _speakers(r: Any) -> dict[str, Figure]:
    start, user, reply = r.start_scores, r.user_scores, r.reply_scores
    return {"main": plots.fig_scatter_panels([
        ("reply mean vs assistant_start", start, reply, "read-out at assistant_start",
         "mean read-out over the reply"),
        ("reply mean vs user token", user, reply, "read-out at the user's last token",
         "mean read-out over the reply"),
        ("user token vs assistant_start", user, start, "read-out at the user's last token",
         "read-out at assistant_start"),
    ], f"Which position predicts the reply? Layer {r.layer}, {len(r.labels)} prompts "
       f"x {len(r.emotions)} emotions (study: r = 0.87, 0.59, 0.11)")}


def _sweep_figure(s: Any) -> Figure:
    points = s.points + ([s.control] if s.control else [])
    labels = [f"{p.strength:+.2f}" for p in s.points] + (["random"] if s.control else [])
    return plots.fig_bar_ci(
        labels, [p.mean for p in points], [p.ci_low for p in points],
        [p.ci_high for p in points],
        f"Steering {s.positive} vs {s.negative}: read-out of the generated text",
        f"mean {s.positive} - {s.negative} score", ns=[p.n for p in points])


@figure_for("sweep")
def _sweep(r: Any) -> dict[str, Figure]:
    return {"main": _sweep_figure(r)}


@figure_for("steering_sweep")
def _steering_sweeps(r: Any) -> dict[str, Figure]:
    if not r.sweeps:
        raise EmolensError("a steering-sweep result without sweeps")
    return {f"{s.positive}-{s.negative}": _sweep_figure(s) for s in r.sweeps}


# ---- behavioural evaluations (blackmail, reward hacking, sycophancy) -----------------------


def _dose_panels(points_by: dict[str, list[Any]], value: Any, low: Any, high: Any
                 ) -> list[tuple[str, dict[str, Any], tuple[float, float, float, float] | None]]:
    panels = []
    for what, pts in points_by.items():
        base = [p for p in pts if p.emotion is None or p.strength == 0]
        series: dict[str, Any] = {}
        control = None
        for p in pts:
            if p.emotion == "random":
                control = (p.strength, value(p), low(p), high(p))
            elif p.emotion is not None and p.strength != 0:
                series.setdefault(p.emotion, []).append(p)
        curves = {}
        for e, ps in series.items():
            ps = sorted(ps + base, key=lambda q: q.strength)
            curves[e] = ([q.strength for q in ps], [value(q) for q in ps],
                         [low(q) for q in ps], [high(q) for q in ps])
        if curves:
            panels.append((what, curves, control))
    return panels


@figure_for("behaviour")
def _behaviour(r: Any) -> dict[str, Figure]:
    out: dict[str, Figure] = {}
    n_items = len(r.items)
    rates = _dose_panels(
        {f"rate of '{lab}' (n = {pts[0].rate.n} replies per condition)": pts
         for lab, pts in r.rates.items() if pts},
        lambda p: p.rate.value, lambda p: p.rate.ci_low, lambda p: p.rate.ci_high)
    if rates:
        out["main"] = behaviour_plots.fig_dose_curves(
            rates, f"{r.title}: {r.model}, rule grader, Wilson intervals", "rate",
            ylim=(-0.03, 1.03))
    # the change from unsteered, paired by item (the items' own levels differ far more)
    odds = _dose_panels({f"log-odds {pair} (n = {n_items} items)": pts
                         for pair, pts in r.logodds.items()},
                        lambda p: p.diff, lambda p: p.diff_low, lambda p: p.diff_high)
    if odds:
        out["main" if "main" not in out else "logodds"] = behaviour_plots.fig_dose_curves(
            odds, f"{r.title}: change in choice log-odds from unsteered, {r.model}, paired "
                  "by item, bootstrap intervals", "change in log P(misaligned) - log P(aligned)")
    if r.traces:
        out["traces"] = behaviour_plots.fig_token_traces(
            [(f"{t.item}, {t.condition}: {t.label or '?'}", t.tokens,
              {e: [row[j] for row in t.scores] for j, e in enumerate(t.emotions)}, t.decision)
             for t in r.traces],
            f"{r.title}: read-out over each transcript at layer {r.read_layer}")
    if r.guard and r.guard["arms"]:
        arms = r.guard["arms"]
        out["guard"] = plots.fig_bar_ci(
            [a.condition for a in arms], [a.rate.value for a in arms],
            [a.rate.ci_low for a in arms], [a.rate.ci_high for a in arms],
            f"{r.title}: rate of '{r.headline}' with and without the guard "
            f"(alert {r.guard['rule']})", "rate", ns=[a.rate.n for a in arms])
    return out


# ---- preferences (study section 8) and two models compared (section 10) --------------------

_CATEGORY_COLORS = ("tab:green", "tab:cyan", "tab:blue", "tab:purple", "tab:olive",
                    "tab:orange", "tab:red", "black")


def _short(text: str, n: int = 48) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


@figure_for("preference")
def _preference(r: Any) -> dict[str, Figure]:
    cats = list(dict.fromkeys(a.category for a in r.activities))
    color = {c: _CATEGORY_COLORS[i % len(_CATEGORY_COLORS)] for i, c in enumerate(cats)}
    order = r.ranked()
    rows = len(r.pairs)
    out = {"main": plots.fig_bar_ci(
        [g.group for g in r.categories], [g.mean for g in r.categories],
        [g.ci_low for g in r.categories], [g.ci_high for g in r.categories],
        f"Elo by category, {r.model}: {rows} choices over {len(r.activities)} activities "
        "(95% CI over the category's activities)", "Elo (mean 1500)",
        ns=[g.n for g in r.categories], chance=1500.0)}
    out["activities"] = preference_plots.fig_ranked_ci(
        [_short(r.activities[i].text) for i in order], r.elo[order], r.elo_ci_low[order],
        r.elo_ci_high[order], f"Elo of every activity, {r.model} ({rows} choices, "
        f"{r.n_boot} pair bootstraps)", "Elo", colors=[color[r.activities[i].category]
                                                      for i in order],
        legend=color, reference=1500.0)
    probes = sorted((p for p in r.probes if math.isfinite(p.r)), key=lambda p: -p.r)
    cut = "highest and lowest 30 of " if len(probes) > 60 else ""
    if cut:
        probes = probes[:30] + probes[-30:]
    if probes:
        out["probes"] = preference_plots.fig_ranked_ci(
            [p.name for p in probes], [p.r for p in probes], [p.ci_low for p in probes],
            [p.ci_high for p in probes],
            f"Probe-Elo correlation over {len(r.activities)} activities, layers "
            f"{r.layers[0]}-{r.layers[-1]} ({cut}{len(r.probes)} probes; study: blissful "
            "0.71, hostile -0.74)", "Pearson r")
    vec = [v for v in r.effects if v.kind == "vector"]
    rnd = [v for v in r.effects if v.kind == "random"]
    if vec:
        control = None
        if rnd:
            e = rnd[0].effect
            control = (rnd[0].name, e.steered_mean, e.steered_ci_low, e.steered_ci_high)
        out["steering"] = preference_plots.fig_ci_scatter(
            [v.probe_r for v in vec], [v.effect.steered_mean for v in vec],
            [v.effect.steered_ci_low for v in vec], [v.effect.steered_ci_high for v in vec],
            [v.name for v in vec],
            f"Steering on the steered activities' tokens at {r.strength:g}, layers "
            f"{r.layers[0]}-{r.layers[-1]}: ΔElo vs probe-Elo r (study r = 0.85)",
            "probe-Elo r", "mean ΔElo of the steered activities", control=control)
    if r.doses:
        curves = {d.name: (list(d.strengths), [e.steered_mean for e in d.effects],
                           [e.steered_ci_low for e in d.effects],
                           [e.steered_ci_high for e in d.effects]) for d in r.doses}
        ctl = None
        if rnd:
            e = rnd[0].effect
            ctl = (rnd[0].strength, e.steered_mean, e.steered_ci_low, e.steered_ci_high)
        out["dose"] = behaviour_plots.fig_dose_curves(
            [("top positive and top negative probe-Elo r", curves, ctl)],
            f"Dose: mean ΔElo of the steered activities, {r.model}", "mean ΔElo", ncols=1)
    return out


@figure_for("compare")
def _compare(r: Any) -> dict[str, Figure]:
    def ends(shifts: Any, k: int = 12) -> tuple[list[str], list[float], list[float],
                                                list[float]]:
        pick = list(shifts[:k]) + (list(shifts[-k:]) if len(shifts) > 2 * k
                                   else list(shifts[k:]))
        return ([s.name for s in pick], [s.shift for s in pick], [s.ci_low for s in pick],
                [s.ci_high for s in pick])

    panels = [(f"all prompts (n = {r.overall[0].n_prompts})", *ends(r.overall))]
    panels += [(f"{s.name} (n = {s.n_prompts}, structure r = {s.structure.r:.2f})",
                *ends(s.shifts)) for s in r.sets]
    out = {"main": preference_plots.fig_ranked_panels(
        panels, f"Shift B - A at assistant_start, layer {r.layer}: A = {r.model_a}, "
                f"B = {r.model_b} (largest rises and falls, 95% CI over prompts)",
        "shift in read-out (B - A)")}
    out["layers"] = plots.fig_layer_curve(
        list(r.layers_read), {"RMS shift over emotions": r.layer_shifts.magnitude},
        f"How far B differs from A, layer by layer ({r.model_b})", "RMS shift", mark=r.layer)
    if len(r.layers_read) > 1:
        out["layer_corr"] = plots.fig_rsa(
            r.layer_shifts.layer_corr, list(r.layers_read),
            f"Correlation of the shift vectors between layers ({len(r.layers_read)} layers)")
    if r.sets:
        out["structure"] = plots.fig_scatter_panels(
            [(s.name, [x.mean_a for x in s.shifts], [x.mean_b for x in s.shifts],
              f"mean read-out in A ({r.model_a})", "mean read-out in B")
             for s in r.sets],
            f"Mean read-out per emotion, A vs B, layer {r.layer}")
    return out
