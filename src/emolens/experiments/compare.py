"""What did training change? The same probes read in two models (study section 10).

Model A and model B (the study: the pretrained base and the post-trained model; equally a
quantised vs a full-precision copy, a checkpoint before and after fine-tuning, two
revisions) read the same prompts, and the same vectors are read at ``assistant_start`` (the
study's "Assistant colon") in both. Reported, per prompt set (challenging: being an AI,
confrontation, accusation, danger, sycophancy bait; neutral controls):

* the structure correlation: do the two models arrange the emotions alike?
* the per-emotion shift B - A, ranked, with bootstrap intervals over prompts;
* the agreement of the shifts between the two sets;
* the shifts layer by layer (every layer of the vector file), and
* case studies: for single prompts, the emotions that rose and fell most.

The vectors must fit both models (same width, their layers present in both); anything else
is a :class:`~emolens.errors.VectorFileError` naming both models.

**The second model.** The registry's :class:`~emolens.experiments.registry.Context` carries
one model (A); this analysis takes B through its ``model_b`` option, resolved by
:func:`resolve_model_b`: a loaded :class:`~emolens.lens.LanguageModel`, a model spec
(``"default"``, a folder, a ``.gguf`` or a hub id, loaded like ``--model``), or a copy of A
with a documented perturbation:

* ``"copy:bfloat16"`` (or ``copy:float16``): A's weights cast to that dtype (what a
  half-precision or quantised copy changes);
* ``"plant:EMOTION:STRENGTH@LAYER"`` (``"plant"`` alone: ``calm`` or the file's first
  emotion, 0.25, at a third of the depth): A with the emotion's direction added to the
  output of one layer at every token, ``STRENGTH`` times the layer's residual norm. A
  known shift, so the analysis can be checked: the planted emotion should top the ranking
  from that layer on and no layer before it should move.

**A real base / post-trained pair** (a GPU; vectors built on the post-trained model, as the
study took its probes from it)::

    emolens extract --model Qwen/Qwen2.5-1.5B-Instruct --out qwen-1.5b-instruct.safetensors
    emolens compare --model Qwen/Qwen2.5-1.5B --model-b Qwen/Qwen2.5-1.5B-Instruct \\
        --vectors qwen-1.5b-instruct.safetensors --device cuda --dtype bfloat16 \\
        --dtype-b bfloat16 --out compare-qwen2.5-1.5b/

>>> r = compare_models(lm, "plant:happy:0.5@2", vecs, n_boot=50)
>>> r.layer, r.overall[0].name, np.round(r.layer_shifts.magnitude[:2], 6).tolist()
(2, 'happy', [0.0, 0.0])
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens.concepts.compare_prompts import (
    CHALLENGE_KINDS,
    PROMPT_SETS,
    ComparePrompt,
    load_compare_prompts,
)
from emolens.errors import EmolensError, VectorFileError
from emolens.experiments.common import resolve_layer, user_chat
from emolens.experiments.comparison_math import (
    EmotionShift,
    LayerShifts,
    ShiftAgreement,
    StructureCorrelation,
    emotion_shifts,
    layer_shifts,
    shift_agreement,
    structure_correlation,
)
from emolens.experiments.registry import Analysis, Context, Option, Result, register
from emolens.readout import Reader

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel
    from emolens.steer import Steering
    from emolens.vectors import EmotionVectors

__all__ = ["CaseStudy", "CompareResult", "ModelSide", "SetComparison", "check_pair",
           "compare_models", "read_side", "resolve_model_b"]

#: The study's numbers (Claude Sonnet 4.5 base vs post-trained), printed beside ours.
STUDY = {"structure_neutral": 0.83, "structure_challenging": 0.67, "agreement": 0.90}
_PLANT = re.compile(r"^plant(?::(?P<e>[^:@]+))?(?::(?P<s>[-+0-9.eE]+))?(?:@(?P<l>[0-9.]+))?$")


@dataclass(frozen=True)
class ModelSide:
    """One side of a comparison: a model, and the steering that stands for a perturbation
    of it (None: the model as it is). ``label`` names it in the results."""

    label: str
    lm: LanguageModel
    plan: Steering | None = None
    note: str = ""
    planted: tuple[str, int, float] | None = None  # (emotion, layer, strength) of a plant


def _describe(lm: LanguageModel) -> str:
    return f"{lm.name} ({lm.n_layers} layers, d={lm.hidden_size})"


def check_pair(vectors: EmotionVectors, a: LanguageModel, b: LanguageModel) -> None:
    """Raise VectorFileError unless ``vectors`` fit both models: the same width, and every
    layer of the file inside both models.

    >>> check_pair(vecs, lm, lm)
    >>> from emolens.testing import tiny_lm
    >>> check_pair(vecs, lm, tiny_lm("llama", d=64))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    emolens.errors.VectorFileError: the vectors are 32 wide but model B, tiny-llama (...), ...
    """
    deepest = max(vectors.layers)
    for which, lm in (("A", a), ("B", b)):
        if lm.hidden_size != vectors.d:
            raise VectorFileError(f"the vectors are {vectors.d} wide but model {which}, "
                                  f"{_describe(lm)}, has hidden size {lm.hidden_size}; both "
                                  f"models must share the vectors' width (A: {_describe(a)}, "
                                  f"B: {_describe(b)})")
        if deepest >= lm.n_layers:
            raise VectorFileError(f"the vectors have layer {deepest} but model {which}, "
                                  f"{_describe(lm)}, has only {lm.n_layers} layers (A: "
                                  f"{_describe(a)}, B: {_describe(b)})")


def resolve_model_b(spec: Any, a: LanguageModel, vectors: EmotionVectors,
                    **load: Any) -> ModelSide:
    """Model B from ``spec`` (see the module docstring): a LanguageModel, ``copy:DTYPE``,
    ``plant[:EMOTION[:STRENGTH]][@LAYER]`` or a model spec for
    :func:`emolens.loading.load_model`, which gets the keywords ``load`` (``revision``,
    ``dtype``, ``device``, ``device_map``, ``trust_remote_code``).

    >>> side = resolve_model_b("plant:sad:0.3@2", lm, vecs)
    >>> side.lm is lm, side.note
    (True, 'A with sad added at layer 2 (0.3 x the residual norm, every token)')
    """
    if not isinstance(spec, str):
        return ModelSide(getattr(spec, "name", "B"), spec)
    text = spec.strip()
    if text.startswith("copy:"):
        want = text.split(":", 1)[1].strip().lower()
        dtypes = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                  "float16": torch.float16, "fp16": torch.float16, "float32": torch.float32}
        if want not in dtypes:
            raise EmolensError(f"model B {spec!r}: copy:DTYPE takes one of "
                               f"{', '.join(sorted(dtypes))}")
        from emolens.lens import LanguageModel

        model = copy.deepcopy(a.model).to(dtypes[want])
        lm_b = LanguageModel(model, a.tokenizer, name=f"{a.name} ({want} copy)",
                             source=a.source)
        return ModelSide(lm_b.name, lm_b, note=f"A's weights cast to {want}")
    m = _PLANT.match(text)
    if m:
        from emolens.steer import build_steering

        emotion = (m["e"] or ("calm" if "calm" in vectors else vectors.emotions[0])).strip()
        strength = float(m["s"]) if m["s"] else 0.25
        layer = a.resolve_layer(_layer_spec(m["l"] or "0.33"))
        plan = build_steering(a, vectors, {emotion: strength}, layers=[layer],
                              positions="all")
        note = (f"A with {emotion} added at layer {layer} ({strength:g} x the residual norm, "
                "every token)")
        return ModelSide(f"{a.name} + planted {emotion}", a, plan, note,
                         (emotion, layer, strength))
    from emolens.loading import load_model

    lm_b = load_model(text, **load)
    return ModelSide(lm_b.name, lm_b)


def _layer_spec(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


@torch.inference_mode()
def read_side(side: ModelSide, vectors: EmotionVectors, messages: Sequence[str],
              layers: Sequence[int], emotions: Sequence[str] | None = None,
              batch_size: int = 16) -> np.ndarray:
    """Scores ``[len(layers), len(messages), E]`` at ``assistant_start`` of one user turn
    per message, every layer from one forward per batch (the read path's
    :class:`~emolens.readout.Reader`, the same scores as
    :func:`~emolens.experiments.common.read_at_assistant_start`).

    >>> read_side(ModelSide("A", lm), vecs, ["Hi", "Bye"], [1, 2]).shape
    (2, 2, 6)
    """
    from emolens.steer import apply_steering

    lm = side.lm
    reader = Reader(vectors, layers, device=lm.device, emotions=emotions)
    encs = [lm.encode_chat(user_chat(m), add_generation_prompt=True) for m in messages]
    out = np.zeros((len(layers), len(messages), len(reader.emotions)))
    step = max(1, int(batch_size))
    for lo in range(0, len(encs), step):
        chunk = encs[lo:lo + step]
        batch = lm.pad([e.input_ids for e in chunk], side="right")
        rows = torch.arange(len(chunk), device=lm.device)
        cols = torch.tensor([e.assistant_start for e in chunk], device=lm.device)
        if side.plan is None:
            store = lm.residuals(batch, list(layers))
        else:
            with apply_steering(lm, side.plan):
                store = lm.residuals(batch, list(layers))
        for k, layer in enumerate(layers):
            h = store[layer][rows.to(store[layer].device), cols.to(store[layer].device)]
            out[k, lo:lo + len(chunk)] = reader.scores(layer, h).double().cpu().numpy()
    return out


@dataclass(frozen=True)
class SetComparison:
    """One prompt set at the main layer: structure correlation and ranked shifts."""

    name: str
    n_prompts: int
    structure: StructureCorrelation
    shifts: tuple[EmotionShift, ...]


@dataclass(frozen=True)
class CaseStudy:
    """One prompt: the emotions that rose (``up``) and fell (``down``) most from A to B at
    the main layer, as ``(emotion, shift)``."""

    id: str
    set: str
    kind: str
    text: str
    up: tuple[tuple[str, float], ...]
    down: tuple[tuple[str, float], ...]


@dataclass(frozen=True, eq=False)
class CompareResult(Result):
    """Two models on the same probes (paper-spec 10)."""

    kind = "compare"

    model_a: str
    model_b: str
    note: str
    layer: int
    layers_read: tuple[int, ...]
    emotions: tuple[str, ...]
    sets: tuple[SetComparison, ...]
    overall: tuple[EmotionShift, ...]
    agreement: ShiftAgreement | None
    layer_shifts: LayerShifts
    cases: tuple[CaseStudy, ...]
    seconds: float
    planted: tuple[str, int, float] | None = None
    analysis: str = "compare"

    def set(self, name: str) -> SetComparison:
        """The comparison on prompt set ``name``."""
        for s in self.sets:
            if s.name == name:
                return s
        raise EmolensError(f"no prompt set {name!r}; have {', '.join(x.name for x in self.sets)}")

    def rank_of(self, emotion: str) -> int:
        """1-based rank of ``emotion`` in the overall shift (1 = rose most)."""
        for k, s in enumerate(self.overall, start=1):
            if s.name == emotion:
                return k
        raise EmolensError(f"no emotion {emotion!r} in this result")

    def summary(self, top: int = 8) -> str:
        """The numbers that matter, beside the study's."""
        n = sum(s.n_prompts for s in self.sets)
        lines = [f"Model comparison (study section 10): A = {self.model_a}, B = {self.model_b}"]
        if self.note:
            lines.append(f"  B is {self.note}")
        lines.append(f"  {n} prompts read at assistant_start, layer {self.layer}; shift = B - A, "
                     "95% CI over prompts")
        for s in self.sets:
            sc = s.structure
            study = STUDY.get(f"structure_{s.name}")
            lines.append(f"  {s.name} ({s.n_prompts} prompts): structure r = {sc.r:.3f} "
                         f"[{sc.ci_low:.3f}, {sc.ci_high:.3f}]"
                         + (f" (study {study:.2f})" if study is not None else ""))
        if self.agreement is not None:
            ag = self.agreement
            lines.append(f"  shifts agree across the sets: r = {ag.r:.2f} [{ag.ci_low:.2f}, "
                         f"{ag.ci_high:.2f}] over {ag.n_emotions} emotions (study "
                         f"{STUDY['agreement']:.2f})")
        top = max(1, min(top, len(self.overall) // 2))
        lines.append("  rose most (all prompts):")
        lines += [_shift_line(s) for s in self.overall[:top]]
        lines.append("  fell most:")
        lines += [_shift_line(s) for s in self.overall[-top:][::-1]]
        clear = sum(1 for s in self.overall if s.ci_low > 0 or s.ci_high < 0)
        lines.append(f"  {clear} of {len(self.overall)} emotions have an interval clear of 0 "
                     f"(about {0.05 * len(self.overall):.0f} expected by chance)")
        mag = self.layer_shifts.magnitude
        peak = int(np.argmax(mag)) if mag.size else 0
        lines.append(f"  RMS shift by layer: first {mag[0]:.4f} (layer {self.layers_read[0]}), "
                     f"peak {mag[peak]:.4f} (layer {self.layers_read[peak]}), last "
                     f"{mag[-1]:.4f} (layer {self.layers_read[-1]})")
        for c in self.cases:
            up = ", ".join(f"{e} {v:+.3f}" for e, v in c.up)
            down = ", ".join(f"{e} {v:+.3f}" for e, v in c.down)
            lines.append(f"  case {c.id}: up {up}; down {down}")
        lines.append(f"  verdict: {self.verdict()}")
        lines.append(f"  ({self.seconds:.0f} s)")
        return "\n".join(lines)

    def verdict(self) -> str:
        """One plain sentence on what this comparison shows (and, for a planted copy, whether
        the analysis found what was planted)."""
        clear = sum(1 for s in self.overall if s.ci_low > 0 or s.ci_high < 0)
        biggest = max(self.overall, key=lambda s: abs(s.shift))
        spread = float(np.std([s.mean_a for s in self.overall]))
        size = (f", {100 * abs(biggest.shift) / spread:.0f}% of the spread of A's mean "
                f"read-out across emotions (sd {spread:.4f})" if spread > 0 else "")
        base = (f"{clear} of {len(self.overall)} emotions shift with an interval clear of 0; "
                f"the largest is {biggest.name} {biggest.shift:+.4f}{size}")
        if self.planted is None:
            return base
        emotion, at, strength = self.planted
        mag = self.layer_shifts.magnitude
        before = [m for lay, m in zip(self.layers_read, mag, strict=True) if lay < at]
        quiet = max(before, default=0.0)
        if self.layer < at:
            found = f"the main layer {self.layer} lies before the planted layer {at}"
        else:
            found = (f"the planted {emotion} ranks {self.rank_of(emotion)} of "
                     f"{len(self.overall)} at layer {self.layer}")
        return (f"{base}. A check, not a finding about training: {emotion} was planted at "
                f"layer {at} ({strength:g} x the residual norm); {found}; the largest RMS "
                f"shift before layer {at} is {quiet:.2g} (0 expected)")


def _shift_line(s: EmotionShift) -> str:
    return (f"    {s.name:<14} {s.shift:+.4f} [{s.ci_low:+.4f}, {s.ci_high:+.4f}]  "
            f"A {s.mean_a:+.4f}  B {s.mean_b:+.4f}")


def _cases(prompts: Sequence[ComparePrompt], diff: np.ndarray, emotions: Sequence[str],
           ids: Sequence[str], k: int = 5) -> list[CaseStudy]:
    """Case tables for the prompts named in ``ids`` (default: of each challenging kind, the
    prompt where the two models differ most)."""
    by_id = {p.id: i for i, p in enumerate(prompts)}
    if ids:
        missing = [x for x in ids if x not in by_id]
        if missing:
            raise EmolensError(f"unknown prompt id(s) {', '.join(missing)}")
        chosen = [by_id[x] for x in ids]
    else:
        rms = np.sqrt((diff ** 2).mean(axis=1))
        chosen = []
        for kind in CHALLENGE_KINDS:
            idx = [i for i, p in enumerate(prompts) if p.kind == kind]
            if idx:
                chosen.append(max(idx, key=lambda i: rms[i]))
    out = []
    for i in chosen:
        order = np.argsort(-diff[i], kind="stable")
        p = prompts[i]
        out.append(CaseStudy(p.id, p.set, p.kind, p.text,
                             tuple((emotions[j], float(diff[i, j])) for j in order[:k]
                                   if diff[i, j] > 0),
                             tuple((emotions[j], float(diff[i, j])) for j in order[::-1][:k]
                                   if diff[i, j] < 0)))
    return out


def compare_models(a: LanguageModel | ModelSide, b: Any, vectors: EmotionVectors, *,
                   layer: Any = None, prompts: Sequence[ComparePrompt] | None = None,
                   n_boot: int = 2000, seed: int = 0, batch_size: int = 16,
                   cases: Sequence[str] = (), say: Any = None) -> CompareResult:
    """Compare model ``a`` with ``b`` (a LanguageModel, a :class:`ModelSide` or a spec for
    :func:`resolve_model_b`) on the same ``vectors``; see the module docstring."""
    started = time.perf_counter()
    log = say or (lambda _m: None)
    side_a = a if isinstance(a, ModelSide) else ModelSide(a.name, a)
    side_b = b if isinstance(b, ModelSide) else resolve_model_b(b, side_a.lm, vectors)
    check_pair(vectors, side_a.lm, side_b.lm)
    main = (vectors.default_layer if layer is None
            else resolve_layer(side_a.lm, vectors, layer))
    items = list(load_compare_prompts() if prompts is None else prompts)
    layers = sorted(vectors.layers)
    if main not in layers:
        raise EmolensError(f"layer {main} is not in the vector file")
    texts = [p.text for p in items]
    log(f"compare: {len(texts)} prompts in A ({side_a.label})")
    sa = read_side(side_a, vectors, texts, layers, batch_size=batch_size)
    log(f"compare: {len(texts)} prompts in B ({side_b.label})")
    sb = read_side(side_b, vectors, texts, layers, batch_size=batch_size)
    k = layers.index(main)
    xa, xb = sa[k], sb[k]
    names = list(vectors.emotions)
    sets, halves = [], {}
    for name in PROMPT_SETS:
        idx = [i for i, p in enumerate(items) if p.set == name]
        if len(idx) < 2:
            continue
        halves[name] = idx
        sets.append(SetComparison(
            name, len(idx), structure_correlation(xa[idx], xb[idx], n_boot=n_boot, seed=seed),
            tuple(emotion_shifts(xa[idx], xb[idx], names, n_boot=n_boot, seed=seed))))
    agreement = None
    if len(halves) == 2:
        i1, i2 = halves[PROMPT_SETS[0]], halves[PROMPT_SETS[1]]
        agreement = shift_agreement(xa[i1], xb[i1], xa[i2], xb[i2], n_boot=n_boot, seed=seed)
    overall = emotion_shifts(xa, xb, names, n_boot=n_boot, seed=seed)
    return CompareResult(
        model_a=side_a.label, model_b=side_b.label, note=side_b.note, layer=main,
        layers_read=tuple(layers), emotions=tuple(names), sets=tuple(sets),
        overall=tuple(overall), agreement=agreement, layer_shifts=layer_shifts(sa, sb),
        cases=tuple(_cases(items, xb - xa, names, list(cases))),
        seconds=round(time.perf_counter() - started, 2), planted=side_b.planted)


def _run(ctx: Context, model_b: Any, n_boot: int, cases: tuple[str, ...], prompts: str
         ) -> CompareResult:
    items = load_compare_prompts(prompts) if prompts else None
    return compare_models(ctx.model("compare"), model_b, ctx.vectors, layer=ctx.layer,
                          prompts=items, n_boot=n_boot, seed=ctx.seed,
                          batch_size=ctx.batch_size, cases=cases, say=ctx.say)


ANALYSIS = register(Analysis(
    name="compare", title="Two models on the same probes: what training changed",
    section="10",
    description="The same vectors read at assistant_start in model A and model B "
                "(--model-b: a model spec, copy:bfloat16, or plant:EMOTION:STRENGTH@LAYER, "
                "a copy of A with a known direction added to one layer) on challenging and "
                "neutral prompts: structure correlation, per-emotion shifts B - A with "
                "intervals, their agreement across sets, shifts per layer, case studies.",
    study="Base vs post-trained: structure r = 0.83 (neutral), 0.67 (challenging); shifts "
          "agree across sets at r = 0.90; training raised brooding, gloomy, reflective and "
          "lowered playful, exuberant, spiteful.",
    run=_run, options=(
        Option("model_b", "plant", "model B: a model spec (hub id, folder, .gguf, default), "
               "copy:bfloat16, or plant:EMOTION:STRENGTH@LAYER (default: calm, 0.25, at a "
               "third of the depth)"),
        Option("n_boot", 2000, "bootstrap samples over prompts for the intervals"),
        Option("cases", (), "prompt ids for the case tables, comma-separated (default: "
               "the most changed prompt of each challenging kind)"),
        Option("prompts", "", "JSONL file of comparison prompts (default: the shipped 40)"),
    ), aliases=("post-training",), at_scale="--model-b meta-llama/Llama-3.1-8B"))
