"""emolens: find, monitor and steer emotion concepts inside open-weight language models.

The public API fits in five lines::

    from emolens import load_model, EmotionVectors
    lm = load_model("default")
    vecs = EmotionVectors.load(path)
    scores = lm.monitor("I can't stop shaking.", vecs)
    with lm.steer(vecs, {"calm": 0.1}): lm.generate_text([...])

Heavy modules (torch, transformers) are imported lazily so ``import emolens`` is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["EmolensError", "EmotionVectors", "LanguageModel", "load_model", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from emolens.errors import EmolensError
    from emolens.lens import LanguageModel
    from emolens.loading import load_model
    from emolens.vectors import EmotionVectors

_LAZY = {
    "load_model": "emolens.loading",
    "LanguageModel": "emolens.lens",
    "EmotionVectors": "emolens.vectors",
    "EmolensError": "emolens.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emolens' has no attribute {name!r}")
