"""The byte-level GPT model (see gpt.py)."""

from bytechat.model.cache import KVCache
from bytechat.model.gpt import GPT
from bytechat.model.rope import apply_rope, rope_cache

__all__ = ["GPT", "KVCache", "apply_rope", "rope_cache"]
