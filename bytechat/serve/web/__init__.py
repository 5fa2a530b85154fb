"""The web chat: a FastAPI service (bytechat.serve.web.server) and its one static page.

Endpoints (see bytechat.serve.web.server for the details):

    GET  /             the chat page (static/index.html; assets under /static/)
    GET  /health       {"status": "ok", "model": {...}, "limits": {...}, "load": {...}}
    POST /chat         one JSON reply
    POST /chat/stream  the reply as server-sent events
"""
