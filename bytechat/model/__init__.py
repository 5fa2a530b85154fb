"""The byte-level GPT model (see gpt.py)."""

from bytechat.model.gpt import GPT, KVCache
from bytechat.model.rope import apply_rope, rope_cache

__all__ = ["GPT", "KVCache", "apply_rope", "rope_cache"]
