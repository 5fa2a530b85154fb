"""Scoring a model: bits per byte on streams, chat from notes, the answer probe."""
