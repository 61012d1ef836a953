"""``emolens probe``, ``generate`` and ``chat`` on a tiny saved model (and the default one)."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from conftest import tiny_lm
from test_readout import tiny_vectors

from emolens.cli import main
from emolens.loading import load_model
from emolens.readout import read


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny llama saved as a local HF folder, with vectors built from it."""
    root = tmp_path_factory.mktemp("cli")
    lm = tiny_lm("llama")
    lm.model.save_pretrained(root / "model")
    lm.tokenizer.save_pretrained(root / "model")
    loaded = load_model(str(root / "model"))
    vecs = tiny_vectors(loaded)
    vecs.save(root / "vecs.safetensors")
    return {"model": str(root / "model"), "vectors": str(root / "vecs.safetensors"),
            "lm": loaded, "vecs": vecs, "root": root}


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def base(saved):
    return ["--model", saved["model"], "--vectors", saved["vectors"]]


# ---- probe ----------------------------------------------------------------------------------
def test_probe_json_has_ranked_summary_and_tokens(saved, capsys):
    text = "She was furious when the letter arrived late again!"
    code, out, _ = cli(capsys, "probe", "--text", text, *base(saved), "--top", "3", "--json")
    assert code == 0
    data = json.loads(out)
    want = read(saved["lm"], text, saved["vecs"]).summary(3)
    assert [(s["emotion"], s["score"]) for s in data["summary"]] == [
        (e, round(s, 6)) for e, s in want]
    scores = [s["score"] for s in data["summary"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3
    assert len(data["tokens"]) == data["n_tokens"] == len(saved["lm"].tokenizer(text)["input_ids"])
    assert all(len(t["top"]) == 3 for t in data["tokens"])


def test_probe_text_output_and_file_input(saved, capsys, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("I feel calm today.", encoding="utf-8")
    code, out, _ = cli(capsys, "probe", "--file", f, *base(saved), "--top", "2", "--layer", "2")
    assert code == 0
    want = read(saved["lm"], "I feel calm today.", saved["vecs"], layer=2).summary(2)
    assert f"1. {want[0][0]}" in out and f"2. {want[1][0]}" in out
    assert "layer 2, centered; pooled over tokens" in out


def test_probe_jsonl_batch_one_result_per_line(saved, capsys, tmp_path):
    src = tmp_path / "in.jsonl"
    texts = {"a": "I feel calm today.", "b": "She was furious!", "c": "The rain is soft."}
    src.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items())
                   + "\n", encoding="utf-8")
    code, out, _ = cli(capsys, "probe", "--jsonl", src, *base(saved), "--top", "2")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    for r in rows:
        one = read(saved["lm"], texts[r["id"]], saved["vecs"]).summary(2)
        assert [s["emotion"] for s in r["summary"]] == [e for e, _ in one]
        np.testing.assert_allclose([s["score"] for s in r["summary"]], [s for _, s in one],
                                   atol=1e-5)
    dest = tmp_path / "out" / "res.jsonl"
    code, _, err = cli(capsys, "probe", "--jsonl", src, *base(saved), "--out", dest)
    assert code == 2 and "folder" in err and "does not exist" in err  # parents not made up
    dest.parent.mkdir()
    code, _, err = cli(capsys, "probe", "--jsonl", src, *base(saved), "--out", dest)
    assert code == 0 and "wrote 3 results" in err
    assert len(dest.read_text().splitlines()) == 3


def test_probe_errors_are_one_line_exit_2(saved, capsys, tmp_path):
    code, _, err = cli(capsys, "probe", "--text", "hi", "--model", saved["model"])
    assert code == 2 and "--vectors FILE is required" in err and err.count("\n") == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "ok"}\nnot json\n')
    code, _, err = cli(capsys, "probe", "--jsonl", bad, *base(saved))
    assert code == 2 and "line 2" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "probe", "--text", "hi", "--model", saved["model"],
                       "--vectors", tmp_path / "missing.safetensors")
    assert code == 2 and "not found" in err
    code, _, err = cli(capsys, "probe", "--text", "hi", *base(saved), "--layer", "9")
    assert code == 2 and "out of range" in err
    other = tiny_lm("qwen2")
    tiny_vectors(other).save(tmp_path / "qwen.safetensors")
    code, _, err = cli(capsys, "probe", "--text", "hi", "--model", saved["model"],
                       "--vectors", tmp_path / "qwen.safetensors")
    assert code == 2 and "were built for" in err


# ---- generate -------------------------------------------------------------------------------
def test_generate_plain_and_steered_json(saved, capsys):
    lm, vecs = saved["lm"], saved["vecs"]
    msgs = [{"role": "user", "content": "How was the letter?"}]
    code, out, _ = cli(capsys, "generate", "--prompt", "How was the letter?", *base(saved),
                       "--max-new-tokens", "8", "--json")
    assert code == 0
    plain = json.loads(out)
    assert plain["text"] == lm.generate_text([msgs], max_new_tokens=8)[0].text
    code, out, _ = cli(capsys, "generate", "--prompt", "How was the letter?", *base(saved),
                       "--max-new-tokens", "8", "--json", "--steer", "happy=1.5",
                       "--steer", "angry=-1")
    steered = json.loads(out)
    with lm.steer(vecs, {"happy": 1.5, "angry": -1.0}):
        want = lm.generate_text([msgs], max_new_tokens=8)[0]
    assert steered["text"] == want.text and steered["steer"] == {"happy": 1.5, "angry": -1.0}
    assert steered["text"] != plain["text"]


def test_generate_monitor_json_matches_the_library(saved, capsys):
    lm, vecs = saved["lm"], saved["vecs"]
    code, out, _ = cli(capsys, "generate", "--prompt", "I feel", "--raw", *base(saved),
                       "--max-new-tokens", "6", "--monitor", "--json", "--top", "2")
    assert code == 0
    data = json.loads(out)
    g = lm.generate_text(["I feel"], max_new_tokens=6, monitor=vecs)[0]
    assert [t["id"] for t in data["tokens"]] == g.token_ids
    mean = g.scores.mean(0)
    best = [vecs.emotions[i] for i in np.argsort(-mean)[:2]]
    assert [s["emotion"] for s in data["summary"]] == best
    for tok, row in zip(data["tokens"], g.scores, strict=True):
        assert tok["top"][0]["emotion"] == vecs.emotions[int(row.argmax())]
    assert data["alerts"] == [] and data["guards"] == []


def test_generate_alert_log_and_guard(saved, capsys, tmp_path):
    lm, vecs = saved["lm"], saved["vecs"]
    g = lm.generate_text(["I feel"], max_new_tokens=10, monitor=vecs)[0]
    # an emotion whose score first rises above all earlier tokens at an early token k
    emotion, k = next((e, k) for k in range(1, 6) for e in vecs.emotions
                      if g.scores[k, vecs.index(e)] > g.scores[:k, vecs.index(e)].max())
    sig = g.scores[:, vecs.index(emotion)]
    thr = float(sig[:k].max() + sig[k]) / 2
    log = tmp_path / "alerts.jsonl"
    rule = f"{emotion}>{thr:.6f}"
    code, out, _ = cli(capsys, "generate", "--prompt", "I feel", "--raw", *base(saved),
                       "--max-new-tokens", "10", "--alert", rule, "--alert-log", log,
                       "--guard", f"{rule}:happy=2", "--steer-layers", "1", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["alerts"][0]["token_index"] == k and data["alerts"][0]["rule"] == rule
    assert data["guards"] == [{"rule": rule, "triggered_at": k}]
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["token_index"] for x in logged] == [a["token_index"] for a in data["alerts"]]
    ids = [t["id"] for t in data["tokens"]]
    assert ids[:k + 2] == g.token_ids[:k + 2]  # unsteered until the guard switched on
    assert ids != g.token_ids  # and steered after
    # the text form prints the alert on stderr and a guard line
    code, out, err = cli(capsys, "generate", "--prompt", "I feel", "--raw", *base(saved),
                         "--max-new-tokens", "10", "--guard", f"{rule}:happy=2")
    assert code == 0 and f"[alert] {rule} at token {k}" in err
    assert f"triggered at token {k}" in out


def test_generate_bad_arguments(saved, capsys):
    for extra, msg in ((["--steer", "calm"], "NAME=STRENGTH"),
                       (["--steer", "hapy=0.1"], "unknown emotion"),
                       (["--alert", "calm"], "alert rule"),
                       (["--guard", "calm>0.1"], "RULE:NAME=STRENGTH"),
                       (["--max-new-tokens", "0"], "max-new-tokens")):
        code, _, err = cli(capsys, "generate", "--prompt", "hi", *base(saved), *extra)
        assert code == 2 and msg in err, (extra, err)


# ---- chat -----------------------------------------------------------------------------------
def test_chat_reads_stdin_colours_tokens_and_shows_top_emotions(saved, capsys, monkeypatch):
    lm, vecs = saved["lm"], saved["vecs"]
    monkeypatch.setattr("sys.stdin", io.StringIO("How was the letter?\n\n/reset\nHi\n"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    code, out, _ = cli(capsys, "chat", *base(saved), "--max-new-tokens", "6", "--top", "2")
    assert code == 0
    assert out.count("assistant> ") == 2 and "(conversation cleared)" in out
    assert re.search(r"\033\[38;5;\d+m", out)  # tokens are coloured
    first = [{"role": "user", "content": "How was the letter?"}]
    g = lm.generate_text([first], max_new_tokens=6, monitor=vecs)[0]
    mean = g.scores.mean(0)
    best = vecs.emotions[int(np.argmax(mean))]
    plain = re.sub(r"\033\[[0-9;]*m", "", out)
    assert f"top emotions: {best} {mean.max():+.3f}" in plain
    assert g.text in plain


def test_chat_no_color_is_plain_and_keeps_history(saved, capsys, monkeypatch):
    lm = saved["lm"]
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\nHow are you?\n/quit\nignored\n"))
    code, out, _ = cli(capsys, "chat", *base(saved), "--max-new-tokens", "5", "--no-color")
    assert code == 0 and "\033[" not in out
    assert out.count("assistant> ") == 2
    first = lm.generate_text([[{"role": "user", "content": "Hi"}]], max_new_tokens=5)[0]
    second = lm.generate_text([[{"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": first.text},
                                {"role": "user", "content": "How are you?"}]],
                              max_new_tokens=5)[0]
    assert f"assistant> {first.text}\n" in out and f"assistant> {second.text}\n" in out


# ---- the default model ----------------------------------------------------------------------
SAD = ("My grandmother died last winter, and the house has been silent ever since. I still set "
       "out two cups in the morning before I remember. Her coat hangs by the door and I cannot "
       "bring myself to move it. Some nights I sit in her chair and cry until I fall asleep.")
SAD_FAMILY = {"sad", "grief-stricken", "heartbroken", "lonely", "depressed", "miserable",
              "gloomy", "melancholy", "dispirited", "unhappy", "hurt", "upset", "sorry",
              "regretful", "nostalgic", "brooding", "tormented", "worn out", "resigned"}


@pytest.mark.integration
def test_probe_ranks_sad_family_first_on_a_sad_paragraph(default_lm, capsys, tmp_path):
    from test_readout import default_model_vectors

    vecs = default_model_vectors(default_lm)
    path = tmp_path / "default.safetensors"
    vecs.save(path)
    code, out, _ = cli(capsys, "probe", "--text", SAD, "--vectors", path, "--top", "5",
                       "--json")
    assert code == 0
    top = [s["emotion"] for s in json.loads(out)["summary"]]
    assert top[0] in SAD_FAMILY and sum(e in SAD_FAMILY for e in top) >= 2, top
