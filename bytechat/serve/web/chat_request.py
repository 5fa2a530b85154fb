"""Reading and checking a chat request.

Every problem becomes a RequestError carrying an HTTP status and a one-line message that
names the field, e.g. `messages[1].role: Input should be 'system', 'user' or 'assistant'`.
Checks run cheapest first, so an oversized or mistyped body is refused before parsing:

    415  Content-Type is not application/json (this also blocks cross-site form posts,
         which cannot send application/json without a CORS preflight we never grant)
    413  body over settings.max_body_bytes (Content-Length, then the bytes actually read)
    408  body not received within settings.body_timeout_s (a stalled upload)
    400  not JSON / not UTF-8
    422  wrong shape, out-of-range values, server limits, last message not from the user

Why the last message must be from the user: the prompt ends with "assistant: ", so a
trailing assistant (or system) message would leave the model answering no one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import ClientDisconnect, Request

from bytechat.serve.generate import SamplingConfig
from bytechat.text.tokenizer import VOCAB_SIZE
from bytechat.serve.web.settings import ServerSettings

Role = Literal["system", "user", "assistant"]  # the roles of bytechat.text.chat_format.ROLES
MAX_SEED = 2**32 - 1  # also keeps seeds exact in JavaScript numbers
_DEFAULTS = SamplingConfig()


class RequestError(Exception):
    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close  # the rest of the body was not read: close the connection


class ClientGone(Exception):
    """The client disconnected before the request was read or a reply could start."""


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    role: Role
    content: str

    @field_validator("content")
    @classmethod
    def _not_blank(cls, content: str) -> str:
        if not content.strip():
            raise ValueError("must not be empty")
        return content


class ChatRequest(BaseModel):
    # strict: "0.5" is not a temperature and true is not a top_k.
    model_config = ConfigDict(strict=True, extra="forbid")

    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(default=_DEFAULTS.temperature, ge=0.0, le=10.0, allow_inf_nan=False)  # 0: greedy
    top_k: int | None = Field(default=_DEFAULTS.top_k, ge=0, le=VOCAB_SIZE)  # 0 or null: off
    top_p: float | None = Field(default=_DEFAULTS.top_p, gt=0.0, le=1.0, allow_inf_nan=False)  # 1 or null: off
    max_new_tokens: int | None = Field(default=None, ge=1)  # null: the server's default
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)  # null: a fresh random reply
    notes: bool = True  # answer from the server's notes index (when it has one)
    faithful: bool | None = None  # null: the server's setting (faithful decoding: bytechat/serve/copying.py)


@dataclass(frozen=True)
class ChatJob:
    """A checked request, in the engine's terms."""

    messages: list[dict[str, str]]
    sampling: SamplingConfig
    seed: int | None
    notes: bool = True  # the request wants the notes (if the server has an index)
    sources: tuple[dict, ...] = ()  # the note blocks put in the prompt (set by the server)


async def read_chat_request(request: Request, settings: ServerSettings) -> ChatJob:
    check_content_type(request.headers.get("content-type"))
    body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    return checked_job(parse_body(body), settings)


def check_content_type(header: str | None) -> None:
    media_type = (header or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise RequestError(415, f"Content-Type: expected application/json (got {header or 'none'})")


async def read_body(request: Request, limit: int, timeout_s: float = 30.0) -> bytes:
    """The whole body, at most limit bytes, within timeout_s; a client that leaves
    midway raises ClientGone (a normal event, not a server error)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body: {int(declared)} bytes is over the limit of {limit}", close=True)
    try:
        return await asyncio.wait_for(_read_all(request, limit), timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(408, f"body: not received within {timeout_s:g} s", close=True) from None
    except ClientDisconnect:
        raise ClientGone("the client disconnected while sending the body") from None


async def _read_all(request: Request, limit: int) -> bytes:
    # Content-Length can be absent (chunked) or wrong: count what actually arrives too.
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"body: over the limit of {limit} bytes", close=True)
    return bytes(body)


def parse_body(body: bytes) -> ChatRequest:
    try:
        return ChatRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _as_request_error(exc) from None


def checked_job(req: ChatRequest, settings: ServerSettings) -> ChatJob:
    """Limits that depend on the server's settings, then the engine's SamplingConfig."""
    if len(req.messages) > settings.max_messages:
        raise RequestError(422, f"messages: {len(req.messages)} messages is over the limit of {settings.max_messages}")
    for i, message in enumerate(req.messages):
        size = len(message.content.encode("utf-8"))
        if size > settings.max_content_bytes:
            raise RequestError(
                422, f"messages[{i}].content: {size} bytes is over the limit of {settings.max_content_bytes}"
            )
    last = len(req.messages) - 1
    if req.messages[last].role != "user":
        raise RequestError(
            422, f"messages[{last}].role: the last message must be from the user (got {req.messages[last].role!r})"
        )
    max_new_tokens = req.max_new_tokens or settings.default_new_tokens
    if max_new_tokens > settings.max_new_tokens_cap:
        raise RequestError(
            422, f"max_new_tokens: {max_new_tokens} is over this server's cap of {settings.max_new_tokens_cap}"
        )
    try:
        sampling = SamplingConfig(
            temperature=req.temperature,
            top_k=req.top_k,
            top_p=req.top_p,
            max_new_tokens=max_new_tokens,
            faithful=settings.faithful if req.faithful is None else req.faithful,
        )
    except ValueError as exc:  # the engine's own range checks, should they be stricter than ours
        raise RequestError(422, str(exc).splitlines()[0]) from None
    messages = [{"role": m.role, "content": m.content} for m in req.messages]
    return ChatJob(messages=messages, sampling=sampling, seed=req.seed, notes=req.notes)


def _as_request_error(exc: ValidationError) -> RequestError:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        reason = first.get("ctx", {}).get("error", "")
        return RequestError(400, f"body: not valid JSON ({reason})" if reason else "body: not valid JSON")
    more = f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})" if len(errors) > 1 else ""
    return RequestError(422, f"{_field_name(first['loc'])}: {_problem(first)}{more}")


def _field_name(loc: tuple) -> str:
    """('messages', 0, 'role') -> 'messages[0].role'; the top level is 'body'."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _problem(error: dict) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required"
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if kind == "model_type":
        return "expected a JSON object"
    if kind == "too_short" and error.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    return error["msg"]
