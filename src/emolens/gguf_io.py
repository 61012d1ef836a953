"""Export emotion directions as llama.cpp control vectors (GGUF) and read them back.

File layout, as llama.cpp's ``--control-vector`` / ``--control-vector-scaled`` loader reads it:
``general.architecture = "controlvector"``, ``controlvector.model_hint`` (string, cosmetic),
``controlvector.layer_count`` (int, cosmetic) and one 1-D float32 tensor ``direction.{n}``
per layer. The loader reads no metadata, only the tensors.

Layer numbering (checked against llama.cpp ``common/common.cpp``
``common_control_vector_load_one`` and ``src/llama-adapter.cpp``):

* ``direction.{n}`` is stored in the adapter's ``tensors[n]``; the graph code of every
  architecture adds ``tensors[il]`` to the block's output right after its final residual add
  (``cur = build_cvec(cur, il); cb(cur, "l_out", il)``), ``il`` being the 0-based block index.
* So ``direction.{n}`` is added to the output of decoder block ``n`` (0-based), which is
  **emolens layer n** (HF ``hidden_states[n + 1]``, TransformerLens
  ``blocks.n.hook_resid_post``). No offset is applied in either direction.
* ``direction.0`` is rejected by llama.cpp ("invalid (zero) direction tensor layer index") and
  the adapter never allocates a tensor for block 0, so emolens layer 0 cannot be exported;
  valid layers are ``1 .. n_layers - 1``.
* ``--control-vector-layer-range START END`` uses the same numbering, inclusive.

Values are absolute residual-stream offsets: ``export_gguf`` writes
``unit direction * strength * median residual norm`` so that llama.cpp's scale 1.0 reproduces
emolens steering at ``strength``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from emolens.errors import LayerError, SteeringError, VectorFileError
from emolens.fileio import atomic_path
from emolens.vectors import Direction, EmotionVectors

__all__ = ["GGUF_ARCH", "export_gguf", "import_gguf"]

GGUF_ARCH = "controlvector"
_NAME = re.compile(r"^direction\.(\d+)$")


def _resolve_layers(vectors: EmotionVectors, direction: Direction,
                    layers: Iterable[int] | None) -> list[int]:
    n_layers = (vectors.meta.get("model") or {}).get("n_layers")
    if layers is None:
        # Layer 0 has no slot in llama.cpp; by default export every layer that has one.
        chosen = [x for x in direction.layers if x >= 1]
        if not chosen:
            raise LayerError("no exportable layer: llama.cpp control vectors cannot touch "
                             "layer 0 (the first block's output), and that is all there is")
    else:
        chosen = []
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
                raise LayerError(f"a layer must be an integer block index, got {layer!r}")
            chosen.append(int(layer))
        if not chosen:
            raise LayerError("no layers given to export")
        if len(set(chosen)) != len(chosen):
            raise LayerError(f"duplicate layers in {chosen}")
    for layer in chosen:
        if layer == 0:
            raise LayerError("layer 0 cannot be exported: llama.cpp never adds a control "
                             "vector to the first block's output (direction.0 is rejected); "
                             "use layers 1 and up")
        if layer < 0 or (n_layers is not None and layer >= int(n_layers)):
            raise LayerError(f"layer {layer} is outside the model's blocks 1..{n_layers - 1} "
                             "that llama.cpp can steer" if n_layers is not None
                             else f"layer {layer} is negative")
        direction.at(layer)  # LayerError naming the stored layers if absent
    return sorted(chosen)


def export_gguf(vectors: EmotionVectors, direction: str | Direction,
                path: str | os.PathLike[str], *, layers: Iterable[int] | None = None,
                strength: float = 1.0) -> Path:
    """Write ``direction`` as a llama.cpp control-vector GGUF (atomically); return the path.

    Each layer's tensor is the unit direction (a composite such as ``vecs["happy"] -
    vecs["sad"]`` is normalised per layer) times ``strength`` times that layer's median
    residual norm, so ``llama-cli --control-vector FILE`` (scale 1.0) steers like emolens at
    ``strength``. ``direction.{n}`` holds emolens layer ``n``; layer 0 is refused. ``layers``
    defaults to every stored layer from 1 on.

    >>> import tempfile, pathlib
    >>> from emolens.vectors import EmotionVectors
    >>> v = EmotionVectors(("happy", "sad"), (1, 2), np.eye(2, 4)[:, None].repeat(2, 1),
    ...                    np.zeros((2, 2, 4)), [2.0, 4.0], [2.0, 4.0], {"model": {
    ...                    "name": "toy", "architecture": "llama", "n_layers": 3}})
    >>> p = export_gguf(v, "happy", pathlib.Path(tempfile.mkdtemp()) / "happy.gguf",
    ...                 strength=0.5)
    >>> {k: x.tolist() for k, x in import_gguf(p).items()}
    {1: [1.0, 0.0, 0.0, 0.0], 2: [2.0, 0.0, 0.0, 0.0]}
    """
    import gguf

    if not isinstance(strength, (int, float, np.floating)) or not np.isfinite(strength):
        raise SteeringError(f"strength must be a finite number, got {strength!r}")
    d = vectors[direction] if isinstance(direction, str) else direction
    if not isinstance(d, Direction):
        raise SteeringError(f"direction must be an emotion name or a Direction, got {d!r}")
    d.check_model({**(vectors.meta.get("model") or {}), "hidden_size": vectors.d})
    chosen = _resolve_layers(vectors, d, layers)
    unit = d.normalized()
    model = vectors.meta.get("model") or {}
    tensors = {}
    for layer in chosen:
        scale = vectors.residual_scale(layer, robust=True)  # SteeringError if missing/zero
        vec = unit.at(layer).astype(np.float64) * float(strength) * scale
        tensors[layer] = np.ascontiguousarray(vec, dtype=np.float32)

    path = Path(path)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), GGUF_ARCH)  # sets general.architecture
        writer.add_string(f"{GGUF_ARCH}.model_hint", str(model.get("architecture") or ""))
        writer.add_uint32(f"{GGUF_ARCH}.layer_count", len(chosen))
        # Extra keys are ignored by llama.cpp; they keep the file self-describing.
        writer.add_string("emolens.direction", d.name)
        writer.add_float32("emolens.strength", float(strength))
        writer.add_string("emolens.model_name", str(model.get("name") or ""))
        writer.add_string("emolens.layer_convention",
                          "direction.n is added to the output of decoder block n (0-based) "
                          "= emolens layer n = HF hidden_states[n+1]")
        for layer in chosen:
            writer.add_tensor(f"direction.{layer}", tensors[layer])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def import_gguf(path: str | os.PathLike[str]) -> dict[int, np.ndarray]:
    """Read a control-vector GGUF into ``{emolens layer: float32 vector}``.

    ``direction.{n}`` maps to emolens layer ``n``; several tensors for one layer are summed,
    as llama.cpp does.

    >>> import tempfile, pathlib
    >>> p = export_gguf(vecs, vecs["calm"] - vecs["sad"],
    ...                 pathlib.Path(tempfile.mkdtemp()) / "calm.gguf", strength=0.1)
    >>> back = import_gguf(p)
    >>> sorted(back), back[2].shape
    ([1, 2, 3], (32,))
    >>> bool(np.isclose(np.linalg.norm(back[2]), 0.1 * vecs.residual_scale(2)))
    True
    """
    import gguf

    path = Path(path)
    if not path.is_file():
        raise VectorFileError(f"control-vector file not found: {path}")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 (any parse failure of a foreign file is "not GGUF")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VectorFileError(f"{path} is not a readable GGUF file ({first})") from None
    try:
        arch_field = reader.get_field("general.architecture")
        arch = arch_field.contents() if arch_field is not None else None
        if arch != GGUF_ARCH:
            raise VectorFileError(f"{path} is a GGUF file for {arch!r}, not a control vector")
        out: dict[int, np.ndarray] = {}
        width = None
        for t in reader.tensors:
            m = _NAME.match(t.name)
            if not m:
                raise VectorFileError(f"{path}: unexpected tensor {t.name!r} (want direction.N)")
            layer = int(m.group(1))
            if layer == 0:
                raise VectorFileError(f"{path}: direction.0 is invalid for llama.cpp")
            if t.tensor_type != gguf.GGMLQuantizationType.F32:
                raise VectorFileError(f"{path}: {t.name} is {t.tensor_type.name}, not F32")
            vec = np.array(t.data, dtype=np.float32).reshape(-1)  # copy out of the memmap
            if width is not None and vec.shape[0] != width:
                raise VectorFileError(f"{path}: direction tensors have different lengths")
            width = vec.shape[0]
            out[layer] = out[layer] + vec if layer in out else vec
    finally:
        del reader  # release the memmap so the file can be replaced or deleted
    return dict(sorted(out.items()))
