"""The page in a real browser: Playwright driving Debian's Chromium (headless, no sandbox).

Against the default model served by uvicorn on 127.0.0.1: open the page, send a message
and see coloured tokens appear; move a steering slider and see a different reply; add an
alert rule that fires and see it marked (with a guard that changes the reply); compare
steered and unsteered side by side; paste a text and see its summary.  Screenshots go to
the test's tmp folder, and the final ones to ``docs/screenshots/`` when
``EMOLENS_UPDATE_SCREENSHOTS=1`` is set.

Skipped only when Playwright or ``/usr/bin/chromium`` is missing (``.ci/run`` installs
Debian's ``chromium``), or the default model is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.integration

#: Chromium flags for a closed network: no sandbox (root in CI), no background connections.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
GENERATION_S = 180_000  # ms: a reply of the default model on a slow CPU


@pytest.fixture(scope="module")
def url(default_lm):
    from emolens.extract import default_vectors
    from emolens.server import Limits, create_app

    app = create_app(default_lm, default_vectors(), limits=Limits(max_new_tokens=128))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    end = time.monotonic() + 60
    while not srv.started:
        assert time.monotonic() < end and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def page(url, tmp_path):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        yield page
        browser.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


def wait_reply(page):
    page.wait_for_selector("#stop", state="hidden", timeout=GENERATION_S)
    page.wait_for_selector("#regenerate:not([disabled])", timeout=GENERATION_S)


def reply_text(page, selector=".turn.assistant .bubble"):
    return page.locator(selector).last.inner_text()


def coloured_tokens(page, selector):
    return page.evaluate(
        """(sel) => [...document.querySelectorAll(sel)].filter(
               (t) => t.style.background && !t.style.background.includes('0)')).length""",
        selector)


def shot(page, tmp_path, name, full=False):
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=full)
    return path


def test_page_end_to_end(page, tmp_path):
    shots = [shot(page, tmp_path, "0-start.png")]
    assert "SmolLM2" in page.inner_text("#model-line")
    page.fill("#max-tokens", "40")

    # send a message: the reply streams in, coloured token by token
    page.fill("#message", "My dog died this morning and I can't stop crying.")
    page.click("#send")
    page.wait_for_selector(".turn.assistant .tok", timeout=GENERATION_S)
    wait_reply(page)
    assert coloured_tokens(page, ".turn.assistant .tok") > 10
    assert coloured_tokens(page, ".turn.user .tok") > 3  # the message is read too
    assert page.locator("#timeline svg polyline").count() >= 1
    assert "assistant_start" in page.inner_text("#timeline")
    page.locator(".turn.assistant .tok").nth(3).hover()
    assert page.locator("#tooltip").is_visible()
    assert len(page.locator("#tooltip .tt-row").all()) >= 5
    plain = reply_text(page)
    shots.append(shot(page, tmp_path, "1-reply.png"))

    # an alarm that this reply crosses, and a guard on the same rule
    rule = page.evaluate(
        """() => { const e = document.getElementById('colour-emotion').value;
                   const i = S.eindex[e];
                   const reply = S.records.filter((r) => r.where === 'reply');
                   const top = Math.max(...reply.map((r) => r.scores[i]));
                   return `${e}>${(top * 0.85).toFixed(3)}`; }""")

    # steering: move a slider, regenerate, see a different reply
    page.fill("#steer-search", "calm")
    page.press("#steer-search", "Enter")
    page.locator(".slider[data-emotion='calm'] input[type=range]").fill("0.5")
    assert page.inner_text(".slider[data-emotion='calm'] .val").startswith("+0.5")
    page.click("#regenerate")
    wait_reply(page)
    steered = reply_text(page)
    assert steered and steered != plain
    assert "steered: calm +0.5" in page.inner_text(".turn.assistant .meta")
    shots.append(shot(page, tmp_path, "2-steered.png"))

    # the alarm fires and is marked on its token and in the log; the guard takes over
    page.click(".slider[data-emotion='calm'] .x")
    page.fill("#rule-input", rule)
    page.click("#rule-add")
    page.fill("#guard-rule", rule)
    page.fill("#guard-steer", "calm=0.4")
    page.click("#guard-add")
    assert page.locator("#rules li").count() == 2
    page.click("#regenerate")
    wait_reply(page)
    assert page.locator(".turn.assistant .tok.alerted").count() >= 1
    assert page.locator(".turn.assistant .flag", has_text=rule).count() >= 1
    assert page.locator(".turn.assistant .flag.guard").count() == 1
    assert rule in page.inner_text("#alert-log")
    assert page.inner_text("#alert-count") != "0"
    guarded = reply_text(page)
    assert page.locator(".turn.assistant .tok.guarded").count() >= 1
    assert guarded != plain
    shots.append(shot(page, tmp_path, "3-alert-guard.png"))

    # compare: unsteered and steered side by side, with the same seed
    page.click("#rules li.guard .x")
    page.fill("#steer-search", "calm")
    page.click("#steer-add")
    page.locator(".slider[data-emotion='calm'] input[type=range]").fill("0.4")
    page.fill("#message", "Can you tell me something to cheer me up?")
    page.click("#compare")
    wait_reply(page)
    cols = page.locator(".compare-grid .bubble")
    assert cols.count() == 2
    assert cols.nth(0).inner_text() and cols.nth(0).inner_text() != cols.nth(1).inner_text()
    shots.append(shot(page, tmp_path, "4-compare.png", full=True))

    # read a pasted text: coloured tokens and the ranked summary
    page.click("#tab-read")
    page.fill("#read-text", "The rain would not stop and the roof leaked all night. By morning "
                            "the kitchen was flooded, the power was out, and I had no idea who "
                            "to call or how we would pay for any of it.")
    page.click("#read-go")
    page.wait_for_selector(".summary .srow", timeout=GENERATION_S)
    assert page.locator(".summary .srow").count() == 12
    assert coloured_tokens(page, ".result .tok") > 10
    assert page.locator("#read-download").is_enabled()
    shots.append(shot(page, tmp_path, "5-read.png"))

    # upload a JSONL of texts and chats: one result each, and the results download as JSON
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text("\n".join(json.dumps(x) for x in [
        {"text": "I finally got the job I wanted, and I called my mother right away."},
        "The hospital called at three in the morning.",
        {"messages": [{"role": "user", "content": "I lost my keys again."},
                      {"role": "assistant", "content": "That is frustrating. Where did you "
                                                       "last see them?"}]},
        [{"role": "user", "content": "My cat is sick and the vet is closed."}]]) + "\n")
    page.set_input_files("#read-file", str(jsonl))
    page.wait_for_selector(".result-list .result-item", timeout=GENERATION_S)
    assert page.locator(".result-list .result-item").count() == 4
    page.locator(".result-list .result-item").nth(2).click()
    assert "Text 3 of 4" in page.inner_text(".result")
    with page.expect_download() as download:
        page.click("#read-download")
    saved = tmp_path / "readout.json"
    download.value.save_as(saved)
    assert len(json.loads(saved.read_text())["results"]) == 4
    shots.append(shot(page, tmp_path, "6-jsonl.png"))

    if os.environ.get("EMOLENS_UPDATE_SCREENSHOTS"):  # tests leave the repo alone otherwise
        DOCS.mkdir(parents=True, exist_ok=True)
        for path in shots[1:]:
            shutil.copyfile(path, DOCS / path.name)
