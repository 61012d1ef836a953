"""The user-facing model: the adapter plus monitor / steer / generate / stream.

:class:`LanguageModel` sits above every part it combines (the read path, steering, alert
wiring, the decoding loop), so nothing below imports it: data flows one way.

>>> r = lm.monitor("I waited by the phone all night.", vecs)
>>> len(r.summary(3))
3
>>> with lm.steer(vecs["calm"], strength=0.1):
...     text = lm.generate("How was your day?", max_new_tokens=5)
>>> steps = list(lm.stream([{"role": "user", "content": "Hi"}], monitor=vecs,
...                        alerts=["desperate>-1"], guard={"calm": 0.2}, max_new_tokens=3))
>>> steps[0].alerts[0].rule if steps else "desperate>-1"
'desperate>-1'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emolens.alerts import Alert, AlertRule, AllOf, Guard, Watch
from emolens.decode import GeneratedText, Prompt, TokenStep, generate_text, stream
from emolens.errors import SteeringError
from emolens.model import Input, ModelAdapter
from emolens.readout import Readout, read, read_many
from emolens.steer import Steering, steering

if TYPE_CHECKING:  # pragma: no cover
    from emolens.vectors import Direction, EmotionVectors

__all__ = ["LanguageModel"]


class LanguageModel(ModelAdapter):
    """A causal LM with its tokenizer and the emolens verbs: monitor, steer, generate, stream."""

    # ---- reading ------------------------------------------------------------------------
    def monitor(self, text: Input, vectors: EmotionVectors, **kwargs: Any) -> Readout:
        """Per-token and pooled emotion read-out of a text, chat or token ids.

        Options (``layer``, ``mode``, ``window``, ``add_generation_prompt``, ``token_skip``)
        are those of :func:`emolens.readout.read`.
        """
        return read(self, text, vectors, **kwargs)

    def monitor_many(self, texts: Sequence[Input], vectors: EmotionVectors, **kwargs: Any
                     ) -> list[Readout]:
        """:meth:`monitor` for many inputs in batches (see :func:`emolens.readout.read_many`)."""
        return read_many(self, texts, vectors, **kwargs)

    # ---- writing ------------------------------------------------------------------------
    def steer(self, vectors: EmotionVectors | Direction,
              strengths: Mapping[Any, float] | Sequence[Mapping[Any, float]] | float | None = None,
              *, strength: float | None = None, **kwargs: Any
              ) -> AbstractContextManager[Steering]:
        """Context manager adding emotion directions to the residual stream.

        ``lm.steer(vecs["calm"], strength=0.1)`` or ``lm.steer(vecs["calm"], 0.1)`` steers
        with one direction; ``lm.steer(vecs, {"calm": 0.1, "desperate": -0.05})`` with
        several; a list of dicts gives each batch row its own strengths.  Options
        (``layers``, ``positions``, ``robust``, ``scale``) are those of
        :func:`emolens.steer.steering`.
        """
        if strength is not None:
            if strengths is not None:
                raise SteeringError("pass the strength once: positionally or as strength=")
            strengths = strength
        if strengths is None:
            raise SteeringError("steer needs a strength: lm.steer(vecs['calm'], strength=0.1)")
        return steering(self, vectors, strengths, **kwargs)

    # ---- generating ---------------------------------------------------------------------
    def generate(self, prompt: Prompt, **kwargs: Any) -> str:
        """The reply to one prompt (a raw text to continue, or a chat) as a string.

        Options are those of :func:`emolens.decode.generate_text`.
        """
        return generate_text(self, [prompt], **kwargs)[0].text

    def generate_text(self, prompts: Sequence[Prompt], **kwargs: Any) -> list[GeneratedText]:
        """Generate for a batch of prompts in one go; see :func:`emolens.decode.generate_text`."""
        return generate_text(self, prompts, **kwargs)

    def stream(self, prompt: Prompt, *, monitor: EmotionVectors | None = None,
               alerts: Sequence[str | AlertRule | AllOf] = (),
               guard: Mapping[str, float] | Guard | Sequence[Guard] | None = None,
               alert_log: str | Path | None = None,
               on_alert: Callable[[Alert], None] | None = None, watch: Watch | None = None,
               guard_layers: Any = None, **kwargs: Any) -> Iterator[TokenStep]:
        """Yield generated tokens one by one, with scores and alerts when monitored.

        ``alerts`` are rules such as ``"desperate>0.05@4"``; ``guard`` is steering that
        switches on when a rule fires: ``{"calm": 0.2}`` (any rule) or
        :class:`emolens.alerts.Guard` objects with their own rules.  Pass a prebuilt
        ``watch`` (:class:`emolens.alerts.Watch`) to keep alert state across turns.
        Other options are those of :func:`emolens.decode.stream`.
        """
        if watch is None and (alerts or guard is not None):
            if monitor is None:
                raise SteeringError("alert rules and guards need a monitor: pass monitor=vectors")
            watch = Watch(self, monitor, alerts=alerts, guard=guard, log_path=alert_log,
                          on_alert=on_alert, layers=guard_layers)
        if watch is None:
            yield from stream(self, prompt, monitor=monitor, **kwargs)
            return
        watch.reset()
        with watch.installed():
            yield from stream(self, prompt, monitor=monitor, rules=watch.engine, **kwargs)
