"""The user-facing model: an adapter plus monitor / steer / generate / stream.

:class:`LanguageModel` sits above every part it combines (the read path, steering, the
decoding loop), so nothing below imports it: data flows one way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from emolens.model import ModelAdapter

if TYPE_CHECKING:  # pragma: no cover
    from emolens.generation import GeneratedText, TokenStep
    from emolens.monitor import Readout
    from emolens.vectors import EmotionVectors


class LanguageModel(ModelAdapter):
    """A causal LM with its tokenizer and the emolens verbs: monitor, steer, generate, stream."""

    def generate_text(self, messages_batch: Sequence[Sequence[dict[str, str]] | str],
                      **kwargs: Any) -> list[GeneratedText]:
        """Generate a reply for each chat (or raw prompt string); see emolens.generation."""
        from emolens.generation import generate_text

        return generate_text(self, messages_batch, **kwargs)

    def stream(self, messages: Sequence[dict[str, str]] | str, **kwargs: Any
               ) -> Iterator[TokenStep]:
        """Yield generated tokens one by one (with emotion scores if ``monitor=`` is given)."""
        from emolens.generation import stream

        return stream(self, messages, **kwargs)

    def monitor(self, text: str | Sequence[dict[str, str]], vectors: EmotionVectors,
                **kwargs: Any) -> Readout:
        """Per-token emotion read-out of a text or chat; see emolens.monitor.read."""
        from emolens.monitor import read

        return read(self, text, vectors, **kwargs)

    def steer(self, vectors: EmotionVectors, strengths: dict[str, float] | Any,
              **kwargs: Any) -> Any:
        """Context manager adding emotion directions to the residual stream; see emolens.steer."""
        from emolens.steer import steering

        return steering(self, vectors, strengths, **kwargs)
