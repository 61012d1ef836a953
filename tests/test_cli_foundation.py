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


# ---- the checkers every command shares ------------------------------------------------------
@pytest.mark.parametrize("spec", ["all", "2", "-1", "0.66", "1,3", "1-3", " 1 , 2 ",
                                  "blocks.2.hook_resid_post", "blocks.1.hook_resid_post,3",
                                  "-3--1", "2.0", "ALL"])
def test_layer_spec_accepts_what_resolve_layers_reads(spec, llama_lm):
    from emolens.cli.common import layer_spec

    assert layer_spec(spec) == spec
    assert llama_lm.resolve_layers(spec)  # the model reads what the checker lets through


@pytest.mark.parametrize("spec", ["", "x", "1.5", "-0.5", "nan", "inf", "1,,2", "0.2-0.5",
                                  "blocks.x.hook_resid_post", "3-", "1e400"])
def test_layer_spec_refuses_what_no_model_reads(spec):
    import argparse

    from emolens.cli.common import layer_spec

    with pytest.raises(argparse.ArgumentTypeError):
        layer_spec(spec)


def test_seed_text_and_emotion_checkers():
    import argparse

    from emolens.cli.common import emotion_list, seed_arg, text_arg

    assert seed_arg("0") == 0 and seed_arg(str(2**32 - 1)) == 2**32 - 1
    for bad in ("-1", str(2**32), "1.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="seed"):
            seed_arg(bad)
    assert text_arg("Café ☕") == "Café ☕"
    with pytest.raises(argparse.ArgumentTypeError, match="NUL"):
        text_arg("a\x00b")
    assert emotion_list("calm,at ease") == ["calm", "at ease"]
    with pytest.raises(argparse.ArgumentTypeError, match="did you mean calm"):
        emotion_list("clam")
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated"):
        emotion_list(" , ")


def test_read_text_names_file_line_and_column(tmp_path):
    from emolens.cli.common import read_text
    from emolens.errors import EmolensError

    p = tmp_path / "t.txt"
    p.write_bytes("\ufeffok\n".encode() + b"fine\nab\x80\n")
    with pytest.raises(EmolensError, match=r"t.txt line 3 is not UTF-8 text \(byte 0x80 at "
                                           r"column 3\)"):
        read_text(str(p))
    p.write_bytes("\ufeffcafé\n".encode())
    assert read_text(str(p)) == "café\n"  # the BOM goes
    with pytest.raises(EmolensError, match="cannot read"):
        read_text(str(tmp_path / "missing.txt"))


def test_steer_alert_and_guard_specs_are_checked_where_parsed():
    import argparse

    from emolens.cli.options import alert_spec, guard_spec, steer_spec
    from emolens.steer import MAX_STRENGTH

    assert steer_spec("at ease=-0.5") == "at ease=-0.5"
    assert steer_spec(f"calm={MAX_STRENGTH}")
    for bad in ("calm=10.5", "calm=-1e300", "calm=inf", "calm=nan", "=0.1", "calm"):
        with pytest.raises(argparse.ArgumentTypeError):
            steer_spec(bad)
    assert alert_spec("sad<-0.1@3")
    for bad in ("calm>nan", "calm>inf", "calm>0.1@0", "calm", "", "calm>x"):
        with pytest.raises(argparse.ArgumentTypeError):
            alert_spec(bad)
    assert guard_spec("sad>0.1:calm=0.2,sad=-0.1")
    for bad in ("sad>0.1", "sad>nan:calm=0.1", "sad>0.1:calm=11"):
        with pytest.raises(argparse.ArgumentTypeError):
            guard_spec(bad)


def test_validate_options_get_the_checks_of_their_kind():
    import argparse

    from emolens.cli.validate import _arg_type
    from emolens.experiments import Option

    count, zero_ok = Option("k", 5, "top k"), Option("items", 0, "0: all")
    assert _arg_type(count)("3") == 3 and _arg_type(zero_ok)("0") == 0
    for option, bad in ((count, "0"), (zero_ok, "-1"), (Option("x", 0.5, "x"), "nan"),
                        (Option("temperature", 0.8, "t"), "-0.1"),
                        (Option("strength", 0.5, "s"), "11"),
                        (Option("strengths", (-0.1, 0.1), "s"), "0.1,inf")):
        with pytest.raises(argparse.ArgumentTypeError):
            _arg_type(option)(bad)
    assert _arg_type(Option("offset", -2, "any whole number"))("-7") == -7
