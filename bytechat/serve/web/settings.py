"""Limits and knobs of the chat server, chosen once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from bytechat.serve.copying import SHIPPED

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class ServerSettings:
    # Generation caps, per request.
    max_new_tokens_cap: int = 1024  # a request may not ask for more bytes than this
    default_max_new_tokens: int = 512  # used when a request does not say (clipped to the cap)
    timeout_s: float = 60.0  # generation time per request (time waiting for a slot not counted)
    # Load: replies decoded together in one batch (one forward pass per byte for all; 0:
    # no batching, each reply alone on one of max_concurrency worker threads), and
    # requests allowed to wait for a slot (beyond: 503).
    max_batch_size: int = 16
    max_concurrency: int = 2
    max_waiting: int = 64
    max_wait_s: float = 30.0  # longest wait for a slot before 503 + Retry-After
    # Connections (uvicorn settings, see bytechat.serve.web.guard): open connections before new
    # requests get 503, idle keep-alive, and how long headers / a body may take to arrive
    # (then 408 and the connection is closed). Headers over max_header_bytes get 431.
    max_connections: int = 128
    keep_alive_s: int = 5
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 16 * 1024
    # Request size.
    max_body_bytes: int = 256 * 1024
    max_messages: int = 128
    max_content_bytes: int = 16 * 1024  # UTF-8 bytes per message: the model reads bytes
    # Host header check against DNS rebinding; None accepts any host.
    allowed_hosts: tuple[str, ...] | None = None
    # /health shows where the model was loaded from only when asked (never off loopback:
    # settings_from_args refuses it there).
    show_model_path: bool = False
    # Faithful decoding for a request that does not say (docs/chat.md); --no-faithful: free.
    faithful: bool = SHIPPED

    def __post_init__(self) -> None:
        positive = (
            "max_new_tokens_cap",
            "default_max_new_tokens",
            "max_concurrency",
            "max_body_bytes",
            "max_messages",
            "max_content_bytes",
            "max_connections",
            "keep_alive_s",
            "max_header_bytes",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0 (got {getattr(self, name)!r})")
        for name in ("timeout_s", "max_wait_s", "header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:  # also refuses nan
                raise ValueError(f"{name}: must be > 0 (got {getattr(self, name)!r})")
        if self.max_batch_size < 0:
            raise ValueError(f"max_batch_size: must be >= 0 (got {self.max_batch_size!r}; 0 = no batching)")
        if self.max_waiting < 0:
            raise ValueError(f"max_waiting: must be >= 0 (got {self.max_waiting!r})")

    @property
    def default_new_tokens(self) -> int:
        return min(self.default_max_new_tokens, self.max_new_tokens_cap)

    def public_limits(self) -> dict:
        """What a client may need to know to build valid requests (shown by /health)."""
        return {
            "max_new_tokens": self.max_new_tokens_cap,
            "default_max_new_tokens": self.default_new_tokens,
            "timeout_s": self.timeout_s,
            "max_messages": self.max_messages,
            "max_content_bytes": self.max_content_bytes,
            "max_body_bytes": self.max_body_bytes,
        }
