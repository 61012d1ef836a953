"""The layer sweep stored in a vector file, as a report section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure

from emolens.report.figures import fig_layer_curve
from emolens.stats import format_rate, rate
from emolens.vectors import EmotionVectors


@dataclass(frozen=True)
class LayerSweepResult:
    """Held-out accuracy and valence separation per layer, from extraction time."""

    layers: list[int]
    top1: list[float]
    top5: list[float]
    valence_r: list[float | None]
    recommended: int
    n_heldout: int
    n_emotions: int
    n_layers: int

    @classmethod
    def from_vectors(cls, vectors: EmotionVectors) -> LayerSweepResult:
        scores: dict[str, dict[str, float]] = vectors.meta.get("layer_scores") or {}
        layers = sorted(int(x) for x in scores)
        return cls(layers, [scores[str(x)]["top1"] for x in layers],
                   [scores[str(x)]["top5"] for x in layers],
                   [scores[str(x)].get("valence_r") for x in layers],
                   vectors.default_layer, int(vectors.meta.get("n_heldout") or 0),
                   len(vectors.emotions), int(vectors.meta["model"]["n_layers"]))

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "top1": self.top1, "top5": self.top5,
                "valence_r": self.valence_r, "recommended_layer": self.recommended,
                "n_heldout": self.n_heldout}

    def summary(self) -> str:
        if not self.layers:
            return "This vector file has no layer sweep (built with --no-sweep)."
        i = self.layers.index(self.recommended)
        hits = round(self.top1[i] * self.n_heldout)
        depth = self.recommended / max(1, self.n_layers - 1)
        return (f"Held-out stories (topics never used to build the vectors) are classified "
                f"best at layer {self.recommended} of {self.n_layers} ({depth:.0%} of depth): "
                f"{self.n_emotions}-way top-1 accuracy "
                f"{format_rate(rate(hits, self.n_heldout))}, top-5 {self.top5[i]:.2f}, against "
                f"a chance level of {1 / self.n_emotions:.3f}. Layer 0 reaches "
                f"{self.top1[0]:.2f}: what lies above that is more than word identity.")

    def figure(self) -> Figure:
        series: dict[str, Any] = {"top-1 accuracy": self.top1, "top-5 accuracy": self.top5}
        if all(v is not None for v in self.valence_r):
            series["valence separation r"] = self.valence_r
        return fig_layer_curve(self.layers, series,
                               f"Held-out classification by layer (n = {self.n_heldout})",
                               "score", mark=self.recommended)
