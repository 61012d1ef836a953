"""The web app's API on a tiny random model, through FastAPI's TestClient.

Every endpoint; bad input gets one clear 4xx message and the server keeps serving;
streamed scores equal ``lm.stream`` for the same seed; a client that goes away stops its
generation; a busy model answers 503 with Retry-After; no request reaches files outside
the server's own folders.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx2", reason="starlette's TestClient needs httpx2")

from fastapi.testclient import TestClient  # noqa: E402

from emolens.alerts import Guard  # noqa: E402
from emolens.server import Limits, create_app  # noqa: E402
from emolens.testing import tiny_lm, tiny_vectors  # noqa: E402

CHAT = [{"role": "user", "content": "The storm took the roof off our house."}]


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama")


@pytest.fixture(scope="module")
def vecs(lm):
    return tiny_vectors(lm)


@pytest.fixture(scope="module")
def client(lm, vecs):
    with TestClient(create_app(lm, vecs, limits=Limits(max_new_tokens=300))) as c:
        yield c


def parse_sse(lines):
    """[(event, data)] from the lines of an event stream."""
    out, name = [], None
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            out.append((name, json.loads(line[5:])))
    return out


def generate(client, **body):
    with client.stream("POST", "/api/generate", json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return parse_sse(r.iter_lines())


def wait_idle(client, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        health = client.get("/api/health").json()
        if not health["busy"] and health["queued"] == 0:
            return health
        time.sleep(0.02)
    raise AssertionError(f"the model stayed busy: {health}")


# ---- the plain endpoints -------------------------------------------------------------------
def test_health_info_emotions(client, lm, vecs):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["busy"] is False
    info = client.get("/api/info").json()
    assert info["model"]["name"] == lm.name and info["n_layers"] == lm.n_layers
    assert info["vectors"]["n_emotions"] == len(vecs)
    assert info["read_out_layers"] == [vecs.default_layer]
    assert info["limits"]["max_new_tokens"] == 300 and info["report"] is None
    assert client.get("/api/emotions").json() == {"emotions": list(vecs.emotions),
                                                  "count": len(vecs)}


def test_page_loads_only_from_the_app(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js">' in page.text
    for asset, kind in [("/static/app.js", "javascript"), ("/static/style.css", "text/css")]:
        r = client.get(asset)
        assert r.status_code == 200 and kind in r.headers["content-type"]
    # nothing the page loads comes from elsewhere (no CDN): every src/href is local
    import re

    for url in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert url.startswith(("/", "data:")), url
    css = client.get("/static/style.css").text
    assert "@import" not in css and "http" not in css
    assert "fetch(\"http" not in client.get("/static/app.js").text


def test_openapi_documents_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ["/api/health", "/api/info", "/api/emotions", "/api/probe", "/api/probe/batch",
                 "/api/generate", "/v1/models", "/v1/chat/completions"]:
        assert path in paths


# ---- probe: the library's one read path --------------------------------------------------------
def test_probe_text_equals_monitor(client, lm, vecs):
    text = "I waited by the phone all night and nobody called."
    r = client.post("/api/probe", json={"text": text, "top": 3, "scores": True})
    assert r.status_code == 200
    body = r.json()
    want = lm.monitor(text, vecs)
    assert [t["token"] for t in body["tokens"]] == want.tokens
    assert [s["emotion"] for s in body["summary"]] == [e for e, _ in want.summary(3)]
    np.testing.assert_allclose([s["score"] for s in body["summary"]],
                               [v for _, v in want.summary(3)], atol=1e-5)
    np.testing.assert_allclose(body["scores"], want.scores, atol=1e-5)
    assert body["summary_at"] == "pooled" and body["text"] == want.text


def test_probe_chat_at_assistant_start(client, lm, vecs):
    r = client.post("/api/probe", json={"messages": CHAT, "at": "assistant_start", "top": 6})
    body = r.json()
    want = lm.monitor(CHAT, vecs, add_generation_prompt=True)
    assert body["assistant_start"] == want.assistant_start is not None
    assert body["summary_at"] == want.assistant_start
    assert [s["emotion"] for s in body["summary"]] == \
        [e for e, _ in want.ranked_at(want.assistant_start, 6)]


def test_probe_batch(client, lm, vecs):
    items = [{"text": "A quiet morning."}, {"messages": CHAT}]
    r = client.post("/api/probe/batch", json={"items": items, "top": 2})
    results = r.json()["results"]
    assert len(results) == 2 and all(len(x["summary"]) == 2 for x in results)
    assert results[1]["assistant_start"] is not None  # the chat got its generation prompt
    one = client.post("/api/probe", json={"text": "A quiet morning.", "top": 2}).json()
    assert one["summary"] == results[0]["summary"]


# ---- generate: SSE on the library's stream -----------------------------------------------------
def test_streamed_scores_equal_lm_stream(client, lm, vecs):
    events = generate(client, messages=CHAT, max_new_tokens=12, temperature=0.9, seed=7)
    names = [e for e, _ in events]
    assert names[0] == "prompt" and names[-1] == "done" and set(names[1:-1]) == {"token"}
    tokens = [d for e, d in events if e == "token"]
    want = list(lm.stream(CHAT, monitor=vecs, max_new_tokens=12, temperature=0.9, seed=7))
    assert [t["id"] for t in tokens] == [s.token_id for s in want]
    assert [t["token"] for t in tokens] == [s.text for s in want]
    np.testing.assert_allclose([t["scores"] for t in tokens], [s.scores for s in want],
                               atol=1e-5)
    done = events[-1][1]
    assert done["text"] == lm.tokenizer.decode([s.token_id for s in want],
                                               skip_special_tokens=True)
    assert done["n_tokens"] == len(want) and done["prompt_tokens"] == len(events[0][1]["tokens"])
    mean = np.mean([s.scores for s in want], axis=0)
    assert done["summary"][0]["emotion"] == vecs.emotions[int(mean.argmax())]
    prompt = events[0][1]
    read = lm.monitor(CHAT, vecs, add_generation_prompt=True)
    assert prompt["tokens"] == read.tokens and prompt["assistant_start"] == read.assistant_start
    np.testing.assert_allclose(prompt["scores"], read.scores, atol=1e-5)


def test_steered_stream_equals_library_steering(client, lm, vecs):
    steer = {"calm": 0.8, "sad": -0.3}
    events = generate(client, messages=CHAT, max_new_tokens=10, steer=steer,
                      positions="generated", steer_layers="1-2")
    tokens = [d for e, d in events if e == "token"]
    with lm.steer(vecs, steer, positions="generated", layers="1-2"):
        want = list(lm.stream(CHAT, monitor=vecs, max_new_tokens=10))
    assert [t["id"] for t in tokens] == [s.token_id for s in want]
    np.testing.assert_allclose([t["scores"] for t in tokens], [s.scores for s in want],
                               atol=1e-5)
    plain = generate(client, messages=CHAT, max_new_tokens=10)
    assert [d["id"] for e, d in plain if e == "token"] != [t["id"] for t in tokens]
    assert events[-1][1]["steer"] == steer


def test_alerts_and_guards(client, lm, vecs):
    events = generate(client, prompt="Once upon a time", max_new_tokens=8,
                      alerts=["calm>-1"], guards=[{"rule": "sad>-1@2", "steer": {"calm": 0.5}}],
                      top=2, scores=False)
    tokens = [d for e, d in events if e == "token"]
    assert events[0][0] == "prompt" and "scores" not in tokens[0]
    assert len(tokens[0]["top"]) == 2
    assert [a["rule"] for a in tokens[0]["alerts"]] == ["calm>-1"]
    assert [a["rule"] for a in tokens[1]["alerts"]] == ["sad>-1@2"]  # needs 2 tokens
    done = events[-1][1]
    assert {a["rule"] for a in done["alerts"]} == {"calm>-1", "sad>-1@2"}
    assert done["guards"] == [{"rule": "sad>-1@2", "triggered_at": 1}]
    want = lm.generate("Once upon a time", max_new_tokens=8)
    guarded = list(lm.stream("Once upon a time", monitor=vecs, alerts=["calm>-1"],
                             guard=[Guard("sad>-1@2", {"calm": 0.5})], max_new_tokens=8))
    assert [t["id"] for t in tokens] == [s.token_id for s in guarded]
    assert done["text"] != want  # the guard changed the reply


def test_generate_without_monitor(client, lm):
    events = generate(client, prompt="Once upon a time", max_new_tokens=5, monitor=False)
    assert [e for e, _ in events] == ["token"] * 5 + ["done"]
    assert "top" not in events[0][1] and "summary" not in events[-1][1]
    assert events[-1][1]["text"] == lm.generate("Once upon a time", max_new_tokens=5)
    events = generate(client, messages=CHAT, max_new_tokens=3, read_prompt=False)
    assert [e for e, _ in events] == ["token"] * 3 + ["done"]  # scores, but no prompt event
    assert "scores" in events[0][1]
    assert events[-1][1]["prompt_tokens"] == len(lm.encode_input(
        CHAT, add_generation_prompt=True).input_ids)


# ---- bad input: one clear 4xx, and the server keeps serving --------------------------------------
BAD = [
    ("unknown emotion", "/api/generate", {"prompt": "Hi", "steer": {"glee": 0.1}}, 400,
     "unknown emotion 'glee'"),
    ("unknown emotion in a rule", "/api/generate", {"prompt": "Hi", "alerts": ["glee>0.1"]}, 400,
     "unknown emotion 'glee'"),
    ("bad rule", "/api/generate", {"prompt": "Hi", "alerts": ["calm>>1"]}, 400,
     "cannot read alert rule"),
    ("bad guard", "/api/generate",
     {"prompt": "Hi", "guards": [{"rule": "calm@", "steer": {"calm": 0.1}}]}, 400,
     "cannot read alert rule"),
    ("strength too big", "/api/generate", {"prompt": "Hi", "steer": {"calm": 50}}, 400,
     "within ±10"),
    ("bad layer", "/api/generate", {"prompt": "Hi", "steer": {"calm": 0.1}, "steer_layers": 9},
     400, "out of range"),
    ("bad read-out layer", "/api/probe", {"text": "Hi", "layer": "99"}, 400, "out of range"),
    ("bad position", "/api/generate", {"prompt": "Hi", "positions": "middle"}, 400, "positions"),
    ("too many tokens", "/api/generate", {"prompt": "Hi", "max_new_tokens": 10**6}, 400,
     "over this server's limit of 300"),
    ("zero tokens", "/api/generate", {"prompt": "Hi", "max_new_tokens": 0}, 400,
     "max_new_tokens"),
    ("huge text", "/api/probe", {"text": "word " * 5000}, 413, "this server's limit is 20000"),
    ("unknown field", "/api/generate", {"prompt": "Hi", "max_tokens": 5}, 400,
     "max_tokens: unknown field"),
    ("missing text", "/api/probe", {}, 400, "exactly one of 'text' or 'messages'"),
    ("both inputs", "/api/generate", {"prompt": "Hi", "messages": CHAT}, 400, "exactly one"),
    ("bad role", "/api/probe", {"messages": [{"role": "robot", "content": "x"}]}, 400,
     "messages.0.role"),
    ("empty chat", "/api/generate", {"messages": []}, 400, "messages is empty"),
    ("empty batch", "/api/probe/batch", {"items": []}, 400, "items is empty"),
    ("big batch", "/api/probe/batch", {"items": [{"text": "x"}] * 40}, 400, "batch limit of 32"),
    ("plain text at assistant_start", "/api/probe", {"text": "Hi", "at": "assistant_start"}, 400,
     "needs a chat"),
    ("too many rules", "/api/generate", {"prompt": "Hi", "alerts": ["calm>0"] * 17}, 400,
     "limit of 16"),
    ("wrong type", "/api/generate", {"prompt": "Hi", "temperature": "hot"}, 400, "temperature"),
]


@pytest.mark.parametrize("what,path,body,status,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_one_clear_error(client, what, path, body, status, message):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"] and "\n" not in error["message"]
    assert error["type"] == "invalid_request_error"
    assert client.post("/api/probe", json={"text": "still serving"}).status_code == 200


@pytest.mark.parametrize("raw", [b'{"text": "unfinished', b"not json at all", b"[1, 2",
                                 b'{"prompt": "x", "temperature": NaN}'])
def test_malformed_json(client, raw):
    r = client.post("/api/generate", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert ("malformed JSON" in message or "finite number" in message) and "\n" not in message
    assert client.get("/api/health").json()["status"] == "ok"


def test_context_length_is_a_400(lm, vecs):
    short = tiny_lm("llama")
    short_vecs = tiny_vectors(short)
    short.model.config.max_position_embeddings = 64  # a model with a 64-token context
    with TestClient(create_app(short, short_vecs)) as c:
        n = len(short.encode_input(CHAT, add_generation_prompt=True).input_ids)
        r = c.post("/api/generate", json={"messages": CHAT, "max_new_tokens": 64 - n + 1})
        assert r.status_code == 400
        assert "reads at most 64 tokens (its context length)" in r.json()["error"]["message"]
        r = c.post("/v1/chat/completions", json={"model": "emolens", "messages": CHAT,
                                                 "max_tokens": 30, "stream": True})
        assert r.status_code == 400 and "context length" in r.json()["error"]["message"]
        r = c.post("/api/probe", json={"text": "many words " * 40})
        assert r.status_code == 400 and "reads at most 64" in r.json()["error"]["message"]
        assert wait_idle(c)["queued"] == 0  # the refused requests gave their places back
        events = generate(c, messages=CHAT, max_new_tokens=64 - n)  # exactly fits: served
        assert events[-1][0] == "done" and 0 < events[-1][1]["n_tokens"] <= 64 - n


def test_body_size_limit(lm, vecs):
    with TestClient(create_app(lm, vecs, limits=Limits(max_body_bytes=2000))) as c:
        r = c.post("/api/probe", json={"text": "x" * 5000})
        assert r.status_code == 413 and "2000 bytes" in r.json()["error"]["message"]

        def chunks():  # no Content-Length: the body is cut off as it streams past the limit
            for _ in range(10):
                yield b" " * 500
        r = c.post("/api/probe", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/api/probe", json={"text": "small"}).status_code == 200


def test_unknown_routes_and_methods(client):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.json()["error"]["message"] == "not found"
    assert client.get("/api/generate").status_code == 405
    assert client.delete("/api/health").status_code == 405


# ---- files: only the server's own folders ----------------------------------------------------
def test_no_files_outside_own_folders(lm, vecs, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").write_text("<h1>the report</h1>")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (report / "link.txt").symlink_to(secret)
    with TestClient(create_app(lm, vecs, report_dir=report)) as c:
        assert c.get("/api/info").json()["report"] == "/report/"
        assert "the report" in c.get("/report/").text
        for path in ["/report/link.txt", "/report/../secret.txt", "/report/%2e%2e/secret.txt",
                     "/report/..%2fsecret.txt", "/static/../app.py", "/static/%2e%2e/app.py",
                     "/static/..%2f..%2fpyproject.toml", "//etc/passwd", "/static//etc/passwd"]:
            r = c.get(path)
            assert r.status_code == 404, (path, r.status_code)
            assert "top secret" not in r.text and "import" not in r.text
    with pytest.raises(Exception, match="not a folder"):
        create_app(lm, vecs, report_dir=tmp_path / "missing")


# ---- the model lock: disconnects and the queue -----------------------------------------------
def test_disconnect_stops_generation(lm, vecs):
    app = create_app(lm, vecs, limits=Limits(max_new_tokens=250))
    with TestClient(app) as c:
        with c.stream("POST", "/api/generate",
                      json={"prompt": "Once upon a time", "max_new_tokens": 250}) as r:
            lines = r.iter_lines()
            seen = 0
            for line in lines:
                seen += line.startswith("event: token")
                if seen == 2:
                    break  # the client goes away after two tokens
        health = wait_idle(c)
        assert health["cancelled"] == 1
        assert health["last_job"]["cancelled"] is True
        assert health["last_job"]["items"] < 60  # far fewer than the 250 tokens asked for
        # the model is free again, its hooks are gone: a new request gives the plain result
        events = generate(c, prompt="Once upon a time", max_new_tokens=6, monitor=False)
        assert events[-1][1]["text"] == lm.generate("Once upon a time", max_new_tokens=6)
        assert not any(m._forward_hooks for m in lm.layers)


def test_busy_model_answers_503(lm, vecs):
    app = create_app(lm, vecs, limits=Limits(max_queue=0, retry_after_s=3, max_new_tokens=250))
    with TestClient(app) as c:
        with c.stream("POST", "/api/generate",
                      json={"prompt": "Once upon a time", "max_new_tokens": 250}) as r:
            lines = r.iter_lines()  # kept referenced: dropping it closes the stream
            while not next(lines).startswith("event: token"):
                pass
            busy = c.post("/api/probe", json={"text": "Am I queued?"})
            assert busy.status_code == 503 and busy.headers["retry-after"] == "3"
            assert "busy" in busy.json()["error"]["message"]
            other = c.post("/v1/chat/completions", json={
                "model": lm.name, "messages": CHAT, "max_tokens": 2})
            assert other.status_code == 503
        health = wait_idle(c)
        assert health["rejected"] == 2
        assert c.post("/api/probe", json={"text": "my turn"}).status_code == 200


def test_queue_admits_up_to_its_size(lm, vecs):
    from concurrent.futures import ThreadPoolExecutor

    app = create_app(lm, vecs, limits=Limits(max_queue=2, max_new_tokens=250))
    with TestClient(app) as c, ThreadPoolExecutor(2) as pool:
        with c.stream("POST", "/api/generate",
                      json={"prompt": "Once upon a time", "max_new_tokens": 250}) as r:
            lines = r.iter_lines()  # kept referenced: dropping it closes the stream
            while not next(lines).startswith("event: token"):
                pass
            waiting = [pool.submit(c.post, "/api/probe", json={"text": f"queued {i}"})
                       for i in range(2)]
            end = time.monotonic() + 20
            while c.get("/api/health").json()["queued"] < 2 and time.monotonic() < end:
                time.sleep(0.02)
            assert c.get("/api/health").json()["queued"] == 2
            assert c.post("/api/probe", json={"text": "one too many"}).status_code == 503
        assert [f.result(timeout=30).status_code for f in waiting] == [200, 200]
        assert wait_idle(c)["rejected"] == 1


# ---- the CLI -------------------------------------------------------------------------------------
def test_cli_serve(monkeypatch, capsys, lm, vecs):
    import uvicorn

    from emolens.cli import main

    calls = {}
    monkeypatch.setattr("emolens.cli.common.load_model_from_args", lambda args: lm)
    monkeypatch.setattr("emolens.cli.options.load_vectors_from_args", lambda args, m: vecs)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    assert main(["serve", "--port", "8799"]) == 0
    assert calls["host"] == "127.0.0.1" and calls["port"] == 8799
    assert "anyone" not in capsys.readouterr().err
    assert main(["serve", "--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err
    assert "serving on 0.0.0.0: anyone who can reach this address can use the model" in err
    assert main(["serve", "--port", "70000"]) == 2
    assert "port number" in capsys.readouterr().err
    assert main(["serve", "--report", "/no/such/folder"]) == 2
    assert "not a folder" in capsys.readouterr().err
