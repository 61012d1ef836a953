"""``probe --jsonl`` reads chats (``messages``) through the template, ranks at
``assistant_start`` on request, and equals the Python API for the same chat."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emolens.cli import main
from emolens.loading import load_model
from emolens.testing import tiny_lm, tiny_vectors


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("chats")
    lm = tiny_lm("qwen2")
    lm.model.save_pretrained(root / "model")
    lm.tokenizer.save_pretrained(root / "model")
    loaded = load_model(str(root / "model"))
    vecs = tiny_vectors(loaded)
    vecs.save(root / "vecs.safetensors")
    return {"root": root, "lm": loaded, "vecs": vecs,
            "args": ["--model", str(root / "model"), "--vectors", str(root / "vecs.safetensors")]}


CHATS = {
    "q1": [{"role": "user", "content": "My flight was cancelled and nobody will help."}],
    "q2": [{"role": "system", "content": "Be brief."},
           {"role": "user", "content": "I passed the exam!"}],
}


def test_jsonl_messages_at_assistant_start_equal_the_api(saved, capsys, tmp_path):
    src = tmp_path / "chats.jsonl"
    lines = [json.dumps({"id": k, "messages": v}) for k, v in CHATS.items()]
    lines.insert(1, json.dumps({"id": "t", "text": "The rain is soft."}))
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code = main(["probe", "--jsonl", str(src), *saved["args"], "--top", "3"])
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 0 and [r["id"] for r in rows] == ["q1", "t", "q2"]  # ids in order
    lm, vecs = saved["lm"], saved["vecs"]
    for r in rows:
        if r["id"] == "t":
            continue
        want = lm.monitor(CHATS[r["id"]], vecs)  # pooled summary, no generation prompt
        assert [s["emotion"] for s in r["summary"]] == [e for e, _ in want.summary(3)]
    del lines[1]  # --at assistant_start needs chats only
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code = main(["probe", "--jsonl", str(src), *saved["args"], "--top", "4",
                 "--at", "assistant_start"])
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 0
    for r in rows:
        api = lm.monitor(CHATS[r["id"]], vecs, add_generation_prompt=True)
        assert r["summary_at"] == api.assistant_start == r["assistant_start"]
        assert api.text.endswith("assistant\n")  # read with the generation prompt added
        want = api.ranked_at(api.assistant_start, 4)
        assert [s["emotion"] for s in r["summary"]] == [e for e, _ in want]
        np.testing.assert_allclose([s["score"] for s in r["summary"]], [s for _, s in want],
                                   atol=1e-6)


def test_assistant_start_needs_chats(saved, capsys):
    code = main(["probe", "--text", "hello", *saved["args"], "--at", "assistant_start"])
    err = capsys.readouterr().err
    assert code == 2 and "needs a chat" in err and err.count("\n") == 1
