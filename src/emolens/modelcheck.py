"""Which model a file was made for, and the check against the model in hand.

Vector files and extraction shards store the fingerprint of the model that made them
(:meth:`emolens.model.ModelAdapter.fingerprint`); using them with another model (other
width, layer count, vocabulary or config) is refused with one line naming both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from emolens.errors import VectorFileError

__all__ = ["MODEL_KEYS", "check_fit", "check_model", "describe_model", "model_fingerprint"]

# Keys of meta["model"] that identify a model; all but "name" are compared.
MODEL_KEYS = ("name", "architecture", "n_layers", "hidden_size", "vocab_size", "config_hash")
_COMPARED_KEYS = ("architecture", "n_layers", "hidden_size", "vocab_size", "config_hash")




def model_fingerprint(model: Any) -> dict[str, Any]:
    """What identifies ``model``: its ``.fingerprint()``, or a fingerprint dict as given.

    >>> sorted(model_fingerprint(lm))
    ['architecture', 'config_hash', 'hidden_size', 'n_layers', 'name', 'vocab_size']
    >>> model_fingerprint({"hidden_size": 32})
    {'hidden_size': 32}
    """
    if isinstance(model, Mapping):
        return dict(model)
    fingerprint = getattr(model, "fingerprint", None)
    if callable(fingerprint):
        return dict(fingerprint())
    raise VectorFileError(f"cannot check vectors against a {type(model).__name__}: pass a model "
                          "(anything with .fingerprint()) or its fingerprint dict")


def describe_model(model: Mapping[str, Any] | None) -> str:
    """A model fingerprint for messages: name, architecture, sizes, config hash.

    >>> describe_model({"name": "tiny", "n_layers": 4, "hidden_size": 32})
    'tiny (4 layers, d=32)'
    """
    if not model:
        return "an unknown model"
    name = model.get("name") or "an unnamed model"
    parts = [str(model["architecture"])] if model.get("architecture") else []
    if model.get("n_layers") is not None:
        parts.append(f"{model['n_layers']} layers")
    if model.get("hidden_size") is not None:
        parts.append(f"d={model['hidden_size']}")
    if model.get("vocab_size") is not None:
        parts.append(f"vocab={model['vocab_size']}")
    if model.get("config_hash"):
        parts.append(f"config {str(model['config_hash'])[:12]}")
    return f"{name} ({', '.join(parts)})" if parts else str(name)


def check_model(stored: Mapping[str, Any] | None, expected: Any,
                what: str = "vectors were") -> None:
    """Raise VectorFileError naming both models if their identifying fields differ.

    ``expected`` is a fingerprint dict or a model with ``.fingerprint()``. Fields missing or
    None on either side are not compared; the name never is (a local directory and a hub id
    can be the same model). ``what`` starts the message (``"vectors were"``).

    >>> check_model({"name": "a", "hidden_size": 32}, {"name": "b", "hidden_size": 64})
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    emolens.errors.VectorFileError: vectors were built for a (d=32), not for b (d=64) (differs ...
    """
    stored = stored or {}
    expected = model_fingerprint(expected)
    differ = [k for k in _COMPARED_KEYS
              if stored.get(k) is not None and expected.get(k) is not None
              and stored.get(k) != expected.get(k)]
    if differ:
        raise VectorFileError(f"{what} built for {describe_model(stored)}, not for "
                              f"{describe_model(expected)} (differs in {', '.join(differ)})")


def check_fit(stored: Mapping[str, Any], layers: Iterable[int], expected: Any,
               what: str) -> None:
    """The model check plus what the arrays themselves say (width and deepest layer)."""
    fp = model_fingerprint(expected)
    check_model(stored, fp, what)
    n_layers = fp.get("n_layers")
    deepest = max(layers, default=-1)
    if n_layers is not None and deepest >= int(n_layers):
        raise VectorFileError(f"{what} built for {describe_model(stored)} with layer {deepest}, "
                              f"beyond the {n_layers} layers of {describe_model(fp)}")
