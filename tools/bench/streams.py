"""Section `streams`: the streams stage (wikitext_articles + write_stream) on a generated
WikiText-like corpus, in a subprocess: MB/s and peak RSS at two sizes (a tenth and all),
so that memory shows flat in the corpus size."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from tools.bench.common import Context, fmt, run_child, table

TARGET_STREAMS_MBPS = 100.0
TARGET_STREAMS_PEAK_MIB = 100.0  # "200 MB in well under 200 MB of RAM"
TARGET_STREAMS_GROWTH_MIB = 16.0  # peak RSS at the full size minus at a tenth of it: flat

_CHILD = r"""
import json, sys, time
from pathlib import Path

src, dst = sys.argv[1:3]
from bytechat.data.wikitext import wikitext_articles
from bytechat.data.streams import write_stream
before = rss_kib("VmHWM")
start = time.perf_counter()
meta = write_stream(wikitext_articles(Path(src)), Path(dst), "bench")
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "bytes": meta["bytes"], "documents": meta["documents"],
                  "rss_before_kb": before, "peak_rss_kb": rss_kib("VmHWM")}))
"""

_WORDS = (
    "the of and in to a was is for on as by with he that at from his it an were are which this be or "
    "also first new after had one their its but not has been have they who two her she city album film "
    "river village church season game series station war army school party state team released known "
    "during later between including following national university population century north south"
).split()


def write_wikitext_like(path: Path, n_bytes: int, seed: int = 0) -> int:
    """A WikiText-like file of about n_bytes: articles under " = Title = " headings with
    " = = Section = = " subheadings and paragraphs of words. Written in pieces (flat memory)."""
    rng = random.Random(seed)

    def paragraph() -> str:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(40, 160))]
        return " " + " ".join(words).capitalize() + " . \n"

    bodies = []
    for _ in range(64):  # distinct article bodies, reused under fresh headings
        parts = [" \n"]
        for s in range(rng.randint(2, 5)):
            parts.append(f" = = Section {s} = = \n \n")
            parts.extend(paragraph() for _ in range(rng.randint(2, 6)))
            parts.append(" \n")
        bodies.append("".join(parts))
    written, article = 0, 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        while written < n_bytes:
            chunk = []
            for _ in range(64):
                chunk.append(f" \n = Article {article} = \n")
                chunk.append(bodies[article % len(bodies)])
                article += 1
            text = "".join(chunk)
            fh.write(text)
            written += len(text.encode("utf-8"))
    return written


def run(ctx: Context) -> dict:
    kb = 1024
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bytechat-bench-streams-") as tmp:
        for label, mb in (("small", ctx.plan.stream_mb / 10), ("full", ctx.plan.stream_mb)):
            src, dst = Path(tmp) / f"{label}.txt", Path(tmp) / f"{label}.bin"
            size = write_wikitext_like(src, int(mb * 1e6), ctx.seed)
            result = run_child(_CHILD, [src, dst], "streams stage", timeout=600)
            runs[label] = {
                "corpus_mb": round(size / 1e6, 1),
                "articles": result["documents"],
                "seconds": round(result["seconds"], 3),
                "mb_per_s": round(size / 1e6 / result["seconds"], 1),
                "rss_before_mib": round(result["rss_before_kb"] / kb, 1),
                "peak_rss_mib": round(result["peak_rss_kb"] / kb, 1),
            }
            src.unlink()
            dst.unlink()
    full, small = runs["full"], runs["small"]
    growth = full["peak_rss_mib"] - small["peak_rss_mib"]
    return {
        **runs,
        "rss_growth_mib": round(growth, 1),
        "target": (
            f">= {TARGET_STREAMS_MBPS:g} MB/s; peak RSS flat in corpus size (<= +{TARGET_STREAMS_GROWTH_MIB:g} "
            f"MiB from a tenth of the corpus to all of it) and <= {TARGET_STREAMS_PEAK_MIB:g} MiB"
        ),
        "met": bool(
            full["mb_per_s"] >= TARGET_STREAMS_MBPS
            and growth <= TARGET_STREAMS_GROWTH_MIB
            and full["peak_rss_mib"] <= TARGET_STREAMS_PEAK_MIB
        ),
    }


def lines(s: dict) -> list[str]:
    rows = [
        [
            label,
            fmt(s[label]["corpus_mb"], ".1f"),
            s[label]["articles"],
            fmt(s[label]["seconds"], ".2f"),
            fmt(s[label]["mb_per_s"], ".0f"),
            fmt(s[label]["rss_before_mib"], ".1f"),
            fmt(s[label]["peak_rss_mib"], ".1f"),
        ]
        for label in ("small", "full")
    ]
    return table(["corpus", "MB", "articles", "s", "MB/s", "RSS after imports MiB", "peak RSS MiB"], rows)
