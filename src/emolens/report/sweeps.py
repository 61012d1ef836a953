"""Steering dose-response sweeps (happy vs sad, calm vs desperate) as one report section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure

from emolens.experiments.steering_sweep import SweepResult, steering_sweep
from emolens.report.figures import fig_bar_ci

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

CONTRASTS = (("happy", "sad"), ("calm", "desperate"))


@dataclass
class SweepSection:
    sweeps: list[SweepResult]

    @classmethod
    def run(cls, lm: LanguageModel, vectors: EmotionVectors) -> SweepSection:
        return cls([steering_sweep(lm, vectors, pos, neg) for pos, neg in CONTRASTS])

    def to_dict(self) -> dict[str, Any]:
        return {f"{s.positive}-{s.negative}": s.to_json() for s in self.sweeps}

    def summary(self) -> str:
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

    def figures(self) -> dict[str, Figure]:
        out = {}
        for s in self.sweeps:
            points = s.points + ([s.control] if s.control else [])
            labels = [f"{p.strength:+.2f}" for p in s.points] + (["random"] if s.control else [])
            out[f"{s.positive}-{s.negative}"] = fig_bar_ci(
                labels, [p.mean for p in points], [p.ci_low for p in points],
                [p.ci_high for p in points],
                f"Steering {s.positive} vs {s.negative}: read-out of the generated text",
                f"mean {s.positive} - {s.negative} score", ns=[p.n for p in points])
        return out
