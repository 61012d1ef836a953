"""The shipped vectors for the default model: fresh, loadable, model-checked, exportable."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_lm

from emolens.concepts import CORE_EMOTIONS, EMOTION_CLUSTERS, EMOTIONS
from emolens.corpus import load_corpus
from emolens.errors import VectorFileError
from emolens.extract import default_vectors, shipped_vectors_path
from emolens.gguf_io import export_gguf, import_gguf
from emolens.vectors import EmotionVectors


def test_shipped_vectors_match_the_shipped_corpus():
    vecs = default_vectors()
    assert vecs.emotions == tuple(sorted(EMOTIONS))
    assert vecs.layers == tuple(range(30)) and vecs.d == 576
    # rebuilt whenever the curated corpus changes (scripts/build_default_vectors.py)
    assert vecs.meta["corpus_fingerprint"] == load_corpus("default").fingerprint()
    assert vecs.meta["token_skip"] == 50
    assert vecs.meta["corpus"] == "default" and vecs.meta["corpus_variant"] is None
    assert set(vecs.meta["corpus_registers"]) == {"story", "narration", "diary", "dialogue",
                                                  "chat", "social", "letter"}
    assert vecs.head is not None and vecs.head.kind == "lda"
    assert vecs.head.layers == vecs.layers  # a small model: a head at every layer
    assert all(0 < a < 1 for a in vecs.head.meta["shrinkage"].values())
    assert np.isfinite(vecs.norm_median).all() and (vecs.norm_median > 0).all()


def test_layer_sweep_is_far_above_chance():
    vecs = default_vectors()
    best = vecs.meta["layer_scores"][str(vecs.default_layer)]
    n = vecs.meta["n_heldout"]
    assert n == 1539  # the held-out topics' stories and register texts
    assert best["top1"] > 20 / 171 and best["top5"] > 0.5  # chance is 1/171 and 5/171
    assert vecs.meta["layer_scores"]["0"]["top1"] < best["top1"]


def test_loads_in_a_fresh_process_and_refuses_another_model():
    code = ("from emolens.vectors import EmotionVectors as E; "
            f"v = E.load(r'{shipped_vectors_path()}'); print(v.default_layer, len(v))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(default_vectors().default_layer), "171"]
    with pytest.raises(VectorFileError, match="SmolLM2-135M-Instruct"):
        EmotionVectors.load(shipped_vectors_path(), expect_model=tiny_lm("llama").fingerprint())


def test_gguf_export_loads_back_identically(tmp_path):
    vecs = default_vectors()
    path = export_gguf(vecs, "calm", tmp_path / "calm.gguf", layers=list(range(1, 30)),
                       strength=0.1)
    back = import_gguf(path)
    assert sorted(back) == list(range(1, 30))
    for layer in (1, vecs.default_layer, 29):
        expected = vecs["calm"].at(layer) * 0.1 * vecs.residual_scale(layer)
        np.testing.assert_allclose(back[layer], expected, rtol=1e-6)


def test_core_emotions_are_distinct_and_clusters_cohere():
    vecs = default_vectors()
    C = vecs.subset(CORE_EMOTIONS).cosine_matrix(vecs.default_layer)
    assert C[~np.eye(12, dtype=bool)].max() < 0.95  # no two core emotions collapse
    full = vecs.cosine_matrix(vecs.default_layer)
    idx = {e: i for i, e in enumerate(vecs.emotions)}
    joy = [idx[e] for e in EMOTION_CLUSTERS["Exuberant Joy"]]
    despair = [idx[e] for e in EMOTION_CLUSTERS["Despair and Shame"]]
    within = full[np.ix_(joy, joy)][~np.eye(len(joy), dtype=bool)].mean()
    across = full[np.ix_(joy, despair)].mean()
    assert within > 0.1 > 0 > across  # joy words point together, away from despair


def test_a_shipped_direction_carries_its_scale_and_model():
    vecs = default_vectors()
    calm = vecs["calm"]
    assert calm.model == vecs.meta["model"] and calm.width == 576
    for layer in (0, vecs.default_layer, 29):
        assert calm.residual_scale(layer) == vecs.residual_scale(layer)
    contrast = (calm - vecs["desperate"]).normalized()
    assert contrast.residual_scale(vecs.default_layer) == vecs.residual_scale(vecs.default_layer)
    with pytest.raises(VectorFileError, match="SmolLM2-135M-Instruct"):
        calm.check_model(tiny_lm("llama"))
    with pytest.raises(VectorFileError, match="not for tiny-llama"):
        default_vectors(tiny_lm("llama"))


def test_the_shipped_file_is_unchanged_format_version_1():
    from safetensors import safe_open

    with safe_open(str(shipped_vectors_path()), "np") as f:
        header = f.metadata()["emolens"]
    assert '"format_version": 1' in header and '"kind": "emotion_vectors"' in header


@pytest.mark.integration
def test_the_shipped_vectors_fit_the_default_model(default_lm):
    vecs = default_vectors(default_lm)
    vecs.check_model(default_lm)
    vecs["calm"].check_model(default_lm)
