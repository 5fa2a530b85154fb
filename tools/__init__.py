"""Benchmarks, load tests and experiments: development tools, not shipped with bytechat."""
