"""The study's analyses, one module each, all entries of one registry.

Importing this package registers the built-in analyses, in the order the report shows
them (:data:`BUILTIN`). Each module registers itself with
:func:`~emolens.experiments.registry.register` when imported, so the list below is the only
place that names them; a new analysis is one module plus one line here. Results hold
numbers only: figures live in :mod:`emolens.report.figures`.

>>> [a.name for a in analyses()][:len(BUILTIN_NAMES)] == list(BUILTIN_NAMES)
True
"""

from __future__ import annotations

import importlib

from emolens.experiments.registry import (
    Analysis,
    Context,
    Option,
    Result,
    analyses,
    get,
    register,
    unregister,
)

__all__ = ["BUILTIN", "BUILTIN_NAMES", "Analysis", "Context", "Option", "Result", "analyses",
           "get", "register", "unregister"]

#: The built-in analysis modules, in report order.
BUILTIN = ("layer_sweep", "heldout", "outofstyle", "logit_lens", "scenarios", "intensity",
           "steering_validation", "emotion_space", "speakers", "steering_sweep",
           "preference", "blackmail", "reward_hacking", "sycophancy", "compare")

#: Their registry names, in the same order.
BUILTIN_NAMES = tuple(importlib.import_module(f"{__name__}.{m}").ANALYSIS.name for m in BUILTIN)
