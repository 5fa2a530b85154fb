"""Talking to a model: generation, the batched engine, the terminal chat and the web server."""
