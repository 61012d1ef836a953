"""What one request may ask of the server, and the one shape every refusal takes.

Every refusal is a JSON body ``{"error": {"message", "type", "code"}}`` (the shape OpenAI
clients parse) with a 4xx status, or 503 with ``Retry-After`` when the model is busy.

>>> Limits().max_new_tokens, Limits(max_queue=0).max_queue
(512, 0)
>>> ApiError(400, "unknown emotion 'glee'").body()["error"]["message"]
"unknown emotion 'glee'"
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from starlette.exceptions import HTTPException

__all__ = ["MAX_RULE_CHARS", "ApiError", "BodyLimit", "Limits", "check_chat", "check_new_tokens",
           "check_rules", "check_text", "error_body"]

#: Longest alert rule accepted (real rules are a few dozen characters).
MAX_RULE_CHARS = 200


@dataclass(frozen=True)
class Limits:
    """Bounds on one request; anything beyond them gets a clear 4xx.

    ``max_queue`` requests may wait while one runs; one more gets 503 with
    ``Retry-After: retry_after_s``.  ``stall_s`` ends a stream whose client stopped reading.

    >>> Limits(max_new_tokens=64).as_json()["max_new_tokens"]
    64
    """

    max_body_bytes: int = 1_000_000
    max_text_chars: int = 20_000
    max_messages: int = 64
    max_new_tokens: int = 512
    max_batch: int = 32
    max_rules: int = 16
    max_steer: int = 16
    max_queue: int = 4
    retry_after_s: int = 2
    stall_s: float = 60.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0 or (value == 0 and name != "max_queue"):
                raise ValueError(f"limit {name} must be positive, got {value}")

    def as_json(self) -> dict[str, Any]:
        """The limits as ``/api/info`` reports them."""
        return asdict(self)


def error_body(message: str, *, kind: str = "invalid_request_error",
               code: str | None = None) -> dict[str, Any]:
    """``{"error": {...}}``, the body of every refusal (one line of message).

    >>> error_body("too long\\n  really")["error"]["message"]
    'too long really'
    """
    return {"error": {"message": " ".join(str(message).split()), "type": kind, "code": code}}


class ApiError(Exception):
    """A refusal with its HTTP status; the app turns it into :func:`error_body` JSON."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}

    @property
    def kind(self) -> str:
        """The OpenAI error type for this status."""
        return {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
                503: "server_overloaded"}.get(self.status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        """The JSON body of this refusal."""
        return error_body(self.message, kind=self.kind, code=self.code)


class _TooLarge(HTTPException):
    """Raised while reading a body past the limit; FastAPI's handlers turn it into 413."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413 before parsing.

    A declared ``Content-Length`` over the limit is refused before any byte is read; a
    body that streams past it is cut off when it crosses the limit.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the request on, counting body bytes; answer 413 past the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = (f"request body too large: the limit is {self.max_bytes} bytes "
                   f"(Limits.max_body_bytes)")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, error_body(message, code="body_too_large"))
            return
        seen = 0
        started = False

        async def counted_receive() -> Any:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(message)
            return msg

        async def tracked_send(msg: Any) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, error_body(message, code="body_too_large"))


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


# ---- request checks shared by every endpoint -------------------------------------------------
def check_text(text: str, limits: Limits, what: str = "text") -> None:
    """Refuse text longer than ``limits.max_text_chars`` (413).

    >>> check_text("x" * 30, Limits(max_text_chars=10))
    Traceback (most recent call last):
    emolens.server.limits.ApiError: text has 30 characters; this server's limit is 10
    """
    if len(text) > limits.max_text_chars:
        raise ApiError(413, f"{what} has {len(text)} characters; this server's limit is "
                            f"{limits.max_text_chars}", code="text_too_long")


def check_chat(messages: Sequence[Mapping[str, str]], limits: Limits) -> None:
    """Refuse an empty chat (400), too many messages (400) or too much text (413)."""
    if not messages:
        raise ApiError(400, "messages is empty: send at least one message")
    if len(messages) > limits.max_messages:
        raise ApiError(400, f"{len(messages)} messages is over this server's limit of "
                            f"{limits.max_messages}")
    check_text("".join(m["content"] for m in messages), limits, "the messages")


def check_rules(steer: Mapping[str, float], alerts: Sequence[str],
                guards: Sequence[tuple[str, Mapping[str, float]]], limits: Limits) -> None:
    """Refuse more steering entries or alert rules than the limits allow (400).

    >>> check_rules({}, ["calm>0.1"] * 3, [], Limits(max_rules=2))
    Traceback (most recent call last):
    emolens.server.limits.ApiError: 3 alert rules and guards is over this server's limit of 2
    """
    if len(alerts) + len(guards) > limits.max_rules:
        raise ApiError(400, f"{len(alerts) + len(guards)} alert rules and guards is over this "
                            f"server's limit of {limits.max_rules}")
    for what, s in [("steer", steer)] + [("guard steer", g[1]) for g in guards]:
        if len(s) > limits.max_steer:
            raise ApiError(400, f"{len(s)} {what} entries is over this server's limit of "
                                f"{limits.max_steer}")
    for rule in [*alerts, *(g[0] for g in guards)]:
        if len(rule) > MAX_RULE_CHARS:
            raise ApiError(400, f"alert rule too long ({len(rule)} characters, limit "
                                f"{MAX_RULE_CHARS})")


def check_new_tokens(n: int, limits: Limits, name: str = "max_new_tokens") -> None:
    """Refuse a generation longer than ``limits.max_new_tokens`` (400)."""
    if n > limits.max_new_tokens:
        raise ApiError(400, f"{name}={n} is over this server's limit of "
                            f"{limits.max_new_tokens}")
