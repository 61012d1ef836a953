"""The FastAPI app: the page, the JSON/SSE API, the OpenAI-compatible endpoint.

Endpoints (documented at ``/docs``, spec at ``/openapi.json``):

* ``GET /`` — the page (``server/static``, plain JavaScript and CSS, nothing from a CDN);
* ``GET /api/health``, ``GET /api/info``, ``GET /api/emotions``;
* ``POST /api/probe`` (``{"text"}`` or ``{"messages"}``) and ``POST /api/probe/batch``;
* ``POST /api/generate`` — server-sent events (after the request passed every check,
  the context length included): ``prompt`` (the prompt's read-out, unless
  ``read_prompt`` is false), one
  ``token`` per generated token (scores, alerts), ``done`` (reply, summary, guards), or
  ``error``;
* ``GET /v1/models``, ``POST /v1/chat/completions`` (see :mod:`emolens.server.openai_api`);
* ``/report/`` — the ``--report`` folder, when one is given.

The server reads files only from its own ``static`` folder and the report folder given
at start; no request names a file.

>>> from fastapi.testclient import TestClient
>>> client = TestClient(create_app(lm, vecs))
>>> client.get("/api/health").json()["status"]
'ok'
>>> r = client.post("/api/probe", json={"text": "I lost my keys.", "top": 2})
>>> r.status_code, len(r.json()["summary"])
(200, 2)
>>> bad = client.post("/api/probe", json={"text": "x", "at": "assistant_start"})
>>> bad.status_code, bad.json()["error"]["message"]
(400, "at='assistant_start' needs a chat (messages); a plain text has no assistant turn")
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from emolens import __version__
from emolens.errors import EmolensError
from emolens.server.jobs import plan_generation, read_options, run_generation, run_probe
from emolens.server.limits import (
    ApiError,
    BodyLimit,
    Limits,
    check_chat,
    check_new_tokens,
    check_rules,
    check_text,
    error_body,
)
from emolens.server.schemas import (
    GenerateRequest,
    Message,
    ProbeBatchRequest,
    ProbeItem,
    ProbeRequest,
)
from emolens.server.slot import Busy, ModelSlot, TicketStream

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = ["STATIC_DIR", "create_app", "sse"]

logger = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"


def sse(event: str, data: Any) -> str:
    """One server-sent event: ``event: NAME`` and one line of JSON data.

    >>> sse("token", {"token": "Hi"})
    'event: token\\ndata: {"token":"Hi"}\\n\\n'
    """
    line = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {line}\n\n"


def _chat(messages: list[Message]) -> list[dict[str, str]]:
    return [m.model_dump() for m in messages]


def _item(item: ProbeItem, limits: Limits) -> Any:
    if (item.text is None) == (item.messages is None):
        raise ApiError(400, "send exactly one of 'text' or 'messages'")
    if item.text is not None:
        if not item.text.strip():
            raise ApiError(400, "text is empty")
        check_text(item.text, limits)
        return item.text
    chat = _chat(item.messages or [])
    check_chat(chat, limits)
    return chat


def _validation_message(exc: RequestValidationError) -> str:
    errors = list(exc.errors())
    if not errors:
        return "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return f"malformed JSON body: {ctx.get('error', first.get('msg'))}"
    loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    msg = first.get("msg", "invalid value")
    if first.get("type") == "missing":
        msg = "field required"
    elif first.get("type") == "extra_forbidden":
        msg = "unknown field"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{loc or 'body'}: {msg}{more}"


# ---- the app ---------------------------------------------------------------------------------
def create_app(lm: LanguageModel, vecs: EmotionVectors, report_dir: str | Path | None = None,
               limits: Limits | None = None, *, layer: Any = None, mode: str = "auto"
               ) -> FastAPI:
    """The web app serving ``lm`` monitored and steered with ``vecs``.

    ``report_dir`` (an ``emolens report`` folder) is served under ``/report/``; ``limits``
    bounds every request (:class:`emolens.server.limits.Limits`); ``layer`` and ``mode``
    are the read-out used when a request names none (default: the vector file's layer,
    ``auto`` mode).  Run it with uvicorn (``emolens serve`` does), or drive it with
    FastAPI's ``TestClient``.
    """
    from emolens.readout import read_layers, resolve_mode
    from emolens.server.openai_api import router as openai_router
    from emolens.steer import MAX_STRENGTH, NAMED_POSITIONS

    vecs.check_model(lm)
    read_out = read_layers(lm, vecs, layer)  # a bad default layer fails at start
    mode = resolve_mode(vecs, mode)
    defaults = {"layer": None if layer in (None, "") else read_out, "mode": mode}
    limits = limits or Limits()
    slot = ModelSlot(max_queue=limits.max_queue, stall_s=limits.stall_s)
    report = None
    if report_dir is not None:
        report = Path(report_dir).resolve()
        if not report.is_dir():
            raise EmolensError(f"report folder {str(report_dir)!r} is not a folder")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        slot.close()

    app = FastAPI(title="emolens", version=__version__, lifespan=lifespan,
                  description="Watch a language model's emotion concepts token by token, "
                              "steer them, and set alarms on them.")
    app.state.lm, app.state.vecs, app.state.limits, app.state.slot = lm, vecs, limits, slot
    model_info = lm.info()
    info = {
        "emolens": __version__,
        "model": model_info,
        "vectors": {"n_emotions": len(vecs), "layers": list(vecs.layers),
                    "default_layer": vecs.default_layer, "mode": mode,
                    "token_skip": vecs.meta.get("token_skip"),
                    "model": (vecs.meta.get("model") or {}).get("name")},
        "read_out_layers": read_out,
        "n_layers": lm.n_layers,
        "positions": list(NAMED_POSITIONS),
        "max_strength": MAX_STRENGTH,
        "limits": limits.as_json(),
        "report": "/report/" if report is not None else None,
    }
    app.state.info = info
    app.state.defaults = defaults

    # ---- errors: one JSON shape, one line -----------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(EmolensError)
    async def _emolens_error(_r: Request, exc: EmolensError) -> JSONResponse:
        return JSONResponse(error_body(str(exc)), status_code=400)

    @app.exception_handler(Busy)
    async def _busy(_r: Request, exc: Busy) -> JSONResponse:
        return JSONResponse(error_body(str(exc), kind="server_overloaded", code="busy"),
                            status_code=503, headers={"Retry-After": str(limits.retry_after_s)})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(_validation_message(exc)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            message = "not found"
        return JSONResponse(error_body(message, kind="not_found_error" if exc.status_code == 404
                                       else "invalid_request_error"),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(_r: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error")
        return JSONResponse(error_body(f"internal error ({type(exc).__name__}); see the server "
                                       "log", kind="server_error"), status_code=500)

    # ---- the page and files ---------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if report is not None:
        app.mount("/report", StaticFiles(directory=report, html=True), name="report")

    # ---- the API ---------------------------------------------------------------------------
    @app.get("/api/health", summary="Is the server up, and how busy is the model")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **slot.stats()}

    @app.get("/api/info", summary="Model, vector file, read-out layer, limits")
    async def get_info() -> dict[str, Any]:
        return info

    @app.get("/api/emotions", summary="The emotions of the vector file, in score order")
    async def emotions() -> dict[str, Any]:
        return {"emotions": list(vecs.emotions), "count": len(vecs)}

    @app.post("/api/probe", summary="Read a text or a chat: per-token emotions and summary")
    async def probe(req: ProbeRequest) -> dict[str, Any]:
        item = _item(req, limits)
        out = await slot.call(lambda: run_probe(lm, vecs, [item], at=req.at, top=req.top,
                                                **read_options(req.layer, req.mode, defaults),
                                                full_scores=req.scores))
        return out[0]

    @app.post("/api/probe/batch", summary="Read several texts or chats (e.g. a JSONL file)")
    async def probe_batch(req: ProbeBatchRequest) -> dict[str, Any]:
        if not req.items:
            raise ApiError(400, "items is empty")
        if len(req.items) > limits.max_batch:
            raise ApiError(400, f"{len(req.items)} items is over this server's batch limit of "
                                f"{limits.max_batch}")
        items = [_item(x, limits) for x in req.items]
        check_text("".join(x if isinstance(x, str) else "".join(m["content"] for m in x)
                           for x in items), limits, "the batch")
        out = await slot.call(lambda: run_probe(lm, vecs, items, at=req.at, top=req.top,
                                                **read_options(req.layer, req.mode, defaults),
                                                full_scores=req.scores))
        return {"results": out}

    @app.post("/api/generate", summary="Generate a reply as server-sent events",
              response_class=StreamingResponse,
              responses={200: {"content": {"text/event-stream": {}},
                               "description": "events prompt, token..., done (or error)"}})
    async def generate(req: GenerateRequest) -> Response:
        if (req.messages is None) == (req.prompt is None):
            raise ApiError(400, "send exactly one of 'messages' (a chat) or 'prompt' (raw text)")
        if req.messages is not None:
            prompt: Any = _chat(req.messages)
            check_chat(prompt, limits)
        else:
            prompt = req.prompt or ""
            if not prompt.strip():
                raise ApiError(400, "prompt is empty")
            check_text(prompt, limits, "prompt")
        check_new_tokens(req.max_new_tokens, limits)
        check_rules(req.steer, req.alerts, [(g.rule, g.steer) for g in req.guards], limits)
        plan = plan_generation(
            lm, vecs, prompt=prompt, steer=req.steer, steer_layers=req.steer_layers,
            positions=req.positions, alerts=req.alerts,
            guards=[(g.rule, g.steer) for g in req.guards], monitor=req.monitor,
            max_new_tokens=req.max_new_tokens, temperature=req.temperature, top_p=req.top_p,
            seed=req.seed, **read_options(req.layer, req.mode, defaults), top=req.top,
            full_scores=req.scores, read_prompt=req.read_prompt)
        ticket = slot.admit()
        cancel = threading.Event()

        def events() -> Iterator[dict[str, Any]]:
            return run_generation(lm, vecs, plan)

        # the first event ("start") comes after the model thread checked the prompt's
        # length: a prompt too long for the context is still a 400, not an error event
        _start, rest = await slot.open_stream(events, ticket=ticket, cancel=cancel)

        async def body() -> AsyncIterator[str]:
            try:
                async for ev in rest:
                    yield sse(ev["event"], ev["data"])
            except EmolensError as exc:
                yield sse("error", error_body(str(exc)))
            except Exception as exc:  # the stream has started: report in-band
                logger.exception("generation failed")
                yield sse("error", error_body(f"internal error ({type(exc).__name__}); see "
                                              "the server log", kind="server_error"))

        return TicketStream(body(), ticket, cancel, media_type="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    app.include_router(openai_router)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    return app
