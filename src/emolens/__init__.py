"""emolens: find, monitor and steer emotion concepts inside open-weight language models.

The public API fits in five lines::

    from emolens import load_model, default_vectors
    lm = load_model("default")
    vecs = default_vectors()                     # or EmotionVectors.load(path)
    readout = lm.monitor("I can't stop shaking.", vecs)
    with lm.steer(vecs["calm"], strength=0.1): print(lm.generate("Hi!"))

Heavy modules (torch, transformers) are imported lazily so ``import emolens`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from emolens.alerts import AlertRule, Guard, Watch
    from emolens.errors import EmolensError
    from emolens.extract import default_vectors
    from emolens.lens import LanguageModel
    from emolens.loading import load_model
    from emolens.readout import Readout
    from emolens.vectors import Direction, EmotionVectors

_LAZY = {
    "load_model": "emolens.loading",
    "LanguageModel": "emolens.lens",
    "EmotionVectors": "emolens.vectors",
    "Direction": "emolens.vectors",
    "default_vectors": "emolens.extract",
    "Readout": "emolens.readout",
    "AlertRule": "emolens.alerts",
    "Guard": "emolens.alerts",
    "Watch": "emolens.alerts",
    "EmolensError": "emolens.errors",
}

__all__ = ["AlertRule", "Direction", "EmolensError", "EmotionVectors", "Guard", "LanguageModel",
           "Readout", "Watch", "__version__", "default_vectors", "load_model"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emolens' has no attribute {name!r}")
