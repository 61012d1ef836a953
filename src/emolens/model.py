"""The model adapter: one causal LM with its tokenizer, layer map and input plumbing.

:class:`ModelAdapter` knows shapes and identity (fingerprint), resolves layer specs, renders
chats, turns any input (text, chat, token ids, a batch of them) into one padded batch, and
reads the residual stream through :mod:`emolens.hooks`.  It knows nothing about emotions:
the user-facing :class:`emolens.lens.LanguageModel` adds monitor / steer / generate on top.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from emolens import hooks
from emolens.architecture import ModelParts, find_parts
from emolens.errors import EmolensError, LayerError

#: TransformerLens' name for the output of block i, which is emolens layer i.
_TL_NAME = re.compile(r"blocks\.(-?\d+)\.hook_resid_post")


def default_layer(n_layers: int, among: Sequence[int] | None = None) -> int:
    """The one default layer rule: the layer nearest two thirds of the depth (of ``among``).

    Used wherever no layer is given and no vector file recommends one.

    >>> default_layer(30), default_layer(30, among=[10, 14, 25])
    (20, 25)
    """
    target = 2.0 * n_layers / 3.0
    layers = list(among) if among is not None else list(range(n_layers))
    if not layers:
        raise LayerError("no layers to choose a default from")
    return min(layers, key=lambda x: (abs(x - target), x))


#: What the one input normaliser accepts: a text, a chat, or token ids.
Input = str | Sequence[dict[str, str]] | Sequence[int]


@dataclass(frozen=True)
class Encoded:
    """One normalised input: token ids, character offsets into ``text``, ``assistant_start``.

    ``content`` lists the (start, end) token ranges of a chat's message contents (None for
    a plain text or token list): the tokens outside them belong to the chat template.
    """

    input_ids: list[int]
    offsets: list[tuple[int, int]]
    text: str
    assistant_start: int | None = None
    content: list[tuple[int, int]] | None = None


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, *, side: str = "right",
             device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Pad id rows into ``{"input_ids", "attention_mask"}`` [B, width] (left or right).

    >>> b = pad_rows([[5, 6, 7], [8]], 0, side="right")
    >>> b["input_ids"].tolist(), b["attention_mask"].tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    """
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    if not rows:
        raise EmolensError("nothing to pad: no rows")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        n = len(row)
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[i, cols] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, cols] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


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


class ModelAdapter:
    """A causal LM with its tokenizer, decoder-layer map and input plumbing.

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> lm = ModelAdapter(GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=16, n_head=2)),
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
    def max_positions(self) -> int | None:
        """The longest input the model reads: ``max_position_embeddings`` (``n_positions``
        for GPT-2 style configs) of its text config, or None when the config names none.

        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> ModelAdapter(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2,
        ...                                         n_positions=64)), None, name="t").max_positions
        64
        """
        cfg = self.config.get_text_config() if hasattr(self.config, "get_text_config") else \
            self.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    def check_length(self, encoded: Encoded, *, room: int = 0, what: str = "the input") -> None:
        """Refuse an input longer than the model's context (:attr:`max_positions`), with a
        line saying where to split it, instead of reading past the position embeddings.

        ``room`` is how many tokens must still fit after it (the new tokens of a
        generation). Texts are refused rather than read in overlapping windows: a window
        that starts mid-text reads every token with less context than the text gave it,
        so its scores would not be those of the text, and pooled summaries would mix both.

        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> lm = ModelAdapter(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2,
        ...                                              n_positions=4)), None, name="tiny")
        >>> lm.check_length(Encoded([1, 2, 3], [(0, 1), (1, 2), (2, 3)], "abc"))
        >>> too_long = Encoded([1] * 6, [(i, i + 1) for i in range(6)], "abcdef")
        >>> lm.check_length(too_long, what="the text")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        emolens.errors.EmolensError: the text 'abcdef' is 6 tokens but tiny reads at most 4 ...
        """
        limit = self.max_positions
        n = len(encoded.input_ids)
        if limit is None or n + room <= limit:
            return
        start = " ".join(encoded.text[:40].split()) if what == "the text" else ""
        label = f"{what} {start + ('...' if len(encoded.text) > 40 else '')!r}" if start \
            else what
        if room and n <= limit:
            raise EmolensError(
                f"{label} is {n:,} tokens and {room:,} more are asked for, but {self.name} "
                f"reads at most {limit:,} tokens (its context length); ask for at most "
                f"{limit - n:,} new tokens or shorten the input")
        fits = max(1, limit - room)
        end = encoded.offsets[fits - 1][1] if len(encoded.offsets) >= fits else len(encoded.text)
        raise EmolensError(
            f"{label} is {n:,} tokens but {self.name} reads at most {limit:,} (its context "
            f"length); split it into parts of at most {fits:,} tokens (the first {fits:,} "
            f"end at character {end:,}) and read each part")

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
        """Layer ids from ``"all"``, an int, a fraction, ``"0.66"``, ``"3,7"``, ``"4-9"``, or
        TransformerLens names (``"blocks.2.hook_resid_post"``: the same layer ``2``).

        >>> lm.resolve_layers("blocks.2.hook_resid_post"), lm.resolve_layers("1-3")
        ([2], [1, 2, 3])
        """
        n = self.n_layers
        if isinstance(spec, str):
            text = _TL_NAME.sub(r"\1", spec.strip().lower())
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

    def encode_input(self, item: Input, *, add_generation_prompt: bool = False,
                     room: int = 0) -> Encoded:
        """One text, chat or list of token ids as ids with offsets and ``assistant_start``.

        A raw string gets the tokenizer's special tokens (BOS); a chat goes through the
        template.  For a chat ending with an assistant message (and no generation prompt),
        ``assistant_start`` is the last token of the generation prompt before that message.
        An input longer than the model's context (plus ``room`` tokens to generate) is
        refused by :meth:`check_length`, with a line saying where to split it.
        """
        encoded = self._encode_input(item, add_generation_prompt=add_generation_prompt)
        if isinstance(item, str):
            what = "the text"
        else:
            what = "the chat" if encoded.offsets and not all(
                hasattr(t, "__index__") for t in item) else "the token list"
        self.check_length(encoded, room=room, what=what)
        return encoded

    def _encode_input(self, item: Input, *, add_generation_prompt: bool) -> Encoded:
        if isinstance(item, str):
            enc = self.tokenizer(item, add_special_tokens=True, return_offsets_mapping=True)
            return Encoded(list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]],
                           item, None)
        items = list(item)
        if not items:
            raise EmolensError("nothing to read: empty input")
        if all(hasattr(t, "__index__") and not isinstance(t, bool) for t in items):  # ids
            ids = [int(t) for t in items]
            pieces = [self.tokenizer.decode([t]) for t in ids]
            offsets, at = [], 0
            for p in pieces:
                offsets.append((at, at + len(p)))
                at += len(p)
            return Encoded(ids, offsets, "".join(pieces), None)
        if not all(isinstance(m, dict) and "role" in m and "content" in m for m in items):
            raise EmolensError("a chat is a list of {'role': ..., 'content': ...} messages")
        chat = self.encode_chat(items, add_generation_prompt=add_generation_prompt)
        a_start: int | None = chat.assistant_start if add_generation_prompt else None
        if not add_generation_prompt and items[-1].get("role") == "assistant":
            prefix = self.format_chat(items[:-1], add_generation_prompt=True)
            if chat.text.startswith(prefix):
                before = [i for i, (_s, e) in enumerate(chat.offsets) if e <= len(prefix)]
                a_start = before[-1] if before else None
        return Encoded(list(chat.input_ids), list(chat.offsets), chat.text, a_start,
                       [span for span in chat.message_tokens if span[1] > span[0]])

    def pad(self, rows: Sequence[Sequence[int]], *, side: str = "right"
            ) -> dict[str, torch.Tensor]:
        """The one padding function: ``{"input_ids", "attention_mask"}`` on the model's device.

        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> lm = ModelAdapter(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2)),
        ...                   None, name="tiny")
        >>> b = lm.pad([[5, 6, 7], [8]], side="left")
        >>> b["input_ids"].tolist(), b["attention_mask"].tolist()
        ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
        """
        pad_id = getattr(self.tokenizer, "pad_token_id", None) or 0
        return pad_rows(rows, pad_id, side=side, device=self.device)

    def batch(self, items: Sequence[Input], *, side: str = "right",
              add_generation_prompt: bool = False) -> tuple[dict[str, torch.Tensor],
                                                            list[Encoded]]:
        """Normalise texts, chats or id lists into one padded batch plus each row's encoding."""
        encoded = [self.encode_input(x, add_generation_prompt=add_generation_prompt)
                   for x in items]
        if any(not e.input_ids for e in encoded):
            raise EmolensError("every input needs at least one token")
        return self.pad([e.input_ids for e in encoded], side=side), encoded

    def encode(self, texts: Sequence[str], *, padding_side: str = "right",
               add_special_tokens: bool = True, max_length: int | None = None) -> Any:
        """Batch-tokenise raw texts onto the model's device (the tokenizer's own call)."""
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

    def pool_exclude(self, batch: Mapping[str, torch.Tensor],
                     encoded: Sequence[Encoded] | None = None) -> torch.Tensor:
        """[B, T] mask of tokens never pooled: the sink, special and chat-template tokens.

        The first real token of each row is the attention sink of every causal LM; special
        ids (BOS, EOS, ``<|im_start|>`` ...) carry no content; for a chat (``encoded``
        given) every token outside the message contents is template.  Massive-norm
        positions elsewhere are dropped per layer by :func:`emolens.hooks.pooled_mean`.

        >>> batch, enc = lm.batch(["Hello there friend", [{"role": "user", "content": "Hi"}]])
        >>> ex = lm.pool_exclude(batch, enc)
        >>> lo, hi = enc[1].content[0]  # the message "Hi": all that is left to pool
        >>> bool(ex[0, 0]), int((~ex[1] & batch["attention_mask"][1].bool()).sum()) == hi - lo
        (True, True)
        """
        mask = batch["attention_mask"].bool()
        ids = batch["input_ids"]
        special = sorted(set(getattr(self.tokenizer, "all_special_ids", None) or []))
        exclude = torch.isin(ids, torch.tensor(special, dtype=ids.dtype, device=ids.device)) \
            if special else torch.zeros_like(mask)
        ranks = hooks.token_ranks(mask)
        exclude |= ranks == 0
        for row, enc in enumerate(encoded or []):
            if enc.content is None:
                continue
            inside = torch.zeros(len(enc.input_ids), dtype=torch.bool)
            for lo, hi in enc.content:
                inside[lo:hi] = True
            cols = (ranks[row] >= 0).nonzero().flatten()
            exclude[row, cols] |= ~inside.to(exclude.device)
        return exclude


def _num(piece: str, spec: object) -> int | float:
    try:
        value = float(piece)
    except ValueError:
        raise LayerError(f"cannot read layer spec {spec!r}") from None
    return int(value) if value.is_integer() and "." not in piece else value


