"""What the server asks of the model: the library's read path, steering and streaming.

Two halves.  :func:`plan_generation` runs on the request's side and only checks and
compiles (unknown emotions, bad rules, bad layers fail here, before any stream starts);
:func:`run_generation` and :func:`run_probe` run on the model thread and call the same
library functions as the CLI (``lm.monitor``, ``lm.stream`` with a
:class:`emolens.alerts.Watch`, compiled steering), so the page, the API and the terminal
report the same numbers.

>>> plan = plan_generation(lm, vecs, prompt=[{"role": "user", "content": "Hi"}],
...                        steer={"calm": 0.2}, alerts=["desperate>-1"], max_new_tokens=3)
>>> events = list(run_generation(lm, vecs, plan))
>>> [e["event"] for e in events][:2], events[-1]["event"], events[2]["data"]["alerts"][0]["rule"]
(['start', 'prompt'], 'done', 'desperate>-1')
>>> run_probe(lm, vecs, ["I lost my keys."], top=2)[0]["summary"][0].keys()
dict_keys(['emotion', 'score'])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.alerts import Guard, Watch
from emolens.errors import EmolensError
from emolens.steer import Steering, apply_steering, build_steering

if TYPE_CHECKING:  # pragma: no cover
    from emolens.decode import Prompt
    from emolens.lens import LanguageModel
    from emolens.model import Input
    from emolens.vectors import EmotionVectors

__all__ = ["GenerationPlan", "plan_generation", "ranked", "read_options", "run_generation",
           "run_probe"]

DIGITS = 5  # scores are sent rounded to this many decimals


def ranked(emotions: Sequence[str], values: np.ndarray, top: int) -> list[dict[str, Any]]:
    """The ``top`` highest entries as ``[{"emotion", "score"}, ...]``.

    >>> ranked(("calm", "sad"), np.array([0.1, 0.3]), 1)
    [{'emotion': 'sad', 'score': 0.3}]
    """
    order = np.argsort(-values, kind="stable")[:top]
    return [{"emotion": emotions[i], "score": round(float(values[i]), DIGITS)} for i in order]


def read_options(layer: Any, mode: str | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A request's read-out ``layer`` and ``mode``, or the server's defaults where unset.

    >>> read_options(None, None, {"layer": [2], "mode": "cosine"})
    {'layer': [2], 'mode': 'cosine'}
    >>> read_options("3", "projection", {"layer": None, "mode": "cosine"})
    {'layer': '3', 'mode': 'projection'}
    """
    return {"layer": defaults.get("layer") if layer in (None, "") else layer,
            "mode": mode or defaults.get("mode", "auto")}


def _scores(values: np.ndarray) -> list[Any]:
    return np.round(np.asarray(values, dtype=np.float64), DIGITS).tolist()


@dataclass
class GenerationPlan:
    """One checked, compiled generation request (built by :func:`plan_generation`)."""

    prompt: Prompt
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    monitor: bool = True
    steering: Steering | None = None
    steer: dict[str, float] = field(default_factory=dict)
    watch: Watch | None = None
    layer: Any = None
    mode: str = "auto"
    top: int = 5
    full_scores: bool = True
    read_prompt: bool = True


def plan_generation(lm: LanguageModel, vecs: EmotionVectors, *, prompt: Prompt,
                    steer: Mapping[str, float] | None = None, steer_layers: Any = None,
                    positions: str = "all", alerts: Sequence[str] = (),
                    guards: Sequence[tuple[str, Mapping[str, float]]] = (),
                    monitor: bool = True, **options: Any) -> GenerationPlan:
    """Check and compile a generation request; raises :class:`EmolensError` on bad input.

    ``guards`` are ``(rule, {emotion: strength})`` pairs: steering on generated tokens
    that switches on when the rule fires.  Other options are :class:`GenerationPlan`'s.

    >>> plan_generation(lm, vecs, prompt="Hi", steer={"glee": 0.1})
    Traceback (most recent call last):
    emolens.errors.SteeringError: unknown emotion 'glee' (6 in this file)
    """
    strengths = {str(k): float(v) for k, v in (steer or {}).items()}
    steering = None
    layers = None if steer_layers in (None, "") else steer_layers
    if strengths:
        steering = build_steering(lm, vecs, strengths, layers=layers, positions=positions)
    watch = None
    if alerts or guards:
        watch = Watch(lm, vecs, alerts=list(alerts),
                      guard=[Guard(rule, dict(s)) for rule, s in guards] or None,
                      layers=layers)
    if options.get("layer") not in (None, ""):
        from emolens.readout import read_layers

        read_layers(lm, vecs, options["layer"])  # a bad read-out layer fails here
    else:
        options["layer"] = None
    return GenerationPlan(prompt=prompt, steering=steering, steer=strengths, watch=watch,
                          monitor=monitor or watch is not None, **options)


def _alert_json(alert: Any) -> dict[str, Any]:
    return {"rule": alert.rule, "index": alert.token_index, "token": alert.token,
            "emotion": alert.emotion, "value": round(float(alert.value), DIGITS)}


def run_generation(lm: LanguageModel, vecs: EmotionVectors, plan: GenerationPlan
                   ) -> Iterator[dict[str, Any]]:
    """Events of one generation: ``start`` (the prompt passed the context check),
    ``prompt`` (its read-out), one ``token`` each, ``done``.

    Runs on the model thread.  Static steering is installed first, so the prompt's
    read-out and every token's scores are those of the steered model; guards switch on
    when their rule fires (the library's :class:`emolens.alerts.Watch`).
    """
    emotions = vecs.emotions
    is_chat = not isinstance(plan.prompt, str)
    # before anything is sent: a prompt that leaves no room for the reply in the model's
    # context fails here, so the server can still answer 400 instead of an error event
    prompt_len = len(lm.encode_input(plan.prompt, add_generation_prompt=is_chat,
                                     room=plan.max_new_tokens).input_ids)
    yield {"event": "start", "data": {"prompt_tokens": prompt_len}}
    with ExitStack() as stack:
        if plan.steering is not None:
            stack.enter_context(apply_steering(lm, plan.steering))
        prompt_tokens = None
        if plan.monitor and plan.read_prompt:
            read = lm.monitor(plan.prompt, vecs, layer=plan.layer, mode=plan.mode,
                              add_generation_prompt=is_chat)
            prompt_tokens = len(read.tokens)
            data: dict[str, Any] = {
                "tokens": read.tokens, "assistant_start": read.assistant_start,
                "layers": read.layers, "mode": read.mode,
                "top": [ranked(emotions, s, plan.top) for s in read.scores]}
            if plan.full_scores:
                data["scores"] = _scores(read.scores)
            if is_chat:
                spans = lm.encode_chat(list(plan.prompt), add_generation_prompt=True)
                data["message_tokens"] = [list(s) for s in spans.message_tokens]
            yield {"event": "prompt", "data": data}
        steps: list[Any] = []
        for step in lm.stream(plan.prompt, monitor=vecs if plan.monitor else None,
                              watch=plan.watch, max_new_tokens=plan.max_new_tokens,
                              temperature=plan.temperature, top_p=plan.top_p, seed=plan.seed,
                              layer=plan.layer, mode=plan.mode):
            steps.append(step)
            token: dict[str, Any] = {"index": step.index, "id": step.token_id,
                                     "token": step.text,
                                     "alerts": [_alert_json(a) for a in step.alerts or []]}
            if step.scores is not None:
                token["top"] = ranked(emotions, step.scores, plan.top)
                if plan.full_scores:
                    token["scores"] = _scores(step.scores)
            yield {"event": "token", "data": token}
    if prompt_tokens is None:
        prompt_tokens = prompt_len
    ids = [s.token_id for s in steps]
    done: dict[str, Any] = {
        "text": lm.tokenizer.decode(ids, skip_special_tokens=True), "n_tokens": len(steps),
        "finished": len(steps) < plan.max_new_tokens, "prompt_tokens": prompt_tokens,
        "steer": plan.steer, "alerts": [], "guards": []}
    if plan.monitor and steps:
        mean = np.stack([s.scores for s in steps]).mean(0)
        done["summary"] = ranked(emotions, mean, plan.top)
    elif plan.monitor:
        done["summary"] = []
    if plan.watch is not None:
        done["alerts"] = [_alert_json(a) for a in plan.watch.fired]
        done["guards"] = plan.watch.guard_report()
    yield {"event": "done", "data": done}


def run_probe(lm: LanguageModel, vecs: EmotionVectors, items: Sequence[Input], *,
              at: str | int | None = None, top: int = 10, layer: Any = None,
              mode: str = "auto", full_scores: bool = False) -> list[dict[str, Any]]:
    """The read-out of each text or chat: per-token top emotions and the ranked summary.

    ``at=None`` ranks the pooled read-out (what ``emolens probe`` prints and validation
    scores); ``"assistant_start"`` or a token index ranks that token's scores.  A chat
    that does not end with the assistant gets the generation prompt, so
    ``assistant_start`` is the token that plans the reply.
    """
    out = []
    # chats waiting for a reply get the generation prompt; one batched pass per kind
    wants = [not isinstance(x, str) and list(x)[-1].get("role") != "assistant"  # type: ignore[union-attr]
             for x in items]
    reads: list[Any] = [None] * len(items)
    for flag in (False, True):
        idx = [i for i, w in enumerate(wants) if w == flag]
        if idx:
            got = lm.monitor_many([items[i] for i in idx], vecs, layer=layer, mode=mode,
                                  add_generation_prompt=flag)
            for i, r in zip(idx, got, strict=True):
                reads[i] = r
    for r in reads:
        pos: int | None
        if at in (None, "pooled"):
            pos = None
        elif at == "assistant_start":
            if r.assistant_start is None:
                raise EmolensError("at='assistant_start' needs a chat (messages); a plain text "
                                   "has no assistant turn")
            pos = r.assistant_start
        else:
            pos = int(at)  # type: ignore[arg-type]
            if not -len(r.tokens) <= pos < len(r.tokens):
                raise EmolensError(f"at={at} is outside the text's {len(r.tokens)} tokens")
            pos %= len(r.tokens)
        data = r.to_json(top, at=pos)
        data["text"] = r.text
        if full_scores:
            data["scores"] = _scores(r.scores)
        out.append(data)
    return out
