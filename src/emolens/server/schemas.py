"""Request bodies of the API, checked by pydantic before anything reaches the model.

The emolens endpoints refuse unknown fields (a typo such as ``"max_tokens"`` on
``/api/generate`` is an error, not a silent default); the OpenAI-compatible endpoint
ignores the OpenAI fields it does not use, as OpenAI-compatible servers do.

>>> GenerateRequest(messages=[{"role": "user", "content": "Hi"}], steer={"calm": 0.1}).positions
'all'
>>> ProbeRequest(text="I lost my keys.").at is None
True
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChatCompletionRequest", "EmolensOptions", "GenerateRequest", "GuardSpec", "Message",
           "ProbeBatchRequest", "ProbeItem", "ProbeRequest"]

Mode = Literal["auto", "cosine", "centered", "projection"]
Position = Literal["all", "prompt", "generated", "assistant_start"]
Layers = int | float | str | list[int] | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Message(_Strict):
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    content: str


class GuardSpec(_Strict):
    """Steering that switches on when ``rule`` fires: ``{"rule": "desperate>0.05@4",
    "steer": {"calm": 0.2}}``."""

    rule: str
    steer: dict[str, float]


class _Steering(_Strict):
    steer: dict[str, float] = Field(default_factory=dict,
                                    description="emotion -> strength (fraction of the "
                                                "residual norm: 0.05 gentle, 0.5 strong)")
    steer_layers: Layers = Field(None, description="layers to steer (default: the vector "
                                                   "file's recommended layer)")
    positions: Position = "all"
    alerts: list[str] = Field(default_factory=list,
                              description="alert rules, e.g. 'desperate>0.05@4'")
    guards: list[GuardSpec] = Field(default_factory=list)
    layer: Layers = Field(None, description="read-out layer(s) (default: the file's)")
    mode: Mode | None = None
    top: int = Field(5, ge=1, le=200, description="emotions listed per token and in summaries")


class GenerateRequest(_Steering):
    """``POST /api/generate``: a chat (``messages``) or a raw text to continue (``prompt``)."""

    messages: list[Message] | None = None
    prompt: str | None = None
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0, le=100)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=2**63)
    monitor: bool = True
    scores: bool = Field(True, description="send every emotion's score per token (else the "
                                           "top ones only)")
    read_prompt: bool = Field(True, description="first send the prompt's read-out (the "
                                                "'prompt' event: one more forward pass)")


class ProbeItem(_Strict):
    """A text or a chat to read."""

    text: str | None = None
    messages: list[Message] | None = None


class ProbeRequest(ProbeItem):
    """``POST /api/probe``: ``{"text"}`` or ``{"messages"}``; ``at`` ranks one token."""

    at: Literal["pooled", "assistant_start"] | int | None = None
    top: int = Field(10, ge=1, le=200)
    layer: Layers = None
    mode: Mode | None = None
    scores: bool = Field(False, description="add every emotion's score per token")


class ProbeBatchRequest(_Strict):
    """``POST /api/probe/batch``: several texts or chats (what the page sends for a JSONL)."""

    items: list[ProbeItem]
    at: Literal["pooled", "assistant_start"] | int | None = None
    top: int = Field(10, ge=1, le=200)
    layer: Layers = None
    mode: Mode | None = None
    scores: bool = False


class EmolensOptions(_Steering):
    """The ``"emolens"`` extra body field of ``/v1/chat/completions``.

    ``monitor`` adds each token's top emotions to every chunk (and a summary at the end);
    alert rules and guards turn it on.  ``scores`` adds every emotion's score.
    """

    monitor: bool = False
    scores: bool = False


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat-completions body (the fields emolens uses; others are ignored)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=2**63)
    n: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stream_options: dict[str, Any] | None = None
    tools: list[Any] | None = None
    emolens: EmolensOptions | None = None
