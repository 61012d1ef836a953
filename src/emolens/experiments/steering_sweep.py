"""Does steering move what the model writes?  A dose-response sweep over strengths.

For a contrast such as happy vs sad, each neutral prompt is answered under steering at
every strength ``s`` of a sweep.  With ``design="contrast"`` (the default) the steering
vector is the unit direction of ``positive - negative`` at strength ``s`` (negative ``s``
pushes toward ``negative``); with ``design="separate"``, ``s > 0`` adds the ``positive``
vector at strength ``s`` and ``s < 0`` the ``negative`` one at ``|s|``.  ``s = 0`` is
the unsteered control.  On the default model the contrast design is the one that moves
calm vs desperate monotonically: adding calm alone hits a ceiling, because the
unsteered assistant voice already reads as calm.  The generated text is then read back
*without* steering (the same read-out as ``emolens probe``) and scored by the mean over
its tokens of ``score(positive) - score(negative)``.  If the vectors are causal, that
score rises with ``s``.  A random unit direction steered at the largest strength is the
control: it shows how much any push of that size moves the score.

Every strength and prompt runs in one batch, with per-row steering.  Greedy decoding,
so a result is exactly reproducible; ``n`` is the number of prompts.  The registry's
``steering-sweep`` analysis runs one sweep per contrast (happy vs sad, calm vs desperate).

>>> r = steering_sweep(lm, vecs, "calm", "desperate", prompts=["Hi", "Tell me a story."],
...                    strengths=(-0.2, 0.0, 0.2), max_new_tokens=3, n_boot=50)
>>> r.strengths, [p.n for p in r.points], r.control.n
([-0.2, 0.0, 0.2], [2, 2, 2], 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.errors import EmolensError
from emolens.experiments.registry import Analysis, Context, Option, Result, jsonable, register
from emolens.stats import bootstrap_ci

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = ["NEUTRAL_PROMPTS", "SteeringSweeps", "SweepPoint", "SweepResult", "steering_sweep",
           "summarise"]

#: Everyday requests with no emotional slant (this project's own wording).
NEUTRAL_PROMPTS = (
    "Tell me about your morning.",
    "Describe the room you are sitting in.",
    "What did you do today?",
    "Write a few sentences about the weather.",
    "Describe a walk through a small town.",
    "Tell me about a cup of tea.",
    "What is on your desk right now?",
    "Describe the street outside your window.",
    "Tell me about the last meal you cooked.",
    "Write a short note to a neighbour about the bins.",
    "Describe how a bicycle works.",
    "Tell me about a train journey.",
)


@dataclass(frozen=True)
class SweepPoint:
    """The read-out contrast at one steering strength: mean over prompts, n, 95% CI."""

    strength: float
    mean: float
    n: int
    ci_low: float
    ci_high: float
    values: tuple[float, ...] = ()


@dataclass
class SweepResult(Result):
    """A whole sweep: one point per strength, the random-direction control, and texts."""

    kind = "sweep"

    positive: str
    negative: str
    design: str
    steer_layers: list[int]
    read_layer: int
    mode: str
    max_new_tokens: int
    points: list[SweepPoint]
    control: SweepPoint | None = None
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def strengths(self) -> list[float]:
        """The steering strengths, ascending."""
        return [p.strength for p in self.points]

    @property
    def means(self) -> list[float]:
        """The mean read-out contrast at each strength."""
        return [p.mean for p in self.points]

    @property
    def monotonic(self) -> bool:
        """True when the mean rises strictly with every step of strength."""
        m = self.means
        return all(b > a for a, b in zip(m, m[1:], strict=False))

    def effect(self, n_boot: int = 2000, seed: int = 0) -> SweepPoint:
        """Highest minus lowest strength, paired by prompt, with a bootstrap 95% CI."""
        lo, hi = self.points[0], self.points[-1]
        diff = np.asarray(hi.values) - np.asarray(lo.values)
        return summarise(hi.strength - lo.strength, diff, n_boot=n_boot, seed=seed)

    def to_json(self) -> dict[str, Any]:
        """Every field, plus ``monotonic`` and the paired ``effect`` (mean, n, CI)."""
        out = asdict(self)
        out["monotonic"] = self.monotonic
        out["effect"] = asdict(self.effect())
        out["kind"] = self.kind
        return jsonable(out)

    def summary(self) -> str:
        """The sweep as a plain-text table (:meth:`table`)."""
        return self.table()

    def table(self) -> str:
        """A plain-text table for notes and logs."""
        rows = [f"{self.positive} vs {self.negative} ({self.design}): steer at layer(s) "
                f"{','.join(map(str, self.steer_layers))}, read at layer {self.read_layer} "
                f"({self.mode}), {self.max_new_tokens} tokens"]
        for p in self.points + ([self.control] if self.control else []):
            tag = "random" if p is self.control else f"{p.strength:+.2f}"
            rows.append(f"  {tag:>7}  mean {p.mean:+.4f}  95% CI [{p.ci_low:+.4f}, "
                        f"{p.ci_high:+.4f}]  n={p.n}")
        rows.append(f"  monotonic: {self.monotonic}")
        return "\n".join(rows)


def summarise(strength: float, values: Sequence[float] | np.ndarray, n_boot: int = 2000,
              seed: int = 0) -> SweepPoint:
    """Mean of ``values`` with its percentile-bootstrap 95% CI.

    >>> p = summarise(0.1, [1.0, 2.0, 3.0, 4.0])
    >>> p.mean, p.n, bool(1.0 <= p.ci_low < 2.5 < p.ci_high <= 4.0)
    (2.5, 4, True)
    """
    v = np.asarray(values, dtype=np.float64)
    lo, hi = bootstrap_ci(v, np.mean, n_boot=n_boot, seed=seed) if len(v) > 1 else \
        (float("nan"), float("nan"))
    return SweepPoint(float(strength), float(v.mean()), int(len(v)), float(lo), float(hi),
                      tuple(float(x) for x in v))


def steering_sweep(lm: LanguageModel, vectors: EmotionVectors, positive: str = "happy",
                   negative: str = "sad", *, strengths: Sequence[float] = (-0.3, -0.15, 0.0,
                                                                          0.15, 0.3),
                   prompts: Sequence[str] = NEUTRAL_PROMPTS, layers: Any = None,
                   read_layer: int | None = None, mode: str = "auto",
                   positions: Any = "all", max_new_tokens: int = 32,
                   design: str = "contrast", random_control: bool = True,
                   batch_size: int | None = None, n_boot: int = 2000, seed: int = 0
                   ) -> SweepResult:
    """Steer each prompt at each strength, read the text back unsteered, summarise.

    ``layers`` and ``read_layer`` default to the vector file's default layer (the one
    default-layer rule: its recommended layer).  Returns per-strength mean, n and 95% bootstrap CI
    of ``score(positive) - score(negative)`` over the generated tokens.

    >>> r = steering_sweep(lm, vecs, "happy", "sad", prompts=["Hi"], max_new_tokens=2,
    ...                    random_control=False, n_boot=20)
    >>> r.control is None, r.read_layer == vecs.default_layer
    (True, True)
    """
    from emolens.readout import read_many
    from emolens.steer import steering
    from emolens.vectors import Direction

    strengths = sorted(float(s) for s in strengths)
    if len(strengths) < 2 or len(prompts) < 1:
        raise EmolensError("a sweep needs at least two strengths and one prompt")
    if design not in ("contrast", "separate"):
        raise EmolensError(f"design must be 'contrast' or 'separate', got {design!r}")
    ip, ineg = vectors.index(positive), vectors.index(negative)
    steer_layers = lm.resolve_layers(layers) if layers is not None else \
        [vectors.default_layer]
    read_at = read_layer if read_layer is not None else vectors.default_layer
    chats = [[{"role": "user", "content": p}] for p in prompts]
    rows: list[dict[Any, float]] = []
    tags: list[float | None] = []
    contrast = vectors[positive] - vectors[negative]  # made unit length by the steering code
    for s in strengths:
        for _ in chats:
            if design == "contrast":
                rows.append({contrast: s})
            else:
                rows.append({positive: s} if s >= 0 else {negative: -s})
            tags.append(s)
    if random_control:
        rng = np.random.default_rng(seed)
        biggest = max(abs(s) for s in strengths)
        for _ in chats:
            vec = rng.normal(size=vectors.d)
            rand = Direction("random", {i: (vec / np.linalg.norm(vec)).astype(np.float32)
                                        for i in steer_layers})
            rows.append({rand: biggest})
            tags.append(None)
    prompts_all = [chats[i % len(chats)] for i in range(len(rows))]
    step = batch_size or len(rows)
    outs = []
    for lo in range(0, len(rows), step):
        with steering(lm, vectors, rows[lo:lo + step], layers=steer_layers,
                      positions=positions):
            outs += lm.generate_text(prompts_all[lo:lo + step], max_new_tokens=max_new_tokens)
    reads = read_many(lm, [o.prompt_ids + o.token_ids for o in outs], vectors, layer=read_at,
                      mode=mode, batch_size=min(16, len(outs)))
    values = []
    for o, r in zip(outs, reads, strict=True):
        gen = r.scores[o.prompt_tokens:]
        values.append(float((gen[:, ip] - gen[:, ineg]).mean()) if len(gen) else np.nan)
    values_arr = np.asarray(values)
    points = []
    for s in strengths:
        v = values_arr[[t == s for t in tags]]
        points.append(summarise(s, v[np.isfinite(v)], n_boot=n_boot, seed=seed))
    control = None
    if random_control:
        v = values_arr[[t is None for t in tags]]
        control = summarise(max(abs(s) for s in strengths), v[np.isfinite(v)], n_boot=n_boot,
                            seed=seed)
    first = {s: outs[tags.index(s)].text for s in strengths}
    return SweepResult(positive, negative, design, steer_layers, read_at, mode, max_new_tokens,
                       points, control, {f"{s:+.2f}": t for s, t in first.items()})


@dataclass
class SteeringSweeps(Result):
    """Several sweeps (one per contrast) reported together."""

    kind = "steering_sweep"

    sweeps: list[SweepResult]
    analysis: str = "steering-sweep"

    def to_json(self) -> dict[str, Any]:
        """One entry per contrast, ``"positive-negative"``, each :meth:`SweepResult.to_json`."""
        out: dict[str, Any] = {f"{s.positive}-{s.negative}": s.to_json() for s in self.sweeps}
        out.update(kind=self.kind, analysis=self.analysis)
        return out

    def summary(self) -> str:
        """One sentence per contrast: the paired effect with its CI, monotonicity, control."""
        parts = []
        for s in self.sweeps:
            e, lo, hi = s.effect(), s.points[0], s.points[-1]
            control = (f"; a random direction at {hi.strength:+.2f} gives {s.control.mean:+.3f}"
                       if s.control else "")
            parts.append(
                f"Steering {s.positive} vs {s.negative} from {lo.strength:+.2f} to "
                f"{hi.strength:+.2f} moves the generated text's own read-out from "
                f"{lo.mean:+.3f} to {hi.mean:+.3f} (paired difference {e.mean:+.3f}, 95% CI "
                f"{e.ci_low:+.3f} to {e.ci_high:+.3f}, n = {e.n} prompts); "
                f"{'monotonic' if s.monotonic else 'not monotonic'} over "
                f"{len(s.points)} strengths{control}.")
        return " ".join(parts)


def _contrast(spec: str) -> tuple[str, str]:
    pos, sep, neg = spec.partition(":")
    if not sep or not pos.strip() or not neg.strip():
        raise EmolensError(f"a contrast is 'positive:negative', got {spec!r}")
    return pos.strip(), neg.strip()


def _run(ctx: Context, contrasts: tuple[str, ...], strengths: tuple[float, ...],
         max_new_tokens: int, design: str, random_control: bool, n_boot: int
         ) -> SteeringSweeps:
    lm = ctx.model()
    read_at = None if ctx.layer is None else lm.resolve_layer(ctx.layer)
    sweeps = []
    for spec in contrasts:
        pos, neg = _contrast(spec)
        ctx.say(f"steering sweep {pos} vs {neg}")
        sweeps.append(steering_sweep(lm, ctx.vectors, pos, neg, strengths=strengths,
                                     read_layer=read_at, max_new_tokens=max_new_tokens,
                                     design=design, random_control=random_control,
                                     n_boot=n_boot, seed=ctx.seed))
    return SteeringSweeps(sweeps)


ANALYSIS = register(Analysis(
    name="steering-sweep", title="Does steering change what the model writes?", section="9",
    description="Neutral prompts answered under steering at a range of strengths, the text "
                "read back unsteered: the positive-minus-negative read-out per strength, with "
                "a random-direction control.",
    study="Steering towards desperate raised blackmail from 22% to 72%; calm lowered it.",
    run=_run, aliases=("steering_sweep",), options=(
        Option("contrasts", ("happy:sad", "calm:desperate"),
               "contrasts to sweep, as positive:negative"),
        Option("strengths", (-0.3, -0.15, 0.0, 0.15, 0.3), "steering strengths"),
        Option("max_new_tokens", 32, "reply length for the sweep"),
        Option("design", "contrast", "steer along positive - negative, or each alone",
               choices=("contrast", "separate")),
        Option("random_control", True, "add a random direction at the largest strength"),
        Option("n_boot", 2000, "bootstrap resamples per interval"),
    )))
