"""CLI basics: info on the default model, one clear error line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emolens.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emolens", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.integration
def test_info_default_json_reports_30_layers_576(default_lm):
    done = run_cli("info", "--model", "default", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert (info["n_layers"], info["hidden_size"]) == (30, 576)
    assert info["architecture"] == "llama" and info["source"].startswith("gguf:")


@pytest.mark.parametrize("args, message", [
    (["info", "--model", "/nowhere/model.gguf"], "GGUF file not found"),
    (["info", "--model", "nobody/not-a-model"], "not in the local cache and HF_HUB_OFFLINE"),
    (["info", "--model", "./missing-folder"], "no such model"),
    (["info", "--model", "default", "--dtype", "float8"], "invalid choice: 'float8'"),
    (["info", "--model", "default", "--device", "nowhere"], "unknown device 'nowhere'"),
    (["info", "--model", "default", "--batch"], "unrecognized arguments"),
    (["corpus", "check", "/nowhere/corpus"], "emolens: error:"),
])
def test_bad_input_gives_one_line_and_exit_2(args, message, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_layer_out_of_range_is_one_line(tmp_path, capsys):
    from conftest import tiny_lm

    lm = tiny_lm("llama")
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    capsys.readouterr()
    assert main(["extract", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "v"),
                 "--layers", "99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layer 99 is out of range" in err[0]


@pytest.mark.integration
def test_layer_out_of_range_on_default_model(default_lm, capsys):
    with pytest.raises(Exception) as info:
        default_lm.resolve_layers("40")
    assert "0..29" in str(info.value)


@pytest.mark.integration
def test_default_model_generates_greedy_text(default_lm):
    out = default_lm.generate_text([[{"role": "user", "content": "Name a colour."}]],
                                   max_new_tokens=8)[0]
    assert out.n_tokens > 0 and out.text.strip()
