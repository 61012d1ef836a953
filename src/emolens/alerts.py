"""Alert rules on the read-out, and the guards they switch on.

A rule fires when an emotion's windowed mean score crosses a threshold (rising edge);
:class:`AllOf` ANDs rules.  :class:`Watch` is the wiring every front end uses (the
library's ``lm.stream``, the CLI, the web app): alert rules, an append-only log, a
callback, and guards — steering that stays off until its rule fires.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens.errors import SteeringError
from emolens.fileio import append_lines
from emolens.steer import Guardrail, apply_steering, build_steering

if TYPE_CHECKING:  # pragma: no cover
    from emolens.model import ModelAdapter
    from emolens.vectors import EmotionVectors

__all__ = ["Alert", "AlertEngine", "AlertRule", "AllOf", "Guard", "Watch", "parse_guard",
           "parse_rule"]


# ---- alert rules ---------------------------------------------------------------------------
@dataclass
class AlertRule:
    """Fire when the mean score of ``emotion`` over the last ``window`` tokens exceeds
    ``threshold`` (or falls below it with ``below=True``).

    >>> AlertRule.parse("desperate>0.05@8")
    AlertRule(emotion='desperate', threshold=0.05, window=8, below=False, name='desperate>0.05@8')
    """

    emotion: str
    threshold: float
    window: int = 1
    below: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        if self.window < 1:
            raise SteeringError(f"alert window must be >= 1, got {self.window}")
        if not math.isfinite(self.threshold):
            raise SteeringError(f"alert threshold must be a finite number, got {self.threshold}")
        if not self.name:
            op = "<" if self.below else ">"
            suffix = f"@{self.window}" if self.window > 1 else ""
            self.name = f"{self.emotion}{op}{self.threshold:g}{suffix}"

    @classmethod
    def parse(cls, spec: str) -> AlertRule:
        """``EMOTION>THRESHOLD[@WINDOW]`` or ``EMOTION<THRESHOLD[@WINDOW]``."""
        body, _, win = spec.strip().partition("@")
        op = ">" if ">" in body else "<" if "<" in body else None
        if op is None:
            raise SteeringError(f"cannot read alert rule {spec!r}; write e.g. desperate>0.05@8")
        emotion, _, thr = body.partition(op)
        try:
            return cls(emotion.strip(), float(thr), int(win) if win else 1, op == "<",
                       spec.strip())
        except ValueError:
            raise SteeringError(f"cannot read alert rule {spec!r}; write e.g. "
                                "desperate>0.05@8") from None


@dataclass
class AllOf:
    """Fires when every rule in it holds at the same token (an AND of rules)."""

    rules: list[AlertRule]
    name: str = ""

    def __post_init__(self) -> None:
        if not self.rules:
            raise SteeringError("AllOf needs at least one rule")
        self.name = self.name or " & ".join(r.name for r in self.rules)


def parse_rule(spec: str) -> AlertRule | AllOf:
    """A rule from text; ``&`` joins rules that must hold together.

    >>> parse_rule("desperate>0.05@4 & calm<0").name
    'desperate>0.05@4 & calm<0'
    """
    parts = [p.strip() for p in spec.split("&") if p.strip()]
    if not parts:
        raise SteeringError(f"empty alert rule {spec!r}")
    if len(parts) == 1:
        return AlertRule.parse(parts[0])
    return AllOf([AlertRule.parse(p) for p in parts])


@dataclass
class Alert:
    """One rule firing: on which generated token, and the windowed mean that crossed."""

    rule: str
    token_index: int
    token: str
    value: float
    emotion: str = ""
    time: float = 0.0


@dataclass
class AlertEngine:
    """Evaluate rules on each new token's scores; call ``callback`` and append to a JSONL log.

    A rule fires on the token where its condition becomes true (rising edge), and can
    fire again only after it has been false.  A windowed rule needs ``window`` tokens
    before it can hold.

    >>> eng = AlertEngine(["calm", "sad"], [AlertRule("sad", 0.5, window=2)])
    >>> [len(eng.update(np.array([0.0, s]), i)) for i, s in enumerate([0.9, 0.0, 0.9, 0.9])]
    [0, 0, 0, 1]
    """

    emotions: Sequence[str]
    rules: list[AlertRule | AllOf]
    callback: Callable[[Alert], None] | None = None
    log_path: str | Path | None = None
    fired: list[Alert] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rules = [parse_rule(r) if isinstance(r, str) else r for r in self.rules]
        index = {e: i for i, e in enumerate(self.emotions)}
        for rule in self._leaves():
            if rule.emotion not in index:
                raise SteeringError(f"alert rule {rule.name!r}: unknown emotion {rule.emotion!r}")
        self._index = index
        self.reset()

    def reset(self) -> None:
        """Forget windows and rising-edge state (e.g. between chat turns); keep ``fired``."""
        # keyed by object identity: the same rule object inside two AllOfs is fed once
        self._history: dict[int, deque[float]] = {}
        self._active: dict[int, bool] = {}

    def _leaves(self) -> Iterator[AlertRule]:
        seen: set[int] = set()
        for r in self.rules:
            for leaf in (r.rules if isinstance(r, AllOf) else [r]):
                if id(leaf) not in seen:
                    seen.add(id(leaf))
                    yield leaf

    def _holds(self, rule: AlertRule, scores: np.ndarray) -> tuple[bool, float]:
        hist = self._history.setdefault(id(rule), deque(maxlen=rule.window))
        hist.append(float(scores[self._index[rule.emotion]]))
        mean = sum(hist) / len(hist)
        if len(hist) < rule.window:
            return False, mean
        return (mean < rule.threshold if rule.below else mean > rule.threshold), mean

    def update(self, scores: np.ndarray | torch.Tensor, token_index: int,
               token: str = "") -> list[Alert]:
        """Feed one token's scores [E]; return the alerts that fired on it."""
        if isinstance(scores, torch.Tensor):
            scores = scores.detach().float().cpu().numpy()
        leaf = {id(r): self._holds(r, scores) for r in self._leaves()}
        out = []
        for rule in self.rules:
            parts = rule.rules if isinstance(rule, AllOf) else [rule]
            holds = all(leaf[id(p)][0] for p in parts)
            if holds and not self._active.get(id(rule), False):
                alert = Alert(rule.name, int(token_index), token, leaf[id(parts[0])][1],
                              parts[0].emotion, time.time())
                out.append(alert)
                self._emit(alert)
            self._active[id(rule)] = holds
        return out

    def _emit(self, alert: Alert) -> None:
        self.fired.append(alert)
        if self.log_path is not None:
            # append-only: a crash loses at most the line being written
            append_lines(self.log_path, [json.dumps(asdict(alert), ensure_ascii=False)])
        if self.callback is not None:
            self.callback(alert)


# ---- guards ---------------------------------------------------------------------------------
@dataclass
class Guard:
    """Conditional steering: when ``rule`` fires, steer with ``strengths`` from then on.

    ``rule`` None means "when any alert rule of the :class:`Watch` fires".

    >>> Guard("desperate>0.05@4", {"calm": 0.2}).rule
    'desperate>0.05@4'
    """

    rule: str | AlertRule | AllOf | None
    strengths: Mapping[str, float]
    positions: Any = "generated"


def parse_guard(spec: str) -> Guard:
    """``"desperate>0.05@4:calm=0.2,desperate=-0.1"`` -> a :class:`Guard`.

    >>> g = parse_guard("desperate>0.05@4:calm=0.2,desperate=-0.1")
    >>> g.rule, dict(g.strengths)
    ('desperate>0.05@4', {'calm': 0.2, 'desperate': -0.1})
    """
    from emolens.steer import parse_strengths

    rule, sep, steer = spec.partition(":")
    if not sep or not rule.strip() or not steer.strip():
        raise SteeringError(f"cannot read guard {spec!r}; write RULE:NAME=STRENGTH, e.g. "
                            "'desperate>0.05@4:calm=0.2'")
    parse_rule(rule)  # fail early on a bad rule
    return Guard(rule.strip(), parse_strengths([s for s in steer.split(",") if s.strip()]))


class Watch:
    """Alert rules, their log and callback, and the guards they switch on, for one model.

    Built once and reused for every generation of a conversation: :meth:`reset` before
    each one, :meth:`installed` around it, :attr:`engine` fed each token's scores.

    >>> w = Watch(lm, vecs, alerts=["desperate>0.05@2"], guard={"calm": 0.2})
    >>> w.guard_report(), w.engine.rules[0].name
    ([{'rule': 'desperate>0.05@2', 'triggered_at': None}], 'desperate>0.05@2')
    """

    def __init__(self, lm: ModelAdapter, vectors: EmotionVectors, *,
                 alerts: Sequence[str | AlertRule | AllOf] = (),
                 guard: Mapping[str, float] | Guard | Sequence[Guard] | None = None,
                 log_path: str | Path | None = None, on_alert: Callable[[Alert], None] | None
                 = None, layers: Any = None) -> None:
        rules: list[AlertRule | AllOf] = [parse_rule(r) if isinstance(r, str) else r
                                          for r in alerts]
        if guard is None:
            guards: list[Guard] = []
        elif isinstance(guard, Guard):
            guards = [guard]
        elif isinstance(guard, Mapping):
            if not rules:
                raise SteeringError("a guard without its own rule needs alert rules to fire it")
            guards = [Guard(None, dict(guard))]
        else:
            guards = list(guard)
        self.guards: list[tuple[Guard, Guardrail, set[str]]] = []
        for g in guards:
            if g.rule is None:
                names = {r.name for r in rules}
            else:
                rule = parse_rule(g.rule) if isinstance(g.rule, str) else g.rule
                if rule.name not in {r.name for r in rules}:
                    rules.append(rule)
                names = {rule.name}
                g = Guard(rule.name, g.strengths, g.positions)
            plan = build_steering(lm, vectors, dict(g.strengths), layers=layers,
                                  positions=g.positions)
            self.guards.append((g, Guardrail(plan), names))
        self.lm = lm
        self._on_alert = on_alert
        self.engine = AlertEngine(vectors.emotions, rules, callback=self._fire,
                                  log_path=log_path) if rules else None

    def _fire(self, alert: Alert) -> None:
        for _g, guardrail, names in self.guards:
            if alert.rule in names:
                guardrail.on_alert(alert)
        if self._on_alert is not None:
            self._on_alert(alert)

    @property
    def fired(self) -> list[Alert]:
        """Every alert fired so far (across :meth:`reset`)."""
        return self.engine.fired if self.engine is not None else []

    def reset(self) -> None:
        """Before a new generation: guards off, alert windows forgotten."""
        for _g, guardrail, _n in self.guards:
            guardrail.reset()
        if self.engine is not None:
            self.engine.reset()

    @contextmanager
    def installed(self) -> Iterator[Watch]:
        """Install every guard's steering (switched off until its rule fires)."""
        with ExitStack() as stack:
            for _g, guardrail, _n in self.guards:
                stack.enter_context(apply_steering(self.lm, guardrail.steering))
            yield self

    def guard_report(self) -> list[dict[str, Any]]:
        """Per guard: its rule and the generated token where it switched on (or None)."""
        return [{"rule": g.rule or " | ".join(sorted(n)), "triggered_at": gr.triggered_at}
                for g, gr, n in self.guards]
