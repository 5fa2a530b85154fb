"""Bytes and turns: the byte tokenizer and the chat transcript format."""
