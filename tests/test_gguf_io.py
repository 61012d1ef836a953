"""GGUF control-vector export/import and llama.cpp's layer numbering."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from emolens.errors import LayerError, SteeringError, VectorFileError
from emolens.gguf_io import export_gguf, import_gguf
from emolens.vectors import EmotionVectors

D = 8
LAYERS = (0, 1, 2, 3)
MODEL = {"name": "toy/llama-tiny", "architecture": "llama", "n_layers": 4, "hidden_size": D,
         "vocab_size": 100, "config_hash": "abc"}


@pytest.fixture
def vecs() -> EmotionVectors:
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(3, len(LAYERS), D))
    unit = raw / np.linalg.norm(raw, axis=2, keepdims=True)
    median = np.array([1.5, 2.0, 4.0, 8.0])
    return EmotionVectors(("happy", "sad", "calm"), LAYERS, unit, raw, median * 1.1, median,
                          {"format_version": 1, "model": MODEL})


def _read(path):
    reader = gguf.GGUFReader(path)
    fields = {name: f.contents() for name, f in reader.fields.items()
              if not name.startswith("GGUF.")}
    tensors = {t.name: (t.tensor_type, np.array(t.data)) for t in reader.tensors}
    return fields, tensors


def test_export_writes_llama_cpp_layout_and_numbering(vecs, tmp_path):
    path = export_gguf(vecs, "happy", tmp_path / "happy.gguf", strength=0.25)
    fields, tensors = _read(path)
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "llama"
    assert fields["controlvector.layer_count"] == 3
    assert fields["emolens.direction"] == "happy"
    # direction.N is added by llama.cpp to the output of block N (0-based) = emolens layer N;
    # layer 0 has no slot, so the default export writes layers 1..3 under the same numbers.
    assert sorted(tensors) == ["direction.1", "direction.2", "direction.3"]
    for layer in (1, 2, 3):
        ttype, data = tensors[f"direction.{layer}"]
        assert ttype == gguf.GGMLQuantizationType.F32 and data.shape == (D,)
        expect = vecs.matrix(layer)[0] * 0.25 * vecs.residual_scale(layer)
        np.testing.assert_allclose(data, expect, rtol=1e-6)
        # norm = strength x median residual norm of that very layer (1->2.0, 2->4.0, 3->8.0)
        assert np.linalg.norm(data) == pytest.approx(0.25 * [0, 2.0, 4.0, 8.0][layer], rel=1e-6)


def test_round_trip_identical(vecs, tmp_path):
    path = export_gguf(vecs, vecs["happy"] - vecs["sad"], tmp_path / "hs.gguf",
                       layers=[3, 1], strength=-0.5)
    back = import_gguf(path)
    assert list(back) == [1, 3]
    _, tensors = _read(path)
    for layer, vec in back.items():
        assert vec.dtype == np.float32
        np.testing.assert_array_equal(vec, tensors[f"direction.{layer}"][1])
        d = vecs.matrix(layer)[0] - vecs.matrix(layer)[1]
        expect = d / np.linalg.norm(d) * -0.5 * vecs.residual_scale(layer)
        np.testing.assert_allclose(vec, expect, rtol=1e-5, atol=1e-7)
    fields, _ = _read(path)
    assert fields["emolens.direction"] == "happy-sad"
    assert fields["emolens.strength"] == pytest.approx(-0.5)


def test_llama_cpp_buffer_layout(vecs, tmp_path):
    """Replay llama.cpp's loader: data[n_embd*(N-1)] feeds tensors[N], added after block N."""
    path = export_gguf(vecs, "calm", tmp_path / "calm.gguf")
    n_embd, n_layer = D, MODEL["n_layers"]
    buf = np.zeros(n_embd * (n_layer - 1), np.float32)  # no slot for layer 0
    _, tensors = _read(path)
    for name, (_, data) in tensors.items():
        n = int(name.split(".")[1])
        assert n >= 1
        buf[n_embd * (n - 1): n_embd * n] += data
    for block in range(1, n_layer):  # llama-adapter: tensors[il] for il in 1..n_layer-1
        added = buf[n_embd * (block - 1): n_embd * block]
        np.testing.assert_allclose(added, vecs.matrix(block)[2] * vecs.residual_scale(block),
                                   rtol=1e-6)


def test_refuses_unrepresentable_layers(vecs, tmp_path):
    with pytest.raises(LayerError, match="layer 0 cannot be exported"):
        export_gguf(vecs, "happy", tmp_path / "x.gguf", layers=[0, 1])
    with pytest.raises(LayerError, match="outside the model's blocks 1..3"):
        export_gguf(vecs, "happy", tmp_path / "x.gguf", layers=[4])
    only0 = vecs.subset(["happy"])
    only0 = EmotionVectors(only0.emotions, (0,), only0.directions[:, :1], only0.raw[:, :1],
                           [1.0], [1.0], only0.meta)
    with pytest.raises(LayerError, match="no exportable layer"):
        export_gguf(only0, "happy", tmp_path / "x.gguf")
    sparse = EmotionVectors(vecs.emotions, (1, 3), vecs.directions[:, [1, 3]],
                            vecs.raw[:, [1, 3]], [1.0, 1.0], [1.0, 1.0], vecs.meta)
    with pytest.raises(LayerError, match="has no layer 2"):
        export_gguf(sparse, "happy", tmp_path / "x.gguf", layers=[2])
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_refuses_missing_norm_and_bad_strength(vecs, tmp_path):
    no_norm = EmotionVectors(vecs.emotions, vecs.layers, vecs.directions, vecs.raw,
                             [np.nan] * 4, [np.nan] * 4, vecs.meta)
    with pytest.raises(SteeringError, match="residual norm"):
        export_gguf(no_norm, "happy", tmp_path / "x.gguf")
    with pytest.raises(SteeringError, match="finite"):
        export_gguf(vecs, "happy", tmp_path / "x.gguf", strength=float("inf"))
    with pytest.raises(SteeringError, match="unknown emotion"):
        export_gguf(vecs, "hapy", tmp_path / "x.gguf")
    assert not list(tmp_path.iterdir())


def test_import_refuses_foreign_files(tmp_path):
    with pytest.raises(VectorFileError, match="not found"):
        import_gguf(tmp_path / "none.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(VectorFileError, match="not a readable GGUF"):
        import_gguf(tmp_path / "junk.gguf")
    w = gguf.GGUFWriter(tmp_path / "model.gguf", "llama")
    w.add_tensor("token_embd.weight", np.zeros((2, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(VectorFileError, match="for 'llama', not a control vector"):
        import_gguf(tmp_path / "model.gguf")
    w = gguf.GGUFWriter(tmp_path / "zero.gguf", "controlvector")
    w.add_tensor("direction.0", np.zeros(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(VectorFileError, match="direction.0"):
        import_gguf(tmp_path / "zero.gguf")


def test_import_reads_a_hand_written_file(tmp_path):
    w = gguf.GGUFWriter(tmp_path / "dup.gguf", "controlvector")
    w.add_tensor("direction.2", np.ones(4, np.float32))
    w.add_tensor("direction.5", np.full(4, 3.0, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    back = import_gguf(tmp_path / "dup.gguf")
    assert list(back) == [2, 5]
    np.testing.assert_array_equal(back[5], [3.0, 3.0, 3.0, 3.0])


def test_refuses_a_direction_of_another_model(vecs, tmp_path):
    from emolens.vectors import Direction

    wide = Direction("wide", {1: np.ones(2 * D, np.float32)})
    with pytest.raises(VectorFileError, match="'wide' is 16 wide|d=8"):
        export_gguf(vecs, wide, tmp_path / "x.gguf", layers=[1])
    other = Direction("other", {1: np.ones(D, np.float32)},
                      model=dict(MODEL, name="elsewhere", config_hash="zzz"))
    with pytest.raises(VectorFileError, match="'other' was built for elsewhere"):
        export_gguf(vecs, other, tmp_path / "x.gguf", layers=[1])
    assert not list(tmp_path.iterdir())
