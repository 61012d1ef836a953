"""The emotion vectors shipped inside the package for the embedded default model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emolens.errors import VectorFileError
from emolens.vectors import EmotionVectors

__all__ = ["SHIPPED_VECTORS", "default_vectors", "shipped_vectors_path"]

#: File name of the default model's vectors under ``emolens/data``.
SHIPPED_VECTORS = "smollm2-135m-instruct.emotions.safetensors"


def shipped_vectors_path() -> Path:
    """Where the default model's vectors live inside the installed package.

    >>> shipped_vectors_path().name
    'smollm2-135m-instruct.emotions.safetensors'
    """
    return Path(__file__).resolve().parents[1] / "data" / SHIPPED_VECTORS


def default_vectors(lm: Any = None) -> EmotionVectors:
    """Emotion vectors for the embedded default model, shipped inside the package.

    With ``lm`` (a model or its fingerprint dict), refuse if it is not the default model.
    They are rebuilt by ``scripts/build_default_vectors.py`` whenever the curated corpus
    changes; a test checks the file matches the corpus.

    >>> v = default_vectors()
    >>> len(v), v.d, v["calm"].residual_scale(v.default_layer) > 0
    (171, 576, True)
    >>> default_vectors(lm)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    emolens.errors.VectorFileError: vectors were built for SmolLM2-135M-Instruct (...), not ...
    """
    path = shipped_vectors_path()
    if not path.is_file():
        raise VectorFileError(f"the shipped default vectors are missing ({path}); run "
                              "scripts/build_default_vectors.py or pass --vectors")
    return EmotionVectors.load(path, expect_model=lm)
