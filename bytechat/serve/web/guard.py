"""Connection-level limits for the chat server: what uvicorn offers, plus what it lacks.

uvicorn's own settings cover most of it (see uvicorn_options):

    limit_concurrency               open connections (or running requests) beyond which
                                    new requests get 503
    timeout_keep_alive              how long an idle keep-alive connection stays open
    h11_max_incomplete_event_size   the most header bytes h11 buffers for one request

uvicorn's h11 protocol has no time limit on receiving a request's headers, so a client
that connects and then sends nothing, or one header byte at a time, holds its connection
(and a limit_concurrency slot) forever. GuardedH11Protocol adds one: headers not complete
within header_timeout_s get 408 and the connection is closed. It also answers oversized
headers with 431 (h11's own hint) where uvicorn answers 400. A slow body is timed in the
app (bytechat.serve.web.chat_request.read_body), which knows when it is reading one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from bytechat.serve.web.settings import ServerSettings


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


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a time limit on each request's headers (408) and 431
    for headers over h11_max_incomplete_event_size. Configure through guarded_protocol()."""

    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._error_hint = 400
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

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
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
        if self.conn.trailing_data[0]:  # part of a request came: say why it is refused
            self.transport.write(_plain_response(408, "Request Timeout", "request headers not received in time"))
        self.transport.close()


def guarded_protocol(header_timeout_s: float) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol class with this header time limit (uvicorn wants a class)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout_s": header_timeout_s})


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """Keyword arguments for uvicorn.run / uvicorn.Config that apply settings' limits."""
    return {
        "http": guarded_protocol(settings.header_timeout_s),
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_s,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
