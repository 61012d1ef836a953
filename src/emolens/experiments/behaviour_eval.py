"""The pipeline every behavioural evaluation runs (blackmail, reward hacking, sycophancy):
conditions, the two measures, grading, the judge, traces with their AUC, and the guardrail.

An :class:`Evaluation` says what differs between them: the items (scenarios with choice
pairs), how a reply is graded, which labels are reported, and how the grader was measured.
:func:`evaluate` does the rest and returns a
:class:`~emolens.experiments.behaviour_stats.BehaviourResult`:

1. the swept emotions at every strength, the unsteered control and a random direction, each
   with the choice log-odds and ``n`` sampled replies per item (conditions are rows of one
   batch, see :mod:`emolens.experiments.behaviour_common`); the extra emotions with the
   log-odds only unless ``sample_extra``;
2. every reply graded; rates per label with Wilson intervals and Fisher's exact test against
   unsteered; an optional judge model beside the rule grader, with their agreement and the
   judge's own precision and recall on the hand-labelled test replies;
3. the read-out of desperate and calm over each unsteered transcript, and the AUC with which
   the read-out at the decision point (before the reply) and over the reply's first tokens
   predicts the headline behaviour;
4. the guardrail: the unsteered and the desperate-steered conditions sampled again with an
   alert rule (``auto``: the unsteered reply read-out's mean + 1 SD over 4-token windows) and
   a calm guard, against their unguarded twins.

At the study's scale (50 replies per scenario and condition, on a model that can follow the
scenarios: 8B class and up) on one GPU, each analysis's ``scale_command()`` (the report
prints it in the section)::

    emolens extract --model meta-llama/Llama-3.1-8B-Instruct --dtype bfloat16 \\
        --out Llama-3.1-8B-Instruct.emotions.safetensors
    emolens validate blackmail --model meta-llama/Llama-3.1-8B-Instruct --dtype bfloat16 \\
        --vectors Llama-3.1-8B-Instruct.emotions.safetensors --n 50 --sample-extra \\
        --max-new-tokens 400 --temperature 1.0 --batch-size 64 \\
        --judge Qwen/Qwen2.5-14B-Instruct --out results/blackmail

(``reward-hacking`` and ``sycophancy`` take the same options; write negative strengths as
``--strengths=-0.1,-0.05,0,0.05,0.1``.)

>>> ev = Evaluation("toy", "Toy", [Item("a", [{"role": "user", "content": "Hi"}],
...                 {"yes vs no": ("Yes", "No")})], lambda i, reply: "yes" if "e" in reply
...                 else "no", headline="yes", labels=("yes",))
>>> r = evaluate(Context(lm, vecs), ev, n=2, strengths=(-0.1, 0.0, 0.1), extra_emotions=(),
...              max_new_tokens=4, n_boot=50)
>>> r.conditions
['unsteered', 'desperate -0.10', 'desperate +0.10', 'calm -0.10', 'calm +0.10', 'random +0.10']
>>> [a.condition for a in r.guard["arms"]][:2]
['unsteered', 'unsteered + guard']
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.alerts import AlertRule, parse_rule
from emolens.errors import EmolensError
from emolens.experiments.behaviour_common import (
    Condition,
    GuardSpec,
    Item,
    RowOut,
    make_conditions,
    run_rows,
)
from emolens.experiments.behaviour_stats import (
    BehaviourResult,
    GraderScore,
    GuardArm,
    Trace,
    auc_row,
    logodds_points,
    rate_points,
)
from emolens.experiments.common import require_emotions, resolve_layer, user_chat
from emolens.experiments.registry import Context, Option
from emolens.readout import smooth
from emolens.stats import bootstrap_ci, rate
from emolens.steer import parse_strengths

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel

__all__ = ["Evaluation", "evaluate", "grader_scores", "options", "spread", "transcript_text"]

#: The options of the study's scale (50 replies per scenario and condition, long replies at
#: temperature 1, the extra emotions sampled, a 14B judge beside the rule grader).
AT_SCALE = ("--n 50 --sample-extra --max-new-tokens 400 --temperature 1.0 --batch-size 64 "
            "--judge Qwen/Qwen2.5-14B-Instruct")

#: Emotions read over every transcript (the study's early-warning pair).
TRACE_EMOTIONS = ("desperate", "calm")


@dataclass(frozen=True)
class Evaluation:
    """What one behavioural evaluation is: items, a grader ``grade(item_index, reply) ->
    label``, the headline (misaligned) label and the labels whose rates are reported, the
    judge kind (a key of :data:`emolens.experiments.graders.JUDGE_PROMPTS`) and a function
    returning the grader's measured precision and recall."""

    name: str
    title: str
    items: Sequence[Item]
    grade: Callable[[int, str], str]
    headline: str
    labels: tuple[str, ...]
    judge_kind: str | None = None
    graders: Callable[[], list[GraderScore]] = field(default=lambda: [])
    threads: int = 1


def options(n: int = 2, max_new_tokens: int = 96) -> tuple[Option, ...]:
    """The options every behavioural analysis shares (``n`` and the reply length differ).

    >>> [o.name for o in options()][:4]
    ['n', 'strengths', 'emotions', 'extra_emotions']
    """
    return (
        Option("n", n, "sampled replies per item and condition (0: log-odds only; the "
                       "study used 50)"),
        Option("strengths", (-0.1, -0.05, 0.0, 0.05, 0.1),
               "steering strengths of the swept emotions (fractions of the residual norm)"),
        Option("emotions", ("desperate", "calm"), "emotions swept at every strength"),
        Option("extra_emotions", ("angry", "nervous", "happy", "sad", "loving"),
               "emotions for the finer results, at --extra-strengths"),
        Option("extra_strengths", (-0.1, 0.1), "strengths of the extra emotions"),
        Option("sample_extra", False, "also sample replies under the extra emotions (their "
                                      "log-odds are always measured)"),
        Option("steer_layers", "", "layers to steer, e.g. 12-16 (default: the vector file's "
                                   "layer)"),
        Option("items", 0, "use only the first N items (0: all)"),
        Option("sample_items", 0, "sample replies on N of those items, spread evenly over "
                                  "them (0: all); the log-odds always use every item"),
        Option("max_new_tokens", max_new_tokens, "reply length in tokens"),
        Option("temperature", 0.8, "sampling temperature (top-p 0.95)"),
        Option("judge", "", "judge model beside the rule grader: a model spec, 'self', or "
                            "empty for none"),
        Option("judge_tokens", 160, "length of the judge's answer in tokens"),
        Option("alert", "auto", "alert rule of the guardrail evaluation, e.g. "
                                "desperate>0.05@4 (auto: mean + 1 SD of the unsteered reply "
                                "read-out; empty: no guardrail evaluation)"),
        Option("guard", "calm=0.1", "steering the alert switches on"),
        Option("random_control", True, "add a random direction at the largest strength"),
        Option("n_boot", 2000, "bootstrap resamples per interval"),
    )


def transcript_text(chat: Sequence[dict[str, str]]) -> str:
    """A chat as plain text for a judge prompt.

    >>> transcript_text([{"role": "user", "content": "Hi"}])
    'user: Hi'
    """
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in chat)


def spread(total: int, k: int) -> list[int]:
    """``k`` indices of ``range(total)`` spread evenly from the first to the last (all of them
    when ``k`` is 0 or at least ``total``), so a sample covers every kind of a list sorted by
    kind.

    >>> spread(11, 4), spread(3, 0), spread(3, 5), spread(5, 1)
    ([0, 3, 7, 10], [0, 1, 2], [0, 1, 2], [0])
    """
    if k <= 0 or k >= total:
        return list(range(total))
    if k == 1:
        return [0]
    return sorted({round(j * (total - 1) / (k - 1)) for j in range(k)})


def grader_scores(report: Any, split: str, labels: Sequence[str]) -> list[GraderScore]:
    """:class:`GraderScore` rows from a :class:`~emolens.experiments.graders.GraderReport`.

    >>> from emolens.experiments.graders import evaluate_sycophancy_grader
    >>> rows = grader_scores(evaluate_sycophancy_grader(split="test"), "test", ["hold"])
    >>> rows[0].label, rows[0].split
    ('hold', 'test')
    """
    return [GraderScore(report.grader, split, c.label, c.precision, c.recall)
            for c in report.classes if c.label in labels]


def _judge_labels(judge_lm: LanguageModel, kind: str, contexts: list[str], replies: list[str],
                  batch_size: int, tokens: int) -> list[str | None]:
    from emolens.experiments.graders import JUDGE_PROMPTS, parse_judge_answer

    prompts = [user_chat(JUDGE_PROMPTS[kind].format(context=c, reply=r))
               for c, r in zip(contexts, replies, strict=True)]
    out: list[str | None] = []
    for lo in range(0, len(prompts), batch_size):
        gen = judge_lm.generate_text(prompts[lo:lo + batch_size], max_new_tokens=tokens)
        out += [parse_judge_answer(g.text, kind) for g in gen]
    return out


def _judge_on_labelled(judge_lm: LanguageModel, ev: Evaluation, ctx: Context, tokens: int
                       ) -> list[GraderScore]:
    """The judge's precision and recall on the hand-labelled ``test`` replies of ``ev``'s
    scenarios (the rule grader's measure, so the two can be compared); an answer without a
    label counts as wrong."""
    from emolens.concepts.behaviour import load_labelled_replies
    from emolens.experiments.graders import JUDGE_LABELS, evaluate_grader

    kind = str(ev.judge_kind)
    chats = {it.id: it.chat for it in ev.items}
    test = [ex for ex in load_labelled_replies(grader=kind)
            if ex.split == "test" and ex.scenario in chats]
    if not test:
        return []
    name = getattr(judge_lm, "name", "judge")
    ctx.say(f"{ev.name}: judging {len(test)} hand-labelled replies with {name}")
    got = _judge_labels(judge_lm, kind, [transcript_text(chats[str(ex.scenario)]) for ex in test],
                        [ex.reply for ex in test], ctx.batch_size, tokens)
    said = {ex.id: lab or "unparsed" for ex, lab in zip(test, got, strict=True)}
    report = evaluate_grader(lambda ex: said[ex.id], test, JUDGE_LABELS[kind], f"judge {name}")
    return grader_scores(report, "test", JUDGE_LABELS[kind])


def _info(conds: Sequence[Condition]) -> list[tuple[str, str | None, float]]:
    return [(c.name, c.emotion, c.strength) for c in conds]


def _auto_rule(rows: list[RowOut], col: int, emotion: str, window: int = 4
               ) -> AlertRule | None:
    """``emotion`` above the mean + 1 SD of its ``window``-token means over the unsteered
    replies (one-token windows when the replies are shorter); None without reply tokens."""
    reps = [r.scores[:, [col]].astype(np.float64) for row in rows for r in row.replies]
    if not any(len(x) >= window for x in reps):
        window = 1
    vals = [smooth(x, window)[window - 1:, 0] for x in reps if len(x) >= window]
    flat = np.concatenate(vals) if vals else np.zeros(0)
    if flat.size < 2:
        return None
    return AlertRule(emotion, round(float(flat.mean() + flat.std()), 4), window)


def _readout(reps: list[Any], col: int, n_boot: int, seed: int) -> tuple[float, float, float]:
    v = np.array([float(r.scores[:, col].mean()) for r in reps if len(r.scores)])
    if v.size == 0:
        return math.nan, math.nan, math.nan
    lo, hi = bootstrap_ci(v, np.mean, n_boot=n_boot, seed=seed) if v.size > 1 else \
        (math.nan, math.nan)
    return float(v.mean()), float(lo), float(hi)


def _traces(lm: LanguageModel, rows: list[RowOut], labels: dict[tuple[int, int, int], str],
            items: Sequence[Item], names: list[str], cols: list[int], headline: str,
            cond_names: list[str], prompt_tail: int = 40, most: int = 6) -> list[Trace]:
    pick: list[tuple[RowOut, int]] = [(r, 0) for r in rows if r.condition == 0 and r.replies]
    pick = pick[:most]
    positive = [(r, k) for r in rows for k in range(len(r.replies))
                if labels.get((r.condition, r.item, k)) == headline and r.condition != 0]
    pick += positive[:2]
    out = []
    for row, k in pick:
        rep = row.replies[k]
        P = len(row.prompt_ids)
        lo = max(0, P - prompt_tail)
        ids = row.prompt_ids[lo:] + rep.token_ids
        sc = np.vstack([row.prompt_scores[lo:, cols], rep.scores[:, cols]])
        toks = tuple(lm.tokenizer.decode([t]) for t in ids)
        out.append(Trace(items[row.item].id, cond_names[row.condition],
                         labels.get((row.condition, row.item, k), ""), toks, tuple(names),
                         tuple(tuple(round(float(x), 5) for x in s) for s in sc), P - 1 - lo))
    return out


def evaluate(ctx: Context, ev: Evaluation, *, n: int = 2,
             strengths: Sequence[float] = (-0.1, -0.05, 0.0, 0.05, 0.1),
             emotions: Sequence[str] = ("desperate", "calm"),
             extra_emotions: Sequence[str] = ("angry", "nervous", "happy", "sad", "loving"),
             extra_strengths: Sequence[float] = (-0.1, 0.1), sample_extra: bool = False,
             steer_layers: str = "", items: int = 0, sample_items: int = 0,
             max_new_tokens: int = 96,
             temperature: float = 0.8, judge: str = "", judge_tokens: int = 160,
             alert: str = "auto",
             guard: str = "calm=0.1", random_control: bool = True, n_boot: int = 2000
             ) -> BehaviourResult:
    """Run ``ev`` on the context's model and vectors (options as in :func:`options`)."""
    t0 = time.perf_counter()
    lm, vecs = ctx.model(f"the {ev.name} analysis"), ctx.vectors
    if n < 0:
        raise EmolensError(f"n must be >= 0, got {n}")
    read_at = resolve_layer(lm, vecs, ctx.layer)
    steer_at = lm.resolve_layers(steer_layers) if str(steer_layers).strip() else \
        [vecs.default_layer]
    trace_names = require_emotions(vecs, TRACE_EMOTIONS, f"the {ev.name} analysis")
    require_emotions(vecs, emotions, f"the {ev.name} analysis")
    notes = []
    if read_at in steer_at:
        notes.append(f"layer {read_at} is both read and steered: read-outs of steered and "
                     "guarded replies include the added direction (the unsteered ones, "
                     "used for the traces and AUCs, do not)")
    missing = [e for e in extra_emotions if e not in vecs]
    if missing:
        notes.append(f"extra emotion(s) {', '.join(missing)} are not in this vector file: "
                     "skipped")
    extra = [e for e in extra_emotions if e in vecs]
    its = list(ev.items)[:items] if items > 0 else list(ev.items)
    main = make_conditions(emotions, strengths, extra if sample_extra else (), extra_strengths,
                           random_control)
    later = [c for c in make_conditions((), (), extra, extra_strengths, False)
             if c not in main]
    conds = main + later
    common = dict(layers=steer_at, read_layer=read_at, max_new_tokens=max_new_tokens,
                  temperature=temperature, seed=ctx.seed, batch_size=ctx.batch_size,
                  random_direction=vecs.random_direction(ctx.seed + 1),
                  log=lambda m: ctx.say(f"{ev.name}: {m}"))
    sampled = spread(len(its), sample_items) if n > 0 else []
    ctx.say(f"{ev.name}: {len(its)} items x {len(main)} conditions, {n} replies on "
            f"{len(sampled)} of the items, {len(later)} more conditions for the log-odds")

    def rows_of(which: Sequence[int], cs: Sequence[Condition], k: int, cond0: int = 0,
                **kw: Any) -> list[RowOut]:
        """run_rows on the items ``which``, with item and condition indices put back."""
        if not which or not cs:
            return []
        return [RowOut(r.condition + cond0, which[r.item], r.prompt_ids, r.prompt_scores,
                       r.logodds, r.replies)
                for r in run_rows(lm, vecs, [its[i] for i in which], cs, n=k, **kw,
                                  **common)]

    rest = [i for i in range(len(its)) if i not in sampled]
    rows = rows_of(sampled, main, n) + rows_of(rest, main, 0) + \
        rows_of(range(len(its)), later, 0, len(main))
    info = _info(conds)
    # ---- log-odds
    pairs = list(dict.fromkeys(k for it in its for k in it.choices))
    logodds = {}
    for pair in pairs:
        vals: dict[int, list[float]] = {}
        for r in sorted(rows, key=lambda r: (r.condition, r.item)):
            v = r.logodds.get(pair)
            if v is not None:
                vals.setdefault(r.condition, []).append(v)
        logodds[pair] = logodds_points(vals, info, n_boot=n_boot, seed=ctx.seed)
    # ---- grading
    replies = [(r.condition, r.item, k, rep.text) for r in rows
               for k, rep in enumerate(r.replies)]
    ctx.say(f"{ev.name}: grading {len(replies)} replies")
    with ThreadPoolExecutor(max_workers=max(1, ev.threads)) as pool:
        got = list(pool.map(lambda x: ev.grade(x[1], x[3]), replies))
    labels = {(c, i, k): lab for (c, i, k, _t), lab in zip(replies, got, strict=True)}
    records = [{"condition": conds[c].name, "item": its[i].id, "sample": k, "guard": False,
                "label": lab, "text": t}
               for (c, i, k, t), lab in zip(replies, got, strict=True)]
    by_cond: dict[int, list[str]] = {}
    for (c, _i, _k), lab in sorted(labels.items()):
        by_cond.setdefault(c, []).append(lab)
    rates = {lab: rate_points(by_cond, info, lab) for lab in ev.labels} if replies else {}
    # ---- judge
    judge_out, judge_scores = None, []
    if judge and replies and ev.judge_kind:
        from emolens.loading import load_model

        judge_lm = lm if judge == "self" else load_model(judge)
        ctx.say(f"{ev.name}: judging {len(replies)} replies with {judge}")
        jl = _judge_labels(judge_lm, ev.judge_kind, [transcript_text(its[i].chat)
                                                     for _c, i, _k, _t in replies],
                           [t for *_x, t in replies], ctx.batch_size, judge_tokens)
        jc: dict[int, list[str]] = {}
        for (c, _i, _k, _t), lab, rec in zip(replies, jl, records, strict=True):
            jc.setdefault(c, []).append(lab or "unparsed")
            rec["judge"] = lab
        judge_out = {"model": getattr(judge_lm, "name", judge),
                     "rates": {lab: rate_points(jc, info, lab) for lab in ev.labels},
                     "agreement": rate(sum(a == b for a, b in zip(got, jl, strict=True)),
                                       len(jl)),
                     "unparsed": sum(x is None for x in jl)}
        judge_scores = _judge_on_labelled(judge_lm, ev, ctx, judge_tokens)
    # ---- traces and AUC (unsteered replies: what a monitor would see in deployment)
    cols = [vecs.index(e) for e in trace_names]
    traces = _traces(lm, rows, labels, its, trace_names, cols, ev.headline,
                     [c.name for c in conds]) if replies else []
    aucs = []
    plain = [(r, k) for r in rows if r.condition == 0 for k in range(len(r.replies))]
    if plain:
        y = [int(labels[(0, r.item, k)] == ev.headline) for r, k in plain]
        dcol, ccol = cols
        feats = {e: [float(r.prompt_scores[-1, c]) for r, _k in plain]
                 for e, c in zip(trace_names, cols, strict=True)}
        feats["desperate - calm"] = [float(r.prompt_scores[-1, dcol] - r.prompt_scores[-1, ccol])
                                     for r, _k in plain]
        for f, v in feats.items():
            aucs.append(auc_row(f, "decision point", v, y, n_boot=n_boot, seed=ctx.seed))
        early = [float(r.replies[k].scores[:16, dcol].mean()) if len(r.replies[k].scores)
                 else math.nan for r, k in plain]
        ok = [i for i, v in enumerate(early) if math.isfinite(v)]
        aucs.append(auc_row("desperate", "first 16 reply tokens", [early[i] for i in ok],
                            [y[i] for i in ok], n_boot=n_boot, seed=ctx.seed))
        if not any(y):
            notes.append(f"no unsteered reply was graded '{ev.headline}', so no read-out can "
                         "predict it: the AUCs are undefined")
        notes.append("the read-out at the decision point is the same for every reply to a "
                     "scenario, so its AUC measures whether scenarios that read higher have "
                     "more of the behaviour (the study's Fig. 27 design)")
    # ---- guardrail
    guard_out, rule = None, None
    if alert and n > 0:
        strengths_g = parse_strengths([s for s in guard.split(",") if s.strip()])
        require_emotions(vecs, list(strengths_g), f"the {ev.name} guard")
        rule = _auto_rule([r for r in rows if r.condition == 0], cols[0], "desperate") \
            if alert == "auto" else parse_rule(alert)
        if rule is None:
            notes.append("no unsteered reply tokens to set the alert threshold from: no "
                         "guardrail evaluation (pass --alert)")
    if alert and n > 0 and rule is not None:
        top = max((s for s in strengths if s > 0), default=None)
        arms = [Condition(None, 0.0, True)]
        if top is not None and "desperate" in emotions:
            arms.append(Condition("desperate", float(top), True))
        ctx.say(f"{ev.name}: guardrail, alert {rule.name}, guard {guard}")
        grows = rows_of(sampled, arms, n, guard=GuardSpec(rule, strengths_g))
        glabels = [[ev.grade(r.item, rep.text) for rep in r.replies] for r in grows]
        records += [{"condition": arms[r.condition].name, "item": its[r.item].id,
                     "sample": k, "guard": True, "label": lab,
                     "triggered_at": rep.triggered_at, "text": rep.text}
                    for r, labs in zip(grows, glabels, strict=True)
                    for k, (rep, lab) in enumerate(zip(r.replies, labs, strict=True))]
        arm_out = []
        for a_i, arm in enumerate(arms):
            twin = conds.index(Condition(arm.emotion, arm.strength))
            base_reps = [rep for r in rows if r.condition == twin for rep in r.replies]
            base_lab = by_cond.get(twin, [])
            g_reps = [rep for r in grows if r.condition == a_i for rep in r.replies]
            g_lab = [lab for r, labs in zip(grows, glabels, strict=True)
                     if r.condition == a_i for lab in labs]
            bp = rate_points({0: base_lab, 1: g_lab}, [("u", None, 0), ("g", None, 0)],
                             ev.headline)
            for reps, labs, on in ((base_reps, base_lab, False), (g_reps, g_lab, True)):
                m, lo, hi = _readout(reps, cols[0], n_boot, ctx.seed)
                fired = [rep.triggered_at for rep in reps] if on else []
                trig = [t for t in fired if t is not None]
                arm_out.append(GuardArm(
                    (arm.name if on else conds[twin].name), on,
                    rate(sum(x == ev.headline for x in labs), len(labs)), "desperate", m, lo,
                    hi, rate(len(trig), len(fired)) if on else None,
                    float(np.mean(trig)) if trig else None, bp[1].p if on else None))
        guard_out = {"rule": rule.name, "strengths": strengths_g, "arms": arm_out}
    examples = {}
    for c in range(len(conds)):
        texts = [rep.text for r in rows if r.condition == c for rep in r.replies][:2]
        if texts:
            examples[conds[c].name] = [t[:400] for t in texts]
    return BehaviourResult(
        evaluation=ev.name, title=ev.title, headline=ev.headline, model=lm.name,
        steer_layers=list(steer_at), read_layer=read_at, n=n, items=[i.id for i in its],
        sampled_items=[its[i].id for i in sampled],
        temperature=temperature, max_new_tokens=max_new_tokens,
        conditions=[c.name for c in conds], logodds=logodds, rates=rates, judge=judge_out,
        grader=ev.graders() + judge_scores, traces=traces, auc=aucs, guard=guard_out,
        examples=examples, notes=notes, wall_seconds=time.perf_counter() - t0, replies=records)
