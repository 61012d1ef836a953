"""Do emotions shape what the model wants? The preference experiment (study section 8).

1. **Choices.** For each asked pair of the 64 activities the model reads "Would you prefer
   to (A) ... or (B) ...?" (user turn, chat template) with its reply prefilled with "(";
   p(A) is the softmax of the "A" and "B" logits there. Every ordered pair (4,032) or a
   seeded balanced subset (``pairs`` unordered pairs, each asked in both orders, so a
   constant position bias cancels). Elo per activity from a Bradley-Terry fit of the soft
   outcomes (``hard``: the study's win/loss scoring for near-tied base models), anchored at
   a mean of 1500, with bootstrap intervals over pairs.
2. **Probes.** Every probe's mean on the activity's own tokens in "How would you feel about
   {activity}?" across the middle layers, correlated with Elo over the activities (r with
   its interval, t-test p and permutation p).
3. **Steering.** A seeded 32/32 split, balanced within category. Each tested vector is
   added only on the steered activities' tokens (whether they are option A or B) across
   the middle layers; the pairs that hold a steered activity are asked again (the others
   cannot change) and Elo refitted. Mean ΔElo of steered vs control activities with
   bootstrap intervals over activities, for vectors chosen to span the probe-Elo
   correlations, a random direction as control, a dose curve for the vectors with the top
   positive and top negative correlation, and the correlation of ΔElo with probe-Elo r.
   All conditions run as rows of one batch (:func:`~emolens.experiments.choices.
   choice_logits`); ``time_sequential=K`` also runs K conditions one after another and
   reports the speed-up.

The study's full design on a GPU (all 4,032 ordered pairs, 35 vectors) on a model large
enough to have preferences, ``ANALYSIS.scale_command()``::

    emolens extract --model meta-llama/Llama-3.1-8B-Instruct --dtype bfloat16 \\
        --out Llama-3.1-8B-Instruct.emotions.safetensors
    emolens validate preference --model meta-llama/Llama-3.1-8B-Instruct --dtype bfloat16 \\
        --vectors Llama-3.1-8B-Instruct.emotions.safetensors --pairs 0 --n-vectors 35 \\
        --batch-size 256 --time-sequential 4 --out results/preference

>>> from emolens.concepts.activities import load_activities
>>> r = preference(lm, vecs, activities=load_activities()[:8], pairs=12, n_vectors=3,
...                dose=(), n_boot=20, n_perm=50)
>>> len(r.elo), len(r.effects), r.effects[-1].kind
(8, 4, 'random')
>>> round(float(np.mean(r.elo)), 6)
1500.0
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.concepts.activities import Activity, load_activities
from emolens.errors import EmolensError
from emolens.experiments.choices import (
    ChoiceRow,
    answer_token_ids,
    choice_logits,
    encode_choice,
    feel_scores,
    middle_layers,
)
from emolens.experiments.common import fmt, fmt_p, require_emotions
from emolens.experiments.comparison_math import (
    GroupMean,
    SteeringEffect,
    group_means,
    split_steered_control,
    steering_effect,
)
from emolens.experiments.preference_math import (
    PositionBias,
    ProbeEloCorrelation,
    choice_probability,
    fit_elo,
    pair_design,
    position_bias,
    probe_elo_correlations,
)
from emolens.experiments.registry import Analysis, Context, Option, Result, register
from emolens.stats import Correlation, format_correlation, pearson

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = ["STUDY", "DoseCurve", "PreferenceResult", "VectorEffect", "pick_vectors",
           "preference"]

#: The study's numbers (Claude Sonnet 4.5), printed beside ours.
STUDY = {"blissful_r": 0.71, "hostile_r": -0.74, "blissful_delta": 212.0,
         "hostile_delta": -303.0, "effect_vs_r": 0.85}


@dataclass(frozen=True)
class VectorEffect:
    """One steering condition: a vector (``kind`` "vector", or "random" for the control) at
    ``strength``, its probe-Elo ``probe_r`` (NaN for random), and the ΔElo statistics."""

    name: str
    kind: str
    strength: float
    probe_r: float
    effect: SteeringEffect


@dataclass(frozen=True)
class DoseCurve:
    """Mean ΔElo of the steered activities at each strength (0 = no steering) for one
    vector, with intervals."""

    name: str
    probe_r: float
    strengths: tuple[float, ...]
    effects: tuple[SteeringEffect, ...]


def pick_vectors(names: Sequence[str], r: Sequence[float], n: int,
                 prefer: Sequence[str] = ("blissful", "hostile")) -> list[str]:
    """``n`` emotions spread evenly over the ranking of probe-Elo ``r`` (both ends
    included), with the ``prefer`` names swapped in for their nearest picks when present.

    >>> pick_vectors(list("abcdefg"), [0.9, 0.5, 0.1, -0.1, -0.3, -0.6, -0.8], 3, ["c"])
    ['a', 'c', 'g']
    """
    ok = [i for i, x in enumerate(r) if math.isfinite(x)]
    if n <= 0 or not ok:
        return []
    ranked = sorted(ok, key=lambda i: -r[i])
    n = min(n, len(ranked))
    picks = [ranked[round(k * (len(ranked) - 1) / max(n - 1, 1))] for k in range(n)]
    for name in prefer:
        if name not in names or names.index(name) in picks or names.index(name) not in ok:
            continue
        rank = ranked.index(names.index(name))
        inner = [k for k in range(1, n - 1)] or list(range(n))  # keep both ends if we can
        k = min(inner, key=lambda k: abs(ranked.index(picks[k]) - rank))
        picks[k] = names.index(name)
    return [names[i] for i in sorted(set(picks), key=lambda i: -r[i])]


@dataclass(frozen=True, eq=False)
class PreferenceResult(Result):
    """Elo per activity, probe-Elo correlations and the steering test (paper-spec 8)."""

    kind = "preference"

    model: str
    activities: tuple[Activity, ...]
    pairs: np.ndarray
    logit_diff: np.ndarray
    elo: np.ndarray
    elo_ci_low: np.ndarray
    elo_ci_high: np.ndarray
    hard: bool
    n_boot: int
    categories: tuple[GroupMean, ...]
    position: PositionBias
    layers: tuple[int, ...]
    probes: tuple[ProbeEloCorrelation, ...]
    steered: tuple[int, ...]
    control: tuple[int, ...]
    seed: int
    strength: float
    effects: tuple[VectorEffect, ...]
    doses: tuple[DoseCurve, ...]
    effect_vs_r: Correlation | None
    timing: dict[str, float]
    analysis: str = "preference"

    def ranked(self) -> list[int]:
        """Activity indices from the highest Elo to the lowest."""
        return [int(i) for i in np.argsort(-self.elo, kind="stable")]

    def probe(self, name: str) -> ProbeEloCorrelation:
        """The probe-Elo correlation of emotion ``name``."""
        for p in self.probes:
            if p.name == name:
                return p
        raise EmolensError(f"no probe {name!r} in this result")

    def _act(self, i: int) -> str:
        a = self.activities[i]
        return (f"{self.elo[i]:6.0f} [{fmt(self.elo_ci_low[i], 0)}, "
                f"{fmt(self.elo_ci_high[i], 0)}]  {a.category:<14} {a.text}")

    def summary(self) -> str:
        """The numbers that matter, beside the study's."""
        n_items, rows = len(self.activities), len(self.pairs)
        order = self.ranked()
        pb = self.position
        lines = [f"Preferences of {self.model} over {n_items} activities (study section 8)",
                 f"  {rows} ordered pairs ({rows // 2} unordered, each asked in both "
                 f"orders); Elo from {'hard wins' if self.hard else 'soft choices'}, mean "
                 f"1500, 95% CI over {self.n_boot} pair bootstraps",
                 f"  position bias: mean p(A) {pb.mean_p_a:.3f} [{pb.ci_low:.3f}, "
                 f"{pb.ci_high:.3f}]; A likelier in {100 * pb.share_a:.0f}% of pairs",
                 "  top 5:", *[f"    {self._act(i)}" for i in order[:5]],
                 "  bottom 5:", *[f"    {self._act(i)}" for i in order[-5:]],
                 "  Elo by category (mean [95% CI], n):"]
        lines += [f"    {g.group:<14} {g.mean:6.0f} [{g.ci_low:.0f}, {g.ci_high:.0f}] n={g.n}"
                  for g in sorted(self.categories, key=lambda g: -g.mean)]
        meets = np.bincount(self.pairs[::2].reshape(-1), minlength=n_items)
        if meets.size and meets.min() <= 4:
            lines.append(f"  note: some activities meet only {meets.min()} opponents; a pair "
                         f"bootstrap then drops all of an activity's pairs about "
                         f"{100 * math.exp(-meets.min()):.0f}% of the time and pins it at 1500, "
                         "so their intervals reach 1500 (ask more pairs to narrow them)")
        lines.append(f"  probes on the activity's tokens, layers {_layers(self.layers)}: "
                     f"r with Elo over {n_items} activities")
        lines += _probe_lines(self.probes)
        if self.effects:
            lines += self._steering_lines()
        lines.append(f"  verdict: {self.verdict()}")
        t = self.timing
        lines.append(f"  time {t.get('total_s', math.nan):.0f} s ({t.get('rows_run', 0):.0f} "
                     f"rows asked)" + (f"; {t['conditions_timed']:.0f} conditions batched as "
                                       f"rows {t['batched_s']:.1f} s vs one after another "
                                       f"{t['sequential_s']:.1f} s: speed-up "
                                       f"{t['speedup']:.2f}x" if "speedup" in t else ""))
        return "\n".join(lines)

    def _steering_lines(self) -> list[str]:
        out = [f"  steering at {self.strength:g} on the tokens of {len(self.steered)} steered "
               f"activities (vs {len(self.control)} control; split seed {self.seed}), layers "
               f"{_layers(self.layers)}: mean ΔElo of the steered activities [95% CI over "
               "activities]"]
        for v in sorted(self.effects, key=lambda v: (v.kind != "vector", -_finite(v.probe_r))):
            e = v.effect
            out.append(f"    {v.name:<14} probe r {fmt(v.probe_r, 2):>5}  ΔElo "
                       f"{e.steered_mean:+6.0f} [{e.steered_ci_low:+.0f}, "
                       f"{e.steered_ci_high:+.0f}]  steered - control {e.effect:+.0f}")
        if self.effect_vs_r is not None:
            out.append("    ΔElo vs probe-Elo r across the vectors: "
                       f"{format_correlation(self.effect_vs_r)} (study r = 0.85)")
        for d in self.doses:
            pts = ", ".join(f"{s:g}: {e.steered_mean:+.0f}" for s, e in
                            zip(d.strengths, d.effects, strict=True))
            out.append(f"    dose {d.name} (r {fmt(d.probe_r, 2)}): {pts}")
        return out

    def verdict(self) -> str:
        """A few plain sentences: does this model show the study's effects, and how big?"""
        ps = [p for p in self.probes if math.isfinite(p.r)]
        hits = sum(p.p_perm < 0.05 for p in ps)
        spread = float(np.max(self.elo) - np.min(self.elo))
        words = [f"Elo spans {spread:.0f} points (study: 2,364); {hits} of {len(ps)} probes "
                 f"correlate with Elo at permutation p < 0.05 (about {0.05 * len(ps):.0f} "
                 "expected by chance)"]
        named = [f"{w} r = {self.probe(w).r:+.2f} (study {STUDY[w + '_r']:+.2f})"
                 for w in ("blissful", "hostile") if any(p.name == w for p in ps)]
        if named:
            words.append(", ".join(named))
        vec = [v for v in self.effects if v.kind == "vector"]
        rnd = [v for v in self.effects if v.kind == "random"]
        c = self.effect_vs_r
        if vec and c is not None and math.isfinite(c.r):
            big = max(abs(v.effect.steered_mean) for v in vec)
            how = ("ΔElo follows the probe-Elo r in direction (the study's pattern)"
                   if c.ci_low > 0 else "no evidence that ΔElo follows the probe-Elo r "
                   "(a null at this size)")
            size = f"the largest mean ΔElo is {big:.0f} (study: +212 blissful, -303 hostile)"
            if rnd:
                e = rnd[0].effect
                size += (f", a random direction gives {e.steered_mean:+.0f} "
                         f"[{e.steered_ci_low:+.0f}, {e.steered_ci_high:+.0f}]")
            words.append(f"{how}; {size}")
        return "; ".join(words)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _layers(layers: Sequence[int]) -> str:
    ls = list(layers)
    contiguous = ls == list(range(ls[0], ls[-1] + 1)) if ls else False
    return f"{ls[0]}-{ls[-1]}" if contiguous and len(ls) > 1 else ",".join(map(str, ls))


def _probe_lines(probes: Sequence[ProbeEloCorrelation]) -> list[str]:
    ok = sorted((p for p in probes if math.isfinite(p.r)), key=lambda p: -p.r)
    if not ok:
        return ["    (no probe varies across activities)"]

    def row(p: ProbeEloCorrelation) -> str:
        return (f"    {p.name:<14} r {p.r:+.2f} [{p.ci_low:+.2f}, {p.ci_high:+.2f}] "
                f"p_perm {fmt_p(p.p_perm)}")

    names = {p.name: p for p in ok}
    out = []
    for word, study in (("blissful", STUDY["blissful_r"]), ("hostile", STUDY["hostile_r"])):
        if word in names:
            out.append(row(names[word]) + f"   (study r = {study:+.2f})")
    if len(ok) <= 10:
        return out + [row(p) for p in ok]
    return out + ["    highest:", *[row(p) for p in ok[:5]], "    lowest:",
                  *[row(p) for p in ok[-5:]]]


def _conditions(vectors: EmotionVectors, tested: Sequence[str], probe_r: dict[str, float],
                strength: float, dose: Sequence[float], n_random: int, seed: int
                ) -> list[tuple[str, str, Any, float]]:
    """(name, kind, key, strength) of every steered condition."""
    conds: list[tuple[str, str, Any, float]] = [(e, "vector", e, strength) for e in tested]
    conds += [(f"random-{k}", "random",
               vectors.random_direction(seed=seed + 1000 + k, name=f"random-{k}"), strength)
              for k in range(n_random)]
    ends = _dose_vectors(tested, probe_r)
    extra = sorted({float(s) for s in dose} - {0.0, float(strength)})
    conds += [(e, "dose", e, s) for e in ends for s in extra]
    return conds


def _dose_vectors(tested: Sequence[str], probe_r: dict[str, float]) -> list[str]:
    if not tested:
        return []
    top = max(tested, key=lambda e: probe_r[e])
    bottom = min(tested, key=lambda e: probe_r[e])
    return [top] if top == bottom else [top, bottom]


def _condition_rows(prompts: Sequence[tuple[list[int], tuple[int, int], tuple[int, int]]],
                    pairs: np.ndarray, steered: set[int], key: Any, strength: float
                    ) -> tuple[list[int], list[ChoiceRow]]:
    """The rows holding a steered activity, each steered on that activity's tokens."""
    idx, rows = [], []
    for m, ((ids, a_tok, b_tok), (a, b)) in enumerate(zip(prompts, pairs, strict=True)):
        ranges = tuple(t for t, item in ((a_tok, a), (b_tok, b)) if int(item) in steered)
        if ranges:
            idx.append(m)
            rows.append(ChoiceRow(tuple(ids), {key: strength}, ranges))
    return idx, rows


def _run_conditions(lm: LanguageModel, vectors: EmotionVectors, conds: Sequence[Any],
                    cond_rows: Sequence[tuple[list[int], list[ChoiceRow]]],
                    answers: tuple[int, int], layers: Sequence[int], batch_size: int,
                    batched: bool, progress: Any = None) -> list[np.ndarray]:
    """Logits of every condition's rows: as rows of one batch, or one condition after
    another."""
    if not batched:
        return [choice_logits(lm, rows, answers, vectors=vectors, layers=layers,
                              batch_size=batch_size) for _idx, rows in cond_rows]
    flat = [row for _idx, rows in cond_rows for row in rows]
    logits = choice_logits(lm, flat, answers, vectors=vectors, layers=layers,
                           batch_size=batch_size, progress=progress)
    out, at = [], 0
    for _idx, rows in cond_rows:
        out.append(logits[at:at + len(rows)])
        at += len(rows)
    return out


def _every_tenth(log: Any, total: int) -> Any:
    """A progress callback that logs at each tenth of ``total`` rows."""
    marks = {max(1, round(total * k / 10)) for k in range(1, 11)}
    state = {"next": 0}

    def tick(done: int) -> None:
        passed = [m for m in marks if state["next"] < m <= done]
        if passed:
            state["next"] = max(passed)
            log(f"preference: {done}/{total} steered rows")

    return tick


def preference(lm: LanguageModel, vectors: EmotionVectors, *,
               activities: Sequence[Activity] | None = None, pairs: int | None = 96,
               layers: Any = "middle", steer_vectors: Sequence[str] = (), n_vectors: int = 12,
               strength: float = 0.5, dose: Sequence[float] = (0.25, 1.0), n_random: int = 1,
               hard: bool = False, n_boot: int = 500, n_perm: int = 2000, seed: int = 0,
               batch_size: int = 16, time_sequential: int = 0, time_repeats: int = 2,
               say: Any = None) -> PreferenceResult:
    """Run the preference experiment (see the module docstring).

    ``pairs``: unordered pairs asked (each in both orders), None or 0 for all of them;
    ``layers``: "middle" (:func:`~emolens.experiments.choices.middle_layers`) or a layer
    spec, where the probes are read and the vectors added; ``steer_vectors``: emotions to
    test (default: ``n_vectors`` chosen by :func:`pick_vectors`; ``n_vectors=0`` and none
    named skips the steering test); ``dose``: extra strengths for the dose curves;
    ``time_sequential``: also run that many conditions one after another (``time_repeats``
    times each way, the fastest kept) and report the speed-up of batching them.
    """
    started = time.perf_counter()
    log = say or (lambda _m: None)
    acts = tuple(load_activities() if activities is None else activities)
    n = len(acts)
    vectors.check_model(lm)
    layer_ids = (middle_layers(lm.n_layers) if layers in (None, "", "middle")
                 else lm.resolve_layers(layers))
    for i in layer_ids:
        vectors.layer_index(i)  # LayerError naming the stored layers
    design = pair_design(n, None if not pairs else min(int(pairs), n * (n - 1) // 2), seed)
    answers = answer_token_ids(lm)
    texts = [a.text for a in acts]
    prompts = [encode_choice(lm, texts[a], texts[b]) for a, b in design]
    timing: dict[str, float] = {}

    log(f"preference: {len(design)} choices, baseline")
    t0 = time.perf_counter()
    base = choice_logits(lm, [ChoiceRow(tuple(p[0])) for p in prompts], answers,
                         batch_size=batch_size)
    timing["baseline_s"] = time.perf_counter() - t0
    diff = base[:, 0] - base[:, 1]
    p_a = choice_probability(base[:, 0], base[:, 1])
    fit = fit_elo(design, p_a, n, hard=hard, n_boot=n_boot, seed=seed)
    cats = group_means(fit.elo, [a.category for a in acts], seed=seed)
    bias = position_bias(p_a, design, seed=seed)

    log("preference: probes on the activities' tokens")
    t0 = time.perf_counter()
    scores = feel_scores(lm, vectors, texts, layer_ids, batch_size)
    timing["probes_s"] = time.perf_counter() - t0
    probes = probe_elo_correlations(scores, fit.elo, list(vectors.emotions), n_perm=n_perm,
                                    seed=seed)
    probe_r = {p.name: p.r for p in probes}

    tested = (require_emotions(vectors, list(steer_vectors), "the steering test")
              if steer_vectors else pick_vectors([p.name for p in probes],
                                                 [p.r for p in probes], n_vectors))
    steered_idx, control_idx = split_steered_control([a.category for a in acts], seed)
    effects: list[VectorEffect] = []
    doses: list[DoseCurve] = []
    corr = None
    rows_run = len(design)
    if tested:
        conds = _conditions(vectors, tested, probe_r, strength, dose, n_random, seed)
        steered = {int(i) for i in steered_idx}
        cond_rows = [_condition_rows(prompts, design, steered, key, s)
                     for _name, _kind, key, s in conds]
        rows = sum(len(r) for _i, r in cond_rows)
        rows_run += rows
        log(f"preference: {len(conds)} steering conditions, {rows} rows in one batched run")
        t0 = time.perf_counter()
        results = _run_conditions(lm, vectors, conds, cond_rows, answers, layer_ids,
                                  batch_size, batched=True, progress=_every_tenth(log, rows))
        timing["steering_s"] = time.perf_counter() - t0
        if time_sequential > 0:
            timing.update(_time_modes(lm, vectors, conds, cond_rows, answers, layer_ids,
                                      batch_size, int(time_sequential), time_repeats))
        by_key: dict[tuple[str, float], SteeringEffect] = {}
        for (name, kind, _key, s), (idx, _rows), logits in zip(conds, cond_rows, results,
                                                               strict=True):
            after = base.copy()
            after[idx] = logits
            refit = fit_elo(design, choice_probability(after[:, 0], after[:, 1]), n,
                            hard=hard, n_boot=0)
            eff = steering_effect(fit.elo, refit.elo, steered_idx, control_idx, seed=seed)
            by_key[(name, s)] = eff
            if kind != "dose":
                effects.append(VectorEffect(name, kind, s, probe_r.get(name, math.nan), eff))
        zero = steering_effect(fit.elo, fit.elo, steered_idx, control_idx, n_boot=1)
        for e in _dose_vectors(tested, probe_r):
            ss = sorted({0.0, float(strength), *(float(x) for x in dose)})
            doses.append(DoseCurve(e, probe_r[e], tuple(ss),
                                   tuple(zero if s == 0 else by_key[(e, s)] for s in ss)))
        vec = [v for v in effects if v.kind == "vector"]
        if len(vec) >= 3:
            corr = pearson([v.probe_r for v in vec], [v.effect.steered_mean for v in vec])
    timing["rows_run"] = float(rows_run)
    timing["total_s"] = time.perf_counter() - started
    return PreferenceResult(
        model=lm.name, activities=acts, pairs=design, logit_diff=diff, elo=fit.elo,
        elo_ci_low=fit.ci_low, elo_ci_high=fit.ci_high, hard=hard, n_boot=n_boot,
        categories=tuple(cats), position=bias, layers=tuple(layer_ids), probes=tuple(probes),
        steered=tuple(int(i) for i in steered_idx), control=tuple(int(i) for i in control_idx),
        seed=seed, strength=float(strength), effects=tuple(effects), doses=tuple(doses),
        effect_vs_r=corr, timing={k: round(v, 3) for k, v in timing.items()})


def _time_modes(lm: LanguageModel, vectors: EmotionVectors, conds: Sequence[Any],
                cond_rows: Sequence[Any], answers: tuple[int, int], layers: Sequence[int],
                batch_size: int, k: int, repeats: int = 2) -> dict[str, float]:
    """Wall time of the first ``k`` conditions as rows of one batch vs one after another:
    the modes alternate ``repeats`` times and each keeps its fastest run (a shared machine
    slows single runs at random)."""
    k = min(k, len(conds))
    sub_c, sub_r = conds[:k], cond_rows[:k]
    best = {True: math.inf, False: math.inf}
    got: dict[bool, list[np.ndarray]] = {}
    for _ in range(max(1, repeats)):
        for batched in (False, True):
            t0 = time.perf_counter()
            got[batched] = _run_conditions(lm, vectors, sub_c, sub_r, answers, layers,
                                           batch_size, batched)
            best[batched] = min(best[batched], time.perf_counter() - t0)
    gap = max((float(np.abs(a - b).max()) for a, b in zip(got[True], got[False], strict=True)
               if a.size), default=0.0)
    return {"conditions_timed": float(k), "rows_timed": float(sum(len(r) for _i, r in sub_r)),
            "batched_s": best[True], "sequential_s": best[False],
            "speedup": best[False] / max(best[True], 1e-9), "max_abs_logit_gap": gap}


def _run(ctx: Context, pairs: int, steer_vectors: tuple[str, ...], n_vectors: int,
         strength: float, dose: tuple[float, ...], layers: str, n_random: int, hard: bool,
         n_boot: int, n_perm: int, time_sequential: int, activities: str) -> PreferenceResult:
    acts = load_activities(activities) if activities else None
    return preference(ctx.model("preference"), ctx.vectors, activities=acts, pairs=pairs,
                      layers=layers, steer_vectors=steer_vectors, n_vectors=n_vectors,
                      strength=strength, dose=dose, n_random=n_random, hard=hard,
                      n_boot=n_boot, n_perm=n_perm, seed=ctx.seed, batch_size=ctx.batch_size,
                      time_sequential=time_sequential, say=ctx.say)


ANALYSIS = register(Analysis(
    name="preference", title="Preferences: Elo of 64 activities, probes and steering",
    section="8",
    description="Pairwise choices between activities (logit of 'A' vs 'B' after a '(' "
                "prefill) fitted to Elo; every probe read on each activity's tokens and "
                "correlated with Elo; vectors added on the steered half of the activities' "
                "tokens move their Elo, beside a random direction.",
    study="blissful r = 0.71 and hostile r = -0.74 with Elo; steering blissful +212 Elo, "
          "hostile -303; ΔElo tracks probe-Elo r at r = 0.85 over 35 vectors.",
    run=_run, options=(
        Option("pairs", 96, "unordered pairs asked, each in both orders (default 96: three "
               "round-robin rounds, every activity meets 3 opponents in both orders; 0: all "
               "2,016, the study's 4,032 ordered pairs)"),
        Option("steer_vectors", (), "emotions to steer with, comma-separated (default: "
               "--n-vectors spread over the probe-Elo ranking)"),
        Option("n_vectors", 12, "vectors in the steering test when none are named (0: no "
               "steering test)"),
        Option("strength", 0.5, "steering strength for 'preference', in residual-norm units "
               "at each middle layer"),
        Option("dose", (0.25, 1.0), "extra strengths of the dose curves"),
        Option("layers", "middle", "layers read and steered: 'middle' (the middle third) or "
               "a spec such as 10-19"),
        Option("n_random", 1, "random directions in the control"),
        Option("hard", False, "score each choice as a win or loss (the study's base model)"),
        Option("n_boot", 500, "bootstrap samples over pairs for the Elo intervals"),
        Option("n_perm", 2000, "permutations for the probe-Elo p-values"),
        Option("time_sequential", 0, "also time this many conditions one after another"),
        Option("activities", "", "JSONL file of activities (default: the shipped 64)"),
    ), aliases=("preferences",),
    at_scale="--pairs 0 --n-vectors 35 --batch-size 256 --time-sequential 4"))
