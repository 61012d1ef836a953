"""Where each architecture keeps its decoder blocks, final norm and unembedding.

Hugging Face models do not agree on attribute names (``model.layers`` for Llama,
``transformer.h`` for GPT-2, ...).  All guessing lives here, so the rest of emolens
asks one question: "give me the blocks".  Unknown layouts fail loudly, naming the
model class, rather than silently hooking the wrong module.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from emolens.errors import ArchitectureError

# Paths tried in order; the first that resolves to an nn.ModuleList wins.
LAYER_PATHS: tuple[str, ...] = (
    "model.layers",  # Llama, Mistral, Qwen2, Gemma 1-3, Phi-3, Phi
    "model.language_model.layers",  # Gemma 3n/4 and other multimodal wrappers
    "language_model.model.layers",
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "backbone.layers",  # Mamba
    "transformer.blocks",  # MPT
    "layers",  # a bare decoder stack
)

FINAL_NORM_PATHS: tuple[str, ...] = (
    "model.norm",
    "model.language_model.norm",
    "language_model.model.norm",
    "model.final_layernorm",  # Phi
    "transformer.ln_f",
    "gpt_neox.final_layer_norm",
    "model.decoder.final_layer_norm",
    "backbone.norm_f",
    "transformer.norm_f",
)


@dataclass(frozen=True)
class ModelParts:
    """The modules emolens needs from a causal LM."""

    layers: nn.ModuleList
    layers_path: str
    final_norm: nn.Module | None
    unembed: nn.Module | None


def _resolve(root: nn.Module, path: str) -> nn.Module | None:
    node: object = root
    for name in path.split("."):
        node = getattr(node, name, None)
        if node is None:
            return None
    return node if isinstance(node, nn.Module) else None


def find_parts(model: nn.Module) -> ModelParts:
    """Locate decoder blocks, final norm and unembedding of ``model``.

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> parts = find_parts(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2)))
    >>> parts.layers_path, len(parts.layers)
    ('transformer.h', 2)
    """
    for path in LAYER_PATHS:
        layers = _resolve(model, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            break
    else:
        raise ArchitectureError(
            f"cannot find the decoder layers of {type(model).__name__}: tried "
            + ", ".join(LAYER_PATHS)
        )
    final_norm = next(
        (m for m in (_resolve(model, p) for p in FINAL_NORM_PATHS) if m is not None), None
    )
    get_out = getattr(model, "get_output_embeddings", None)
    unembed = get_out() if callable(get_out) else None
    return ModelParts(layers=layers, layers_path=path, final_norm=final_norm, unembed=unembed)
