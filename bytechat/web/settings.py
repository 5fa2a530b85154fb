"""Limits and knobs of the chat server, chosen once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class ServerSettings:
    # Generation caps, per request.
    max_new_tokens_cap: int = 1024  # a request may not ask for more bytes than this
    default_max_new_tokens: int = 512  # used when a request does not say (clipped to the cap)
    timeout_s: float = 60.0  # generation time per request (time waiting for a slot not counted)
    # Load: replies generated at once, and requests allowed to wait for a slot (beyond: 503).
    max_concurrency: int = 2
    max_waiting: int = 64
    # Request size.
    max_body_bytes: int = 256 * 1024
    max_messages: int = 128
    max_content_bytes: int = 16 * 1024  # UTF-8 bytes per message: the model reads bytes
    # Host header check against DNS rebinding; None accepts any host.
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        positive = ("max_new_tokens_cap", "default_max_new_tokens", "max_concurrency",
                    "max_body_bytes", "max_messages", "max_content_bytes")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0 (got {getattr(self, name)!r})")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s: must be > 0 (got {self.timeout_s!r})")
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
