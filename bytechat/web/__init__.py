"""The web chat: a FastAPI service (bytechat.web.server) and its one static page.

Endpoints (see bytechat.web.server for the details):

    GET  /             the chat page (static/index.html; assets under /static/)
    GET  /health       {"status": "ok", "model": {...}, "limits": {...}, "load": {...}}
    POST /chat         one JSON reply
    POST /chat/stream  the reply as server-sent events
"""
