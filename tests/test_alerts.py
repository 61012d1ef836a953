"""Alert rules on constructed signals, their log, and the guard wiring (Watch)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emolens.alerts import AlertEngine, AlertRule, AllOf, parse_rule
from emolens.errors import SteeringError


# ---- alert rules on constructed signals ----------------------------------------------------
def _feed(engine: AlertEngine, columns: dict[str, list[float]]) -> list[tuple[int, str]]:
    n = len(next(iter(columns.values())))
    fired = []
    for t in range(n):
        scores = np.array([columns.get(e, [0.0] * n)[t] for e in engine.emotions])
        fired += [(a.token_index, a.rule) for a in engine.update(scores, t, f"tok{t}")]
    return fired


def test_alert_fires_exactly_where_the_signal_crosses():
    signal = [0.0, 0.01, 0.02, 0.049, 0.051, 0.08, 0.03, 0.06, 0.06]
    eng = AlertEngine(["calm", "desperate"], [AlertRule("desperate", 0.05)])
    # token 4 crosses; rising edge: 5 stays high (no new alert); 6 falls; 7 crosses again
    assert _feed(eng, {"desperate": signal}) == [(4, "desperate>0.05"), (7, "desperate>0.05")]
    assert eng.fired[0].value == pytest.approx(0.051) and eng.fired[0].token == "tok4"
    assert eng.fired[0].emotion == "desperate"


def test_windowed_rule_fires_when_the_window_mean_crosses():
    # means over 3: t2=0.1/3, t3=0.3/3=0.1, t4=0.5/3 (first > 0.15), t5=0.6/3
    signal = [0.0, 0.0, 0.1, 0.2, 0.2, 0.2, 0.0, 0.0, 0.0]
    eng = AlertEngine(["sad"], [AlertRule("sad", 0.15, window=3)])
    assert _feed(eng, {"sad": signal}) == [(4, "sad>0.15@3")]
    assert eng.fired[0].value == pytest.approx(0.5 / 3)
    # a full window is needed: one huge first token does not fire a window-3 rule early
    eng2 = AlertEngine(["sad"], [AlertRule("sad", 0.15, window=3)])
    assert _feed(eng2, {"sad": [1.0, 0.0, 0.0, 0.0]}) == [(2, "sad>0.15@3")]


def test_below_rules_allof_and_parse():
    calm = [0.2, 0.1, -0.1, -0.2, -0.2, 0.1]
    desp = [0.0, 0.1, 0.0, 0.1, 0.2, 0.2]
    both = AllOf([AlertRule("calm", 0.0, below=True), AlertRule("desperate", 0.05)])
    eng = AlertEngine(["calm", "desperate"], [both, AlertRule("calm", 0.0, below=True)])
    got = _feed(eng, {"calm": calm, "desperate": desp})
    # calm<0 from t2; both hold first at t3 (desperate 0.1), still at t4; calm back up at t5
    assert got == [(2, "calm<0"), (3, "calm<0 & desperate>0.05")]
    rule = parse_rule("desperate>0.05@4 & at ease<-0.1")
    assert isinstance(rule, AllOf) and rule.rules[1] == AlertRule("at ease", -0.1, 1, True,
                                                                  "at ease<-0.1")
    assert AlertRule.parse("calm<0.2@3").below and AlertRule.parse("calm<0.2@3").window == 3
    for bad in ("calm", "calm>x", "calm>0.1@0", "calm>0.1@y", " & "):
        with pytest.raises(SteeringError):
            parse_rule(bad)
    with pytest.raises(SteeringError, match="unknown emotion"):
        AlertEngine(["calm"], ["sadd>0.1"])


def test_shared_rule_object_is_fed_once_per_token():
    shared = AlertRule("sad", 0.15, window=2)
    eng = AlertEngine(["sad"], [shared, AllOf([shared])])
    # if the shared window were fed twice per token, t1 would already average 0.2
    assert [t for t, _ in _feed(eng, {"sad": [0.0, 0.2, 0.2]})] == [2, 2]


def test_alert_callback_and_jsonl_log_is_appended(tmp_path):
    log = tmp_path / "alerts.jsonl"
    log.write_text('{"rule": "earlier run"}\n')
    seen = []
    eng = AlertEngine(["calm", "sad"], ["sad>0.5"], callback=seen.append, log_path=log)
    _feed(eng, {"sad": [0.0, 0.9, 0.0, 0.7]})
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert lines[0] == {"rule": "earlier run"}
    assert [(x["rule"], x["token_index"], x["token"]) for x in lines[1:]] == [
        ("sad>0.5", 1, "tok1"), ("sad>0.5", 3, "tok3")]
    assert [a.token_index for a in seen] == [1, 3]
    eng.reset()  # a new turn: windows and edges forgotten, history kept
    assert [t for t, _ in _feed(eng, {"sad": [0.9]})] == [0] and len(eng.fired) == 3


