"""Doctest fixtures: every docstring example runs against a tiny random model, never skipped.

``lm`` is a 4-layer random Llama :class:`emolens.lens.LanguageModel` (hidden size 32) and
``vecs`` random :class:`emolens.vectors.EmotionVectors` for it (6 emotions, every layer).
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _doctest_fixtures(doctest_namespace: dict) -> None:
    from emolens.testing import tiny_lm, tiny_vectors

    lm = tiny_lm("llama")
    doctest_namespace["lm"] = lm
    doctest_namespace["vecs"] = tiny_vectors(lm)
