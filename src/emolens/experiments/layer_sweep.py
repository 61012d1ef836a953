"""Which layer carries emotion? The layer sweep stored in a vector file (paper-spec 4).

Extraction classifies held-out stories at every layer and keeps the per-layer top-1 and
top-5 accuracy in the file (``layer_scores``, ``n_heldout``); the layer with the best top-1
becomes the file's recommended layer. This analysis reports that sweep with its n and
intervals, and recomputes each layer's valence separation from the vectors themselves (a
model-free check: does the layer order emotions by human valence ratings?).

>>> r = layer_sweep(vecs)
>>> r.layers, r.recommended
([], 2)
>>> valence_separation(vecs.matrix(2), vecs.emotions, {"happy": 0.9, "calm": 0.5,
...                    "sad": -0.7, "afraid": -0.6, "angry": -0.8}).n
5
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.experiments.registry import Analysis, Context, Result, register
from emolens.stats import Correlation, Rate, format_correlation, format_rate, pearson, rate

if TYPE_CHECKING:  # pragma: no cover
    from emolens.vectors import EmotionVectors

__all__ = ["LayerSweepResult", "layer_sweep", "valence_separation"]


def valence_separation(matrix: Any, emotions: Sequence[str],
                       valence: Mapping[str, float]) -> Correlation | None:
    """Correlation, across emotions with a valence rating, between each vector's rating and
    its projection on the (mean positive - mean negative) direction; None when fewer than
    four emotions are rated or one side is empty."""
    M = np.asarray(matrix, dtype=np.float64)
    rated = [(i, float(valence[e])) for i, e in enumerate(emotions) if e in valence]
    if len(rated) < 4 or not any(v > 0 for _, v in rated) or not any(v < 0 for _, v in rated):
        return None
    idx = np.array([i for i, _ in rated])
    val = np.array([v for _, v in rated])
    axis = M[idx[val > 0]].mean(0) - M[idx[val < 0]].mean(0)
    return pearson(M[idx] @ axis, val)


@dataclass(frozen=True, eq=False)
class LayerSweepResult(Result):
    """Held-out accuracy (from extraction time) and valence separation per layer."""

    kind = "layer_sweep"

    layers: list[int]
    top1: list[Rate]
    top5: list[Rate]
    valence: list[Correlation | None]
    recommended: int
    n_heldout: int
    n_emotions: int
    n_layers: int
    analysis: str = "layers"

    def summary(self) -> str:
        """Where held-out classification peaks, against chance and layer 0."""
        if not self.layers:
            return "This vector file has no layer sweep (built with --no-sweep)."
        i = self.layers.index(self.recommended) if self.recommended in self.layers else \
            int(np.argmax([r.value for r in self.top1]))
        depth = self.layers[i] / max(1, self.n_layers - 1)
        val = self.valence[i]
        sep = f" Valence separation there: {format_correlation(val)}." if val else ""
        return (f"Held-out stories (topics never used to build the vectors) are classified "
                f"best at layer {self.layers[i]} of {self.n_layers} ({depth:.0%} of depth): "
                f"{self.n_emotions}-way top-1 accuracy {format_rate(self.top1[i])}, top-5 "
                f"{format_rate(self.top5[i])}, against a chance level of "
                f"{1 / self.n_emotions:.3f}. Layer {self.layers[0]} reaches "
                f"{self.top1[0].value:.2f}: what lies above that is more than word identity."
                f"{sep}")


def layer_sweep(vectors: EmotionVectors, valence: Mapping[str, float] | None = None
                ) -> LayerSweepResult:
    """The file's stored sweep as rates with n and Wilson intervals, and each layer's
    valence separation (``valence``: ratings by emotion, default the shipped norms)."""
    from emolens.concepts import load_norms

    scores: dict[str, dict[str, float]] = vectors.meta.get("layer_scores") or {}
    n = int(vectors.meta.get("n_heldout") or 0)
    ratings = load_norms().valence if valence is None else valence
    layers = sorted(int(x) for x in scores)

    def as_rate(value: float) -> Rate:
        return rate(int(round(value * n)), n) if math.isfinite(value) else rate(0, 0)

    return LayerSweepResult(
        layers=layers, top1=[as_rate(scores[str(x)]["top1"]) for x in layers],
        top5=[as_rate(scores[str(x)]["top5"]) for x in layers],
        valence=[valence_separation(vectors.matrix(x), vectors.emotions, ratings)
                 if x in vectors.layers else None for x in layers],
        recommended=vectors.default_layer, n_heldout=n, n_emotions=len(vectors.emotions),
        n_layers=int((vectors.meta.get("model") or {}).get("n_layers") or len(vectors.layers)))


def _run(ctx: Context) -> LayerSweepResult:
    return layer_sweep(ctx.vectors)


ANALYSIS = register(Analysis(
    name="layers", title="Which layer carries emotion? (layer sweep)", section="4",
    description="Held-out top-1 and top-5 accuracy at every layer, measured at extraction "
                "time and stored in the vector file, with each layer's valence separation.",
    study="The study reads its vectors about two thirds of the way through the model.",
    run=_run, needs_model=False, aliases=("layer-sweep",)))
