"""The chat web service: one static page and a small JSON / server-sent-events API.

    GET  /             the chat page (assets under /static/, served by StaticFiles only)
    GET  /health       {"status": "ok", "model": engine.model_info, "block_size",
                        "limits": {...}, "load": {"running", "waiting"}}
    POST /chat         {"reply", "finish_reason", "n_bytes", "seconds", "bytes_per_s",
                        "abstained", "sources": [{"page", "text", "score"}, ...]}
    POST /chat/stream  text/event-stream: first `event: sources` with {"sources": [...]},
                       then `data: {"text": piece}` per decoded piece (never half a UTF-8
                       character), then `event: done` with the /chat fields (no sources),
                       or `event: error` with {"detail"} if generation fails mid-way.

With a notes index (default artifacts/notes/index.sqlite; --notes PATH, --no-notes), each
request's newest user message retrieves note blocks into the system turn of the prompt
(bytechat.notes.retrieval); `sources` lists them, best first (none when the reply is
"I couldn't find that in your notes.": `abstained`). The reply is the model's own.

Request body (application/json):

    {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...],
     "temperature"?: 0..10, "top_k"?: 0..256|null, "top_p"?: (0,1]|null,
     "max_new_tokens"?: 1..cap|null, "seed"?: 0..2**32-1|null, "notes"?: bool (default true),
     "faithful"?: bool (default the server's: true unless --no-faithful; docs/chat.md)}

The last message must be from the user. Errors are {"detail": "<field>: <problem>"} with
400 (not JSON), 408 (body too slow), 413 (body too large), 415 (not application/json),
422 (invalid field or over a limit) or 503 with Retry-After (waiting line full, a free
slot not likely within --max-wait-s or none came, or over --max-connections). Replies are decoded together in one batch
(--max-batch-size, bytechat.serve.web.workers.BatchedReplies), each as it would be alone. finish_reason is "stop" (the model ended its turn),
"length" (max_new_tokens reached), "timeout" (--timeout-s spent) or "cancelled" (the
client went away). Slow or oversized headers and too many connections are handled by
uvicorn's settings and bytechat.serve.web.guard (408, 431, 503); every accepted
connection gets an answer before it is closed (docs/web.md, "Overload"). /health leaves out where the
model was loaded from unless --health-shows-path (refused off loopback).

No CORS headers are sent, on purpose: only the page served here may call the API. The
command line (`bytechat-serve`, `make serve`) is bytechat.serve.web.cli.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bytechat.serve.generate import ChatEngine, ReplyDone, ReplyEvent
from bytechat.notes.grounded import abstains
from bytechat.notes.index import NotesIndex, NotesIndexError
from bytechat.notes.retrieval import notes_budget, retrieve_for_chat, sources_payload, with_notes
from bytechat.serve.web.chat_request import ChatJob, ClientGone, RequestError, read_chat_request
from bytechat.serve.web.guard import ConnectionCap
from bytechat.serve.web.settings import ServerSettings
from bytechat.serve.web.sse import EventStreamResponse, sse_event
from bytechat.serve.web.workers import BatchedReplies, GenerationFailed, ReplyJob, ReplyWorkers, ServerBusy

STATIC_DIR = Path(__file__).resolve().parent / "static"
log = logging.getLogger("bytechat.serve.web")

# The page uses no inline script or style and talks only to this origin.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


# ---------------------------------------------------------------- app


def create_app(engine, settings: ServerSettings | None = None, notes: NotesIndex | None = None) -> FastAPI:
    """The ASGI app around a loaded ChatEngine (no model file needed: tests pass any engine),
    answering from notes (a NotesIndex) when given."""
    settings = settings or ServerSettings()
    if settings.max_batch_size > 0 and isinstance(engine, ChatEngine):
        workers = BatchedReplies(
            engine, settings.max_batch_size, settings.max_waiting, settings.timeout_s, settings.max_wait_s
        )
    else:  # no batching asked for, or an engine that only streams replies one by one
        workers = ReplyWorkers(
            engine, settings.max_concurrency, settings.max_waiting, settings.timeout_s, settings.max_wait_s
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        workers.shutdown()  # so a graceful shutdown does not wait for long replies

    # No /docs: the Swagger page would load its scripts from a CDN.
    app = FastAPI(title="bytechat", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.engine = engine
    app.state.settings = settings
    app.state.workers = workers
    app.state.notes = notes
    app.add_middleware(ConnectionCap, max_connections=settings.max_connections, retry_after_s=workers.retry_after_s)
    app.add_middleware(SecurityHeaders)
    if settings.allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(ServerBusy, _server_busy)
    app.add_exception_handler(ClientGone, _client_gone)
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/chat", chat, methods=["POST"])
    app.add_api_route("/chat/stream", chat_stream, methods=["POST"])
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


class SecurityHeaders:
    """Plain ASGI middleware (unlike BaseHTTPMiddleware it leaves streaming untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    (k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    headers = {"Connection": "close"} if exc.close else None
    return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)


async def _server_busy(request: Request, exc: ServerBusy) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after_s)})


async def _client_gone(request: Request, exc: ClientGone) -> Response:
    # Nobody is there to read an answer; an aborted upload is routine, not a server error.
    log.debug("client left: %s", exc)
    return Response(status_code=400, headers={"Connection": "close"})


# ---------------------------------------------------------------- routes


async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


# Where the model came from: shown by /health only with settings.show_model_path.
PATH_FIELDS = ("path", "source_checkpoint")


async def health(request: Request) -> dict:
    state = request.app.state
    model = dict(state.engine.model_info)
    if not state.settings.show_model_path:
        for field in PATH_FIELDS:
            model.pop(field, None)
    return {
        "status": "ok",
        "model": jsonable_encoder(model),
        "block_size": state.engine.block_size,
        "limits": state.settings.public_limits(),
        "load": state.workers.load(),
        "notes": {"loaded": state.notes is not None, "blocks": len(state.notes) if state.notes is not None else 0},
    }


async def chat(request: Request) -> JSONResponse:
    job = await _start_job(request)
    watcher = asyncio.create_task(_cancel_on_disconnect(request, job))
    try:
        final = await job.result()
    finally:
        watcher.cancel()
        job.cancel()  # no-op when done; stops generation if this handler was cancelled
    if isinstance(final, GenerationFailed):
        return JSONResponse({"detail": final.message}, status_code=500)
    payload = done_payload(final)
    sources = [] if payload["abstained"] else list(job.work.sources)  # "not in your notes" cites none
    return JSONResponse({**payload, "sources": sources})


async def chat_stream(request: Request) -> EventStreamResponse:
    job = await _start_job(request)
    return EventStreamResponse(_sse_body(job), on_close=job.cancel)


async def _start_job(request: Request) -> ReplyJob:
    """Read the request, join the waiting line and wait for a worker (before any answer
    is sent, so that even a stream can still be refused with 503)."""
    settings = request.app.state.settings
    work = await read_chat_request(request, settings)
    work = await _add_notes(request.app, work)
    job = request.app.state.workers.start(work)
    started = asyncio.ensure_future(job.wait_started())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({started, gone}, timeout=settings.max_wait_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        started.cancel()
        gone.cancel()
    if started in done:
        return job
    job.cancel()  # leaves the waiting line at once
    if gone in done:
        raise ClientGone("the client disconnected while waiting for a free slot")
    retry = request.app.state.workers.retry_after_s()
    raise ServerBusy(
        f"server busy: no free slot within {settings.max_wait_s:g} s; try again in {retry} s", retry_after_s=retry
    )


async def _disconnected(request: Request) -> None:
    # The body is fully read, so the next message the server sends us is http.disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _cancel_on_disconnect(request: Request, job: ReplyJob) -> None:
    await _disconnected(request)
    job.cancel()


async def _add_notes(app: FastAPI, work: ChatJob) -> ChatJob:
    """work with the notes in its prompt and its sources set, when notes are loaded and wanted."""
    notes = app.state.notes
    if notes is None or not work.notes:
        return work
    budget = notes_budget(app.state.engine.block_size, work.messages)
    try:  # SQLite off the event loop (a NotesIndex is thread-safe)
        hits = await run_in_threadpool(retrieve_for_chat, notes, work.messages, budget_bytes=budget)
    except NotesIndexError as exc:  # a damaged index: answer without the notes, say so in the log
        log.error("notes: %s", exc)
        return work
    return dataclasses.replace(work, messages=with_notes(work.messages, hits), sources=tuple(sources_payload(hits)))


async def _sse_body(job: ReplyJob):
    yield sse_event({"sources": list(job.work.sources)}, event="sources")
    async for event in job.events():
        if isinstance(event, ReplyEvent):
            if event.text:
                yield sse_event({"text": event.text})
        elif isinstance(event, ReplyDone):
            yield sse_event(done_payload(event), event="done")
        else:
            yield sse_event({"detail": event.message}, event="error")


def done_payload(done: ReplyDone) -> dict:
    seconds = float(done.seconds)
    return {
        "reply": done.reply,
        "finish_reason": done.finish_reason,
        "n_bytes": int(done.n_bytes),
        "seconds": round(seconds, 4),
        "bytes_per_s": round(done.n_bytes / seconds, 1) if seconds > 0 else 0.0,
        "abstained": abstains(done.reply),  # the notes lack it: the page drops the reply's source chips
    }
