"""The OpenAI-compatible endpoint: any OpenAI client can use a monitored, steered model.

``POST /v1/chat/completions`` (streaming and not) and ``GET /v1/models``.  emolens'
options travel in one extra body field, ``"emolens"`` (:class:`EmolensOptions`); with the
official client that is ``extra_body={"emolens": {...}}``::

    client = OpenAI(base_url="http://127.0.0.1:8765/v1", api_key="unused")
    client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Hi"}],
        extra_body={"emolens": {"steer": {"calm": 0.2}, "monitor": True,
                                "alerts": ["desperate>0.05@4"]}})

With ``monitor`` (or any alert rule) every streamed chunk carries an extra field
``emolens`` with its token's top emotions (``scores``: all of them) and the alerts that
fired on it; the last chunk, and a non-streamed reply, carry the summary, every alert
and each guard's report.  Sampling follows OpenAI's defaults (``temperature`` 1).

>>> from fastapi.testclient import TestClient
>>> from emolens.server import create_app
>>> client = TestClient(create_app(lm, vecs))
>>> client.get("/v1/models").json()["data"][0]["id"]
'tiny-llama'
>>> r = client.post("/v1/chat/completions", json={
...     "model": "tiny-llama", "messages": [{"role": "user", "content": "Hi"}],
...     "max_tokens": 3, "temperature": 0, "emolens": {"monitor": True}})
>>> r.json()["object"], len(r.json()["emolens"]["tokens"]) == r.json()["usage"]["completion_tokens"]
('chat.completion', True)
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from emolens.errors import EmolensError
from emolens.server.jobs import plan_generation, read_options, run_generation
from emolens.server.limits import (
    ApiError,
    check_chat,
    check_new_tokens,
    check_rules,
    error_body,
)
from emolens.server.schemas import ChatCompletionRequest, EmolensOptions
from emolens.server.slot import TicketStream

__all__ = ["DEFAULT_MAX_TOKENS", "chat_messages", "model_ids", "router"]

logger = logging.getLogger(__name__)
router = APIRouter(tags=["OpenAI-compatible"])
#: Tokens generated when a request names no max_tokens (capped by the server's limit).
DEFAULT_MAX_TOKENS = 256
_STARTED = int(time.time())


def model_ids(lm: Any) -> list[str]:
    """The model id this server answers to first, then its aliases."""
    return [lm.name, "emolens", "default"]


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """OpenAI messages -> emolens chat messages (text content only).

    >>> chat_messages([{"role": "developer", "content": "Be brief."},
    ...                {"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}]
    """
    out = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise ApiError(400, f"messages[{i}].role {role!r} is not supported; use system, "
                                "user or assistant")
        content = m.get("content")
        if content is None and role == "assistant":
            content = ""
        if isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text" \
                        or not isinstance(part.get("text"), str):
                    raise ApiError(400, f"messages[{i}].content: only text parts are supported")
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string or text parts")
        out.append({"role": role, "content": content})
    return out


def _data(obj: Any) -> str:
    """One OpenAI-style stream line: ``data: {json}`` and a blank line."""
    return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"


def _token_extra(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k in ("index", "id", "token", "top", "scores",
                                                     "alerts")}


def _final_extra(done: dict[str, Any]) -> dict[str, Any]:
    keep = ("steer", "summary", "alerts", "guards", "n_tokens")
    return {k: done[k] for k in keep if k in done}


@router.get("/v1/models", summary="The model this server serves (OpenAI format)")
async def models(request: Request) -> dict[str, Any]:
    lm = request.app.state.lm
    return {"object": "list", "data": [{"id": lm.name, "object": "model",
                                        "created": _STARTED, "owned_by": "emolens"}]}


@router.post("/v1/chat/completions",
             summary="Chat completion, optionally steered and monitored (OpenAI format)",
             responses={200: {"content": {"application/json": {}, "text/event-stream": {}}}})
async def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
    state = request.app.state
    lm, vecs, limits, slot = state.lm, state.vecs, state.limits, state.slot
    if req.model not in model_ids(lm):
        raise ApiError(404, f"model {req.model!r} is not served here; this server serves "
                            f"{lm.name!r} (see GET /v1/models)", code="model_not_found")
    if req.n not in (None, 1):
        raise ApiError(400, "n must be 1: this server generates one choice per request")
    if req.tools:
        raise ApiError(400, "tools are not supported by this server")
    if req.stop:
        raise ApiError(400, "stop sequences are not supported by this server")
    messages = chat_messages(req.messages)
    check_chat(messages, limits)
    max_tokens = req.max_completion_tokens or req.max_tokens \
        or min(DEFAULT_MAX_TOKENS, limits.max_new_tokens)
    check_new_tokens(max_tokens, limits,
                     "max_completion_tokens" if req.max_completion_tokens else "max_tokens")
    opts = req.emolens or EmolensOptions()
    check_rules(opts.steer, opts.alerts, [(g.rule, g.steer) for g in opts.guards], limits)
    plan = plan_generation(
        lm, vecs, prompt=messages, steer=opts.steer, steer_layers=opts.steer_layers,
        positions=opts.positions, alerts=opts.alerts,
        guards=[(g.rule, g.steer) for g in opts.guards], monitor=opts.monitor,
        max_new_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p, seed=req.seed,
        **read_options(opts.layer, opts.mode, state.defaults), top=opts.top,
        full_scores=opts.scores, read_prompt=False)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    base = {"id": completion_id, "created": created, "model": lm.name,
            "system_fingerprint": None}
    ticket = slot.admit()
    cancel = threading.Event()

    def finish_reason(done: dict[str, Any]) -> str:
        return "stop" if done["finished"] else "length"

    def usage(done: dict[str, Any]) -> dict[str, int]:
        p = int(done.get("prompt_tokens") or 0)
        return {"prompt_tokens": p, "completion_tokens": done["n_tokens"],
                "total_tokens": p + done["n_tokens"]}

    if not req.stream:
        try:
            events = await slot.call(lambda: list(run_generation(lm, vecs, plan)),
                                     ticket=ticket)
        finally:
            ticket.release()
        done = events[-1]["data"]
        extra = _final_extra(done)
        if plan.monitor:
            extra["tokens"] = [_token_extra(e["data"]) for e in events if e["event"] == "token"]
        return {**base, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": done["text"]},
                             "logprobs": None, "finish_reason": finish_reason(done)}],
                "usage": usage(done), "emolens": extra}

    include_usage = bool((req.stream_options or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], reason: str | None = None, **more: Any) -> str:
        body = {**base, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": reason}], **more}
        return _data(body)

    # the model thread checks the prompt's length first: too long is a 400, not a chunk
    _start, rest = await slot.open_stream(lambda: run_generation(lm, vecs, plan),
                                          ticket=ticket, cancel=cancel)

    async def stream() -> AsyncIterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        shown = []
        try:
            async for ev in rest:
                data = ev["data"]
                if ev["event"] == "token":
                    extra = _token_extra(data) if plan.monitor or data["alerts"] else None
                    shown.append(data["token"])
                    yield chunk({"content": data["token"]},
                                **({"emolens": extra} if extra is not None else {}))
                elif ev["event"] == "done":
                    so_far = "".join(shown)
                    if data["text"].startswith(so_far) and len(data["text"]) > len(so_far):
                        # a character cut off by the token limit, held back while streaming
                        yield chunk({"content": data["text"][len(so_far):]})
                    yield chunk({}, finish_reason(data), emolens=_final_extra(data))
                    if include_usage:
                        yield _data({**base, "object": "chat.completion.chunk",
                                     "choices": [], "usage": usage(data)})
        except EmolensError as exc:
            yield _data(error_body(str(exc)))
        except Exception as exc:
            logger.exception("generation failed")
            yield _data(error_body(f"internal error ({type(exc).__name__})",
                                   kind="server_error"))
        yield "data: [DONE]\n\n"

    return TicketStream(stream(), ticket, cancel, media_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

