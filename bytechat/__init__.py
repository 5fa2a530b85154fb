"""bytechat: train a tiny byte-level chatbot on your own text, reproducibly."""

__version__ = "0.1.0"
