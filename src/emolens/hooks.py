"""The only code that touches a model's modules: read and write the residual stream.

Layer convention: ``layer=i`` is the output of decoder block ``i`` (0-based), which is
Hugging Face ``hidden_states[i + 1]`` and TransformerLens ``blocks.i.hook_resid_post``.

Every hook is registered inside a context manager and removed in ``finally``, so an
exception (including our own early-exit signal) never leaves a hook behind.  Block
outputs may be a bare tensor (transformers >= 5) or a tuple whose first element is
the hidden state (older code, GPT-2 style); both are handled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

#: A reducer turns one block's hidden state [B, T, d] into whatever should be kept.
Reducer = Callable[[int, torch.Tensor], Any]
#: An editor returns a delta to add to the hidden state [B, T, d], or None for no change.
Editor = Callable[[int, torch.Tensor], torch.Tensor | None]


class StopForward(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside the deepest capture hook to skip the rest of the forward pass."""


def hidden_of(output: Any) -> torch.Tensor:
    """The residual-stream tensor inside a decoder block's output."""
    return output[0] if isinstance(output, tuple) else output


def with_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """``output`` with its residual-stream tensor replaced by ``hidden``."""
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    return hidden


@contextmanager
def capture(
    layer_modules: Mapping[int, nn.Module],
    *,
    reduce: Reducer | None = None,
    stop_after: int | None = None,
) -> Iterator[dict[int, Any]]:
    """Record each listed block's output (optionally reduced) into the yielded dict.

    If ``stop_after`` is a layer id, its hook raises :class:`StopForward` once it has
    recorded, so no deeper block and no unembedding runs; wrap the forward call in
    :func:`run_capture` (or catch ``StopForward``) to use that.
    """
    store: dict[int, Any] = {}

    def make_hook(layer: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            hidden = hidden_of(output).detach()
            store[layer] = reduce(layer, hidden) if reduce is not None else hidden
            if layer == stop_after:
                raise StopForward

        return hook

    with ExitStack() as stack:
        for layer, module in layer_modules.items():
            stack.callback(module.register_forward_hook(make_hook(layer)).remove)
        yield store


def run_capture(
    forward: Callable[[], Any],
    layer_modules: Mapping[int, nn.Module],
    *,
    reduce: Reducer | None = None,
    early_exit: bool = True,
) -> dict[int, Any]:
    """Run ``forward()`` once and return every listed layer's (reduced) output.

    With ``early_exit`` the pass stops after the deepest listed layer.
    """
    stop_after = max(layer_modules) if early_exit and layer_modules else None
    with capture(layer_modules, reduce=reduce, stop_after=stop_after) as store:
        try:
            forward()
        except StopForward:
            pass
    missing = set(layer_modules) - set(store)
    if missing:  # a model that skips blocks (or a broken forward) must not go unnoticed
        raise RuntimeError(f"layers {sorted(missing)} produced no output during the forward pass")
    return store


@contextmanager
def edit_residual(layer_modules: Mapping[int, nn.Module], edit: Editor) -> Iterator[None]:
    """Add ``edit(layer, hidden)`` to each listed block's output while the context is open.

    The delta is moved to the hidden state's device and dtype, so vectors kept in fp32
    on the CPU steer a bf16 model on a GPU unchanged.
    """

    def make_hook(layer: int) -> Callable[..., Any]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            hidden = hidden_of(output)
            delta = edit(layer, hidden)
            if delta is None:
                return None
            return with_hidden(output, hidden + delta.to(device=hidden.device, dtype=hidden.dtype))

        return hook

    with ExitStack() as stack:
        for layer, module in layer_modules.items():
            stack.callback(module.register_forward_hook(make_hook(layer)).remove)
        yield


class ForwardState:
    """Where the current forward pass sits in the sequence (filled by :func:`track_forward`).

    ``offset`` is the absolute column of the forward's first new token; ``prompt_len``
    the width of the first forward of a run (the prompt, under a KV cache);
    ``pad_left`` [B] the left padding of each row in that first forward.
    """

    def __init__(self) -> None:
        self.offset = 0
        self.n_new = 0
        self.prompt_len = 0
        self.pad_left: torch.Tensor | None = None


@contextmanager
def track_forward(model: nn.Module) -> Iterator[ForwardState]:
    """Keep a :class:`ForwardState` current for every forward of ``model``.

    Under a KV cache a forward sees only new tokens; the offset lets position-aware
    hooks (steering on "prompt" or "generated" tokens) keep their meaning.  It is read
    from the attention mask (which spans past + new columns) or the cache length, so it
    works for emolens' own decoding loop and for ``model.generate`` alike.
    """
    state = ForwardState()

    def pre_hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        n_new = ids.shape[1] if ids is not None else 0
        mask = kwargs.get("attention_mask")
        cache = kwargs.get("past_key_values")
        if mask is not None and mask.dim() == 2:
            offset = mask.shape[1] - n_new
        elif cache is not None and hasattr(cache, "get_seq_length"):
            offset = int(cache.get_seq_length())
        else:
            offset = 0
        state.offset, state.n_new = offset, n_new
        if offset == 0:  # a new run: remember the prompt's shape
            state.prompt_len = n_new
            if mask is not None and mask.dim() == 2:
                state.pad_left = (mask.long().cumsum(-1) == 0).sum(-1)
            else:
                state.pad_left = None

    handle = model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield state
    finally:
        handle.remove()


def token_ranks(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each position among its sequence's real tokens (-1 on padding).

    Correct for left and right padding alike, because it counts real tokens rather
    than columns.

    >>> token_ranks(torch.tensor([[0, 1, 1], [1, 1, 0]])).tolist()
    [[-1, 0, 1], [0, 1, -1]]
    """
    mask = attention_mask.long()
    return torch.where(mask.bool(), mask.cumsum(-1) - 1, torch.full_like(mask, -1))


#: A position whose residual norm exceeds this multiple of its text's median is an
#: attention sink ("massive activation"): it carries no content and is never pooled.
SINK_RATIO = 8.0


def effective_skip(n_real: torch.Tensor, skip: int) -> torch.Tensor:
    """Tokens to skip per sequence: ``skip``, but never more than a quarter of a short text.

    A 20-token chat message is emotional from its first word; skipping half of it (as a
    fixed rule for long stories would) throws away most of the evidence.

    >>> effective_skip(torch.tensor([400, 100, 12]), 50).tolist()
    [50, 25, 3]
    """
    return torch.minimum(torch.full_like(n_real, skip), n_real // 4)


def pool_mask(attention_mask: torch.Tensor, skip: int,
              exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean [B, T] mask of the tokens pooled: content tokens after the skip.

    Content tokens are real (unpadded) tokens that ``exclude`` [B, T] does not mark
    (special tokens, chat-template tokens, the attention sink); the skip counts content
    tokens only (see :func:`effective_skip`).  A row with no content pools its real tokens.

    >>> am = torch.ones(1, 9, dtype=torch.long); ex = torch.zeros(1, 9, dtype=torch.bool)
    >>> ex[0, 0] = True  # the sink
    >>> pool_mask(am, 50, ex).long().tolist()
    [[0, 0, 0, 1, 1, 1, 1, 1, 1]]
    """
    real = attention_mask.bool()
    content = real if exclude is None else real & ~exclude.to(real.device)
    content = torch.where(content.any(-1, keepdim=True), content, real)
    ranks = torch.where(content, content.long().cumsum(-1) - 1,
                        torch.full(content.shape, -1, device=content.device))
    first = effective_skip(content.long().sum(-1), skip)
    return ranks >= first[:, None]


def drop_massive(hidden: torch.Tensor, mask: torch.Tensor, ratio: float = SINK_RATIO
                 ) -> torch.Tensor:
    """``mask`` without the positions whose norm exceeds ``ratio`` x their row's median.

    Massive-norm positions (attention sinks) appear at the same tokens across middle and
    late layers and would dominate any mean they enter.  Judged per layer on ``hidden``
    [B, T, d]; a row whose every pooled token is massive keeps its mask.

    >>> h = torch.ones(1, 4, 2); h[0, 1] *= 100
    >>> drop_massive(h, torch.ones(1, 4, dtype=torch.bool)).tolist()
    [[True, False, True, True]]
    """
    m = mask.to(hidden.device)
    norms = hidden.float().norm(dim=-1)
    med = torch.nanquantile(torch.where(m, norms, torch.nan), 0.5, dim=-1, keepdim=True)
    keep = m & ~(norms > ratio * med)
    return torch.where(keep.any(-1, keepdim=True), keep, m)


def pooled_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence float32 mean [B, d] of ``hidden`` over ``mask``, attention sinks dropped.

    >>> h = torch.ones(1, 3, 2); h[0, 0] *= 1000
    >>> pooled_mean(h, torch.ones(1, 3, dtype=torch.bool)).tolist()
    [[1.0, 1.0]]
    """
    keep = drop_massive(hidden, mask)
    counts = keep.sum(-1).clamp(min=1).to(torch.float32)
    return masked_sum(hidden, keep) / counts[:, None]


def masked_sum(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence float32 sum of ``hidden`` [B, T, d] over positions where ``mask`` [B, T]."""
    return torch.einsum("btd,bt->bd", hidden.float(), mask.to(hidden.device, torch.float32))
