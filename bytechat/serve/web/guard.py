"""Connection-level limits for the chat server: what uvicorn offers, plus what it lacks.

uvicorn's own settings cover part of it (see uvicorn_options):

    timeout_keep_alive              how long an idle keep-alive connection stays open
    h11_max_incomplete_event_size   the most header bytes h11 buffers for one request

GuardedH11Protocol (uvicorn's h11 protocol, subclassed) adds the rest, so that every
connection the server accepts ends with an HTTP answer, or is closed after one:

- a time limit on receiving a request's headers: not complete within header_timeout_s,
  408 and the connection is closed (uvicorn has none; a client sending nothing, or one
  byte at a time, would hold its connection forever);
- 431 for oversized headers (uvicorn answers 400, and h11 checks only incomplete ones);
- a lingering close: an answer sent before the request was read in full (503, 408, 413,
  431) is followed by a half-close, and what the client still sends is read and dropped
  for a moment before the socket closes. Closing at once with unread bytes makes the
  kernel send a reset, and a client still writing its body gets "connection reset"
  instead of the answer that was already on its way;
- the number of open connections, handed to the app with each request (scope
  extension OPEN_CONNECTIONS), where ConnectionCap answers over --max-connections with
  a JSON 503 and Retry-After. uvicorn's limit_concurrency answered a bare 503 with no
  Retry-After and closed without reading the body, so it is not used.

A slow body is timed in the app (bytechat.serve.web.chat_request.read_body).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import h11
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from bytechat.serve.web.settings import ServerSettings

OPEN_CONNECTIONS = "bytechat.open_connections"  # scope["extensions"] key set by GuardedH11Protocol
LINGER_S = 2.0  # after an early answer: longest wait for the client to stop sending
LINGER_BYTES = 1 << 20  # ... and the most bytes read and dropped meanwhile


def _header_bytes(event: h11.Request) -> int:
    """About the size of the request line and headers on the wire."""
    return len(event.method) + len(event.target) + 12 + sum(len(k) + len(v) + 4 for k, v in event.headers)


def _plain_response(status: int, reason: str, text: str) -> bytes:
    body = text.encode("ascii")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class LingeringTransport:
    """An asyncio transport whose close() half-closes (after what was written) and lets
    the protocol drop what still arrives, closing for good on the client's EOF, after
    LINGER_S, or after LINGER_BYTES. Everything else goes to the real transport."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self.lingering = False
        self.dropped = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.is_closing():
            return
        if not self._transport.can_write_eof():
            self._transport.close()
            return
        self.lingering = True
        try:
            self._transport.write_eof()  # after the buffered answer: FIN, not a reset
            self._transport.resume_reading()  # flow control may have paused it
        except (OSError, RuntimeError):
            self._transport.close()
            return
        self._timer = self._loop.call_later(LINGER_S, self.close_now)

    def drop(self, data: bytes) -> None:
        """Bytes that arrived while lingering: ignored, up to LINGER_BYTES."""
        self.dropped += len(data)
        if self.dropped > LINGER_BYTES:
            self.close_now()

    def close_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport.close()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a time limit on each request's headers (408), 431
    for headers over h11_max_incomplete_event_size, a lingering close, and the open
    connection count in each request's scope. Configure through guarded_protocol()."""

    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._error_hint = 400
        self._answered = False  # has this connection sent a response yet?
        limit = self.config.h11_max_incomplete_event_size or 16 * 1024  # h11's default
        next_event = self.conn.next_event

        def checked_next_event():
            # h11 refuses (hint 431) headers over the limit only while they are incomplete;
            # a whole oversized block that arrives in one read is refused here. uvicorn
            # answers any RemoteProtocolError with send_400_response, which reads the hint.
            try:
                event = next_event()
            except h11.RemoteProtocolError as exc:
                self._error_hint = exc.error_status_hint
                raise
            if isinstance(event, h11.Request) and _header_bytes(event) > limit:
                self._error_hint = 431
                raise h11.RemoteProtocolError("request headers too large", error_status_hint=431)
            return event

        self.conn.next_event = checked_next_event
        app, connections = self.app, self.connections

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            scope.setdefault("extensions", {})[OPEN_CONNECTIONS] = len(connections)
            await app(scope, receive, send)

        self.app = counted

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(LingeringTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if isinstance(self.transport, LingeringTransport) and self.transport.lingering:
            self.transport.close_now()  # (cancels the linger timer)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.lingering:  # an answer was sent and the connection is closing
            self.transport.drop(data)
            return
        super().data_received(data)

    def eof_received(self) -> bool | None:
        if self.transport.lingering:
            self.transport.close_now()
        return super().eof_received()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        self._answered = True
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's headers get the same limit

    def send_400_response(self, msg: str) -> None:
        if self._error_hint == 431:
            self.logger.warning("Request headers too large.")
            self.transport.write(_plain_response(431, "Request Header Fields Too Large", "request headers too large"))
            self.transport.close()
            return
        super().send_400_response(msg)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        # Part of a request came, or nothing ever did: say why the connection closes. An
        # idle keep-alive connection after an answer just closes (uvicorn's keep-alive
        # timeout usually comes first).
        if self.conn.trailing_data[0] or not self._answered:
            self.transport.write(_plain_response(408, "Request Timeout", "request headers not received in time"))
        self.transport.close()


class ConnectionCap:
    """ASGI middleware: with more than max_connections open (as GuardedH11Protocol counts
    them), a request gets 503, Retry-After, a one-line JSON detail, and the connection is
    closed (lingering, so the answer arrives). Without the count (another server, tests
    in-process) it lets everything through."""

    def __init__(self, app: ASGIApp, max_connections: int, retry_after_s: Callable[[], int]) -> None:
        self.app = app
        self.max_connections = max_connections
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        open_now = scope.get("extensions", {}).get(OPEN_CONNECTIONS) if scope["type"] == "http" else None
        if open_now is None or open_now <= self.max_connections:
            await self.app(scope, receive, send)
            return
        retry = self.retry_after_s()
        detail = (
            f"server busy: {open_now} connections open, over the cap of {self.max_connections}; try again in {retry} s"
        )
        headers = {"Retry-After": str(retry), "Connection": "close"}
        await JSONResponse({"detail": detail}, status_code=503, headers=headers)(scope, receive, send)


def guarded_protocol(header_timeout_s: float) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol class with this header time limit (uvicorn wants a class)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout_s": header_timeout_s})


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """Keyword arguments for uvicorn.run / uvicorn.Config that apply settings' limits
    (the connection cap itself is ConnectionCap, in the app)."""
    return {
        "http": guarded_protocol(settings.header_timeout_s),
        "timeout_keep_alive": settings.keep_alive_s,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
