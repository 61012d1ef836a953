"""``/v1/chat/completions`` driven by the official ``openai`` package over real HTTP.

A uvicorn server on 127.0.0.1 (a free port) serves a tiny random model; the client is
``openai.OpenAI`` with ``extra_body={"emolens": {...}}``: streaming and not, with and
without steering; the steered reply differs, and per-token scores arrive.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from emolens.server import Limits, create_app  # noqa: E402
from emolens.testing import tiny_lm, tiny_vectors  # noqa: E402

MESSAGES = [{"role": "system", "content": "You are kind."},
            {"role": "user", "content": "The storm took the roof off our house."}]
STEER = {"emolens": {"steer": {"calm": 1.0}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama")


@pytest.fixture(scope="module")
def server(lm):
    vecs = tiny_vectors(lm)
    app = create_app(lm, vecs, limits=Limits(max_new_tokens=200))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < end and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", vecs
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="not-needed", max_retries=0,
                         timeout=60)


def extra(obj):
    """The ``emolens`` extra field of a response or chunk object."""
    return (obj.model_extra or {}).get("emolens")


def test_models(client, lm):
    models = client.models.list()
    assert [m.id for m in models.data] == [lm.name]
    assert models.data[0].owned_by == "emolens"


def test_completion_plain_and_steered(client, lm):
    plain = client.chat.completions.create(model=lm.name, messages=MESSAGES, max_tokens=12,
                                           temperature=0)
    text = plain.choices[0].message.content
    assert plain.object == "chat.completion" and plain.choices[0].message.role == "assistant"
    assert text == lm.generate(MESSAGES, max_new_tokens=12)
    assert plain.usage.completion_tokens == 12 and plain.choices[0].finish_reason == "length"
    assert plain.usage.prompt_tokens == len(lm.encode_input(MESSAGES,
                                                            add_generation_prompt=True).input_ids)
    steered = client.chat.completions.create(model=lm.name, messages=MESSAGES, max_tokens=12,
                                             temperature=0, extra_body=STEER)
    assert steered.choices[0].message.content != text
    assert extra(steered)["steer"] == {"calm": 1.0}
    assert "tokens" not in extra(steered)  # not monitored unless asked


def test_completion_monitored(client, lm, server):
    vecs = server[1]
    r = client.chat.completions.create(
        model="emolens", messages=MESSAGES, max_tokens=6, temperature=0,
        extra_body={"emolens": {"monitor": True, "top": 3, "scores": True,
                                "alerts": ["calm>-1"]}})
    info = extra(r)
    assert len(info["tokens"]) == 6 and len(info["tokens"][0]["top"]) == 3
    assert len(info["tokens"][0]["scores"]) == len(vecs)
    assert info["tokens"][0]["alerts"][0]["rule"] == "calm>-1"
    assert info["alerts"][0]["index"] == 0 and len(info["summary"]) == 3
    want = list(lm.stream(MESSAGES, monitor=vecs, max_new_tokens=6))
    for got, step in zip(info["tokens"], want, strict=True):
        assert got["id"] == step.token_id
        assert got["scores"] == pytest.approx(step.scores.tolist(), abs=1e-5)


def collect(stream):
    pieces, extras, finish, usage = [], [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
        extras.append(extra(chunk))
    return "".join(pieces), extras, finish, usage


def test_stream_plain_and_steered(client, lm):
    text, extras, finish, usage = collect(client.chat.completions.create(
        model=lm.name, messages=MESSAGES, max_tokens=10, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert text == lm.generate(MESSAGES, max_new_tokens=10)
    assert finish == "length" and usage.completion_tokens == 10
    assert all(e is None for e in extras[:-1])  # unmonitored: no per-token extras
    steered, extras, _, _ = collect(client.chat.completions.create(
        model=lm.name, messages=MESSAGES, max_tokens=10, temperature=0, stream=True,
        extra_body=STEER))
    assert steered != text and extras[-1]["steer"] == {"calm": 1.0}


def test_stream_scores_arrive(client, lm, server):
    vecs = server[1]
    _, extras, finish, _ = collect(client.chat.completions.create(
        model=lm.name, messages=MESSAGES, max_tokens=8, temperature=0.8, seed=5, stream=True,
        extra_body={"emolens": {"monitor": True, "scores": True, "steer": {"sad": 0.4},
                                "alerts": ["sad>-1@3"]}}))
    per_token = [e for e in extras[:-1] if e is not None]  # the first chunk has none
    assert len(per_token) == 8 and finish == "length"
    assert all(len(e["scores"]) == len(vecs) and len(e["top"]) == 5 for e in per_token)
    assert [e["index"] for e in per_token] == list(range(8))
    assert per_token[2]["alerts"][0]["rule"] == "sad>-1@3"  # a 3-token window
    final = extras[-1]
    assert final["summary"] and final["alerts"][0]["index"] == 2
    with lm.steer(vecs, {"sad": 0.4}):
        want = list(lm.stream(MESSAGES, monitor=vecs, max_new_tokens=8, temperature=0.8,
                              seed=5))
    assert [e["id"] for e in per_token] == [s.token_id for s in want]
    for got, step in zip(per_token, want, strict=True):
        assert got["scores"] == pytest.approx(step.scores.tolist(), abs=1e-5)


def test_errors_reach_the_client(client, lm):
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="unknown emotion 'glee'"):
        client.chat.completions.create(model=lm.name, messages=MESSAGES,
                                       extra_body={"emolens": {"steer": {"glee": 0.1}}})
    with pytest.raises(openai.BadRequestError, match="over this server's limit of 200"):
        client.chat.completions.create(model=lm.name, messages=MESSAGES, max_tokens=5000)
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.chat.completions.create(model=lm.name, messages=MESSAGES, n=2)
    with pytest.raises(openai.BadRequestError, match="cannot read alert rule"):
        client.chat.completions.create(model=lm.name, messages=MESSAGES, stream=True,
                                       extra_body={"emolens": {"alerts": ["calm="]}})
    ok = client.chat.completions.create(model=lm.name, messages=MESSAGES, max_tokens=2)
    assert ok.usage.completion_tokens == 2


def test_client_closing_a_stream_stops_generation(client, lm, server):
    stream = client.chat.completions.create(model=lm.name, messages=MESSAGES, max_tokens=200,
                                            temperature=0, stream=True)
    for i, _chunk in enumerate(stream):
        if i == 2:
            break
    stream.close()
    end = time.monotonic() + 20
    while True:
        with urllib.request.urlopen(server[0] + "/api/health", timeout=10) as resp:
            health = json.load(resp)
        if not health["busy"] or time.monotonic() > end:
            break
        time.sleep(0.05)
    assert health["last_job"]["cancelled"] is True
    assert health["last_job"]["items"] < 150
