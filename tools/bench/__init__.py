"""Performance benchmarks in one run: `python -m tools.bench [--quick] [--out DIR]`
(`make bench`). Writes DIR/report.json and a readable DIR/report.md (default
artifacts/bench), each section with its target and whether it was met. One module per
section (run(ctx) -> its figures, lines(figures) -> its markdown):

  peak      the machine's matmul rate, fp32 and bf16 (the reference for MFU)
  train     training steps of the params.yaml profiles, fast path against fp32; MFU
  decode    batch-1 bytes/s with and without the KV cache; time to first byte
  batching  get_batch on memmapped streams, as a share of a training step
  streams   the streams stage on a generated corpus, in a subprocess: MB/s, peak RSS
  eval      score_bytes throughput with the smoke model
  web       tools.loadtest against a server with a tiny model
  serve     the server with 1, 4 and 16 clients streaming, batched and unbatched
  notes     the notes index: search latency and build time and memory

common.py holds the plan (how much to measure), the context a section runs in and the
helpers; machine.py the machine and its load; report.py the run and the report files;
__main__.py the CLI. Timings on a shared machine are noisy: every figure is a median of
repeats, A/B comparisons interleave their two sides, and the report records how busy
other processes kept the CPUs. Threads: docs/performance.md.
"""

from tools.bench.common import FULL, QUICK, Plan
from tools.bench.report import SECTIONS, render_markdown, run_bench

__all__ = ["FULL", "QUICK", "Plan", "SECTIONS", "render_markdown", "run_bench"]
