"""Server-sent events: formatting, and a response that always stops its reply job."""

from __future__ import annotations

import json
from typing import Any, Callable

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


def sse_event(data: dict[str, Any], event: str | None = None) -> str:
    """One event. JSON escapes every newline in data, so one `data:` line is always enough."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


class EventStreamResponse(StreamingResponse):
    """A text/event-stream response that calls on_close however it ends: finished, client
    gone (starlette cancels the stream when it sees http.disconnect) or failed."""

    media_type = "text/event-stream"

    def __init__(self, content, on_close: Callable[[], None]) -> None:
        # no-cache: events must not be stored; X-Accel-Buffering: a proxy must not batch them.
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
