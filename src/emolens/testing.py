"""Tiny randomly initialised models and vector files, built in-process in milliseconds.

For tests, doctests and examples that must not download anything:

>>> from emolens.testing import tiny_lm, tiny_vectors
>>> lm = tiny_lm("llama")
>>> vecs = tiny_vectors(lm)
>>> lm.n_layers, lm.hidden_size, len(vecs), vecs.default_layer
(4, 32, 6, 2)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from emolens.lens import LanguageModel
from emolens.vectors import EmotionVectors

#: The emotions of :func:`tiny_vectors`.
TINY_EMOTIONS = ("calm", "desperate", "happy", "sad", "afraid", "angry")

ARCHITECTURES = ("llama", "qwen2", "gemma2", "gpt2")
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "I feel calm today, the rain is soft and the tea is warm.",
    "She was furious when the letter arrived late again!",
    "How does he feel? He feels happy and proud of his work.",
    "Numbers 0123456789 and punctuation: ; , . ? ! ' \" ( )",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]


@functools.cache
def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer trained in milliseconds, with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_TRAINING_TEXT * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                   eos_token="<|im_end|>", bos_token="<|im_start|>")
    fast.chat_template = CHATML
    return fast


def tiny_model(arch: str, n_layers: int = 4, d: int = 32, seed: int = 0) -> Any:
    """A random ``arch`` causal LM (llama, qwen2, gemma2, gpt2) sized for milliseconds."""
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    vocab = len(tiny_tokenizer())
    torch.manual_seed(seed)
    # RoPE models: the context length changes no weight, so give them room for long prompts
    common = dict(vocab_size=vocab, num_hidden_layers=n_layers, hidden_size=d,
                  intermediate_size=2 * d, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=4096, pad_token_id=0, eos_token_id=2)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif arch == "gemma2":
        model = Gemma2ForCausalLM(Gemma2Config(**common, head_dim=8))
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_layer=n_layers, n_embd=d,
                                           n_head=4, n_positions=256, eos_token_id=2,
                                           bos_token_id=1, pad_token_id=0))
    else:  # pragma: no cover
        raise ValueError(arch)
    return model.eval()


def tiny_lm(arch: str = "llama", **kwargs: Any) -> LanguageModel:
    """A :class:`LanguageModel` around :func:`tiny_model` and :func:`tiny_tokenizer`."""
    return LanguageModel(tiny_model(arch, **kwargs), tiny_tokenizer(), name=f"tiny-{arch}")




def tiny_vectors(lm: LanguageModel, emotions: Sequence[str] = TINY_EMOTIONS, seed: int = 0,
                 ) -> EmotionVectors:
    """Random unit directions for ``emotions`` at every layer of ``lm``, with the model's
    fingerprint and residual norms measured on a short neutral text (so steering works)."""
    rng = np.random.default_rng(seed)
    n_layers, d = lm.n_layers, lm.hidden_size
    raw = rng.normal(size=(len(emotions), n_layers, d)).astype(np.float32)
    directions = raw / np.linalg.norm(raw, axis=2, keepdims=True)
    batch = lm.pad([lm.encode_input("The kettle boils and the clock ticks.").input_ids])
    with torch.inference_mode():
        store = lm.residuals(batch, list(range(n_layers)), early_exit=False)
    norms = np.array([float(store[i][0].float().norm(dim=-1).median()) for i in range(n_layers)],
                     np.float32)
    meta = {"model": lm.fingerprint(), "token_skip": 0, "recommended_layer": n_layers // 2,
            "corpus_fingerprint": "tiny-random"}
    return EmotionVectors(tuple(emotions), tuple(range(n_layers)), directions, raw,
                          norms, norms, meta, np.zeros((n_layers, d), np.float32))
