"""Comparing two models on the same probes (study section 10) on tiny models with a known
difference: B is a copy of A whose block L adds a fixed emotion direction to its output."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from emolens.errors import EmolensError, VectorFileError
from emolens.experiments import Context, get
from emolens.experiments.common import read_at_assistant_start
from emolens.experiments.compare import (
    ModelSide,
    check_pair,
    compare_models,
    read_side,
    resolve_model_b,
)
from emolens.lens import LanguageModel
from emolens.testing import tiny_lm, tiny_vectors


def shifted_copy(lm, vecs, emotion: str, layer: int, strength: float) -> LanguageModel:
    """A GPT-2 copy whose block ``layer`` adds ``strength`` x the residual norm x the
    emotion's unit vector to every token (through the MLP's output bias: new weights, no
    hooks)."""
    model = copy.deepcopy(lm.model)
    bump = strength * vecs.residual_scale(layer) * vecs.matrix(layer)[vecs.index(emotion)]
    with torch.no_grad():
        model.transformer.h[layer].mlp.c_proj.bias += torch.from_numpy(bump.copy())
    return LanguageModel(model, lm.tokenizer, name=f"{lm.name}+{emotion}")


@pytest.fixture(scope="module")
def gpt2():
    lm = tiny_lm("gpt2")
    return lm, tiny_vectors(lm)


def test_compare_recovers_a_planted_per_emotion_shift_between_two_models(gpt2):
    lm, vecs = gpt2
    b = shifted_copy(lm, vecs, "sad", 2, 0.4)
    r = compare_models(lm, b, vecs, layer=2, n_boot=200)
    top = r.overall[0]
    assert top.name == "sad" and top.ci_low > 0 and r.rank_of("sad") == 1
    assert top.shift > 3 * max(abs(s.shift) for s in r.overall[1:])
    for s in r.sets:  # in both prompt sets, on its own
        assert s.shifts[0].name == "sad" and s.n_prompts == 20
        assert s.structure.r < 0.999
    mag = r.layer_shifts.magnitude
    assert r.layers_read == (0, 1, 2, 3)
    assert mag[0] == mag[1] == 0.0 and mag[2] > 0.05  # nothing moves before the planted layer
    assert r.agreement is not None and r.agreement.r > 0.9
    assert len(r.cases) == 5 and all(c.up[0][0] == "sad" for c in r.cases)
    data = r.to_json()
    json.dumps(data, allow_nan=False)
    assert data["kind"] == "compare" and data["model_b"] == "tiny-gpt2+sad"
    assert "sad" in r.summary() and "structure r" in r.summary()
    from emolens.report.figures import figures_of

    assert set(figures_of(r)) == {"main", "layers", "layer_corr", "structure"}


def test_a_model_against_itself_shows_no_shift(gpt2):
    lm, vecs = gpt2
    r = compare_models(lm, lm, vecs, n_boot=50, cases=("neutral.boil_eggs",))
    assert all(s.shift == 0.0 for s in r.overall)
    assert all(abs(s.structure.r - 1.0) < 1e-9 for s in r.sets)
    assert [c.id for c in r.cases] == ["neutral.boil_eggs"] and r.cases[0].up == ()
    with pytest.raises(EmolensError, match="unknown prompt"):
        compare_models(lm, lm, vecs, n_boot=10, cases=("nope",))


def test_plant_spec_equals_the_weight_edit(gpt2):
    """The hook-based ``plant:`` copy and a real weight edit give the same read-outs."""
    lm, vecs = gpt2
    side = resolve_model_b("plant:sad:0.4@2", lm, vecs)
    assert side.lm is lm and "sad" in side.note
    msgs = ["Hi", "You never listen to me."]
    planted = read_side(side, vecs, msgs, [2, 3])
    edited = read_side(ModelSide("B", shifted_copy(lm, vecs, "sad", 2, 0.4)), vecs, msgs,
                       [2, 3])
    np.testing.assert_allclose(planted, edited, atol=1e-5)


def test_read_side_is_the_one_read_path(gpt2):
    lm, vecs = gpt2
    msgs = ["Hi", "What is the capital of Canada?", "You lied to me."]
    mine = read_side(ModelSide("A", lm), vecs, msgs, [1, 2], batch_size=2)
    for k, layer in enumerate((1, 2)):
        ref = read_at_assistant_start(lm, vecs, msgs, layer, list(vecs.emotions))
        np.testing.assert_allclose(mine[k], ref, atol=1e-5)


def test_half_precision_copy_barely_moves(gpt2):
    lm, vecs = gpt2
    r = compare_models(lm, "copy:bfloat16", vecs, n_boot=50)
    assert "bfloat16" in r.model_b and r.note == "A's weights cast to bfloat16"
    assert all(s.structure.r > 0.95 for s in r.sets)
    assert max(abs(s.shift) for s in r.overall) < 0.05
    assert lm.dtype == torch.float32  # A itself untouched
    with pytest.raises(EmolensError, match="copy:DTYPE"):
        resolve_model_b("copy:int3", lm, vecs)


def test_vectors_must_fit_both_models():
    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)
    with pytest.raises(VectorFileError, match="model B.*hidden size 64"):
        compare_models(lm, tiny_lm("llama", d=64), vecs, n_boot=10)
    with pytest.raises(VectorFileError, match="layer 3 but model B.*only 2 layers"):
        check_pair(vecs, lm, tiny_lm("llama", n_layers=2))
    with pytest.raises(VectorFileError, match="model A"):
        check_pair(vecs, tiny_lm("llama", d=64), lm)


def test_registry_entry_takes_model_b_as_an_option():
    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)
    a = get("post-training")
    assert a.name == "compare" and a.section == "10"
    r = a(Context(lm, vecs), model_b="plant:angry:0.5@2", n_boot=50)
    assert r.overall[0].name == "angry" and r.layer == vecs.default_layer
    assert "angry ranks 1 of 6" in r.verdict() and "before layer 2 is 0 " in r.verdict()
    default = a(Context(lm, vecs), n_boot=20)  # "plant": calm at a third of the depth
    assert "calm" in default.model_b and "layer 1" in default.note


def test_cli_compare_json_figures_and_one_line_errors(tmp_path, capsys):
    from emolens.cli import main

    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)
    lm.model.save_pretrained(tmp_path / "a")
    lm.tokenizer.save_pretrained(tmp_path / "a")
    vecs.save(tmp_path / "v.safetensors")
    wide = tiny_lm("llama", d=64)
    wide.model.save_pretrained(tmp_path / "wide")
    wide.tokenizer.save_pretrained(tmp_path / "wide")
    base = ["compare", "--model", str(tmp_path / "a"), "--vectors",
            str(tmp_path / "v.safetensors"), "--device", "cpu", "--n-boot", "20"]
    code = main([*base, "--model-b", "plant:sad:0.5@2", "--json", "--out",
                 str(tmp_path / "out")])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["overall"][0]["name"] == "sad" and data["layer"] == 2
    assert (tmp_path / "out" / "compare.json").exists()
    assert (tmp_path / "out" / "compare-main.png").exists()
    code = main([*base, "--model-b", str(tmp_path / "a"), "--cases", "neutral.boil_eggs"])
    out = capsys.readouterr().out
    assert code == 0 and "structure r = 1.000" in out
    code = main([*base, "--model-b", str(tmp_path / "wide")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("emolens: error: the vectors are 32 wide but model B")
