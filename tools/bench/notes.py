"""Section `notes`: the notes index's speed.

retrieval  top-k (k=3) search latency on the example graph (examples/roam, ~600
           blocks), over a few hundred questions built from its own blocks' words:
           median, p99 and max in ms (target: under 20 ms)
build      index_folder on a synthetic notes folder generated into a temp dir (10,000
           pages, ~20 MB, with the full plan) and on one a tenth that size (~20,000
           blocks: a large real graph, what chat and serve re-index when a page
           changes), each in a subprocess: seconds, MB/s, peak RSS and search p99
           (target: under 60 s, and the peak RSS of the big one within FLAT_GROWTH_MIB
           of the small one: flat memory)
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

from bytechat.core import paths
from tools.bench.common import Context, run_child, table

TARGET_SEARCH_MS = 20.0
TARGET_BUILD_S = 60.0
FLAT_GROWTH_MIB = 32.0

_TEMPLATES = (
    "what did I write about {}?",
    "when is {}?",
    "remind me about {}",
    "how many {} do I have?",
    "tell me about {} and {}",
    "summarise my page on {}",
    "{}",
    "where is the {} {}?",
)


def _syllable_words(rng: random.Random, n: int) -> list[str]:
    onsets, vowels, codas = (
        "b d f g h k l m n p r s t v w z br st tr ch sh".split(),
        "a e i o u ai ou ee".split(),
        ["", "n", "r", "s", "t", "l", "ck"],
    )
    return [
        "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.randint(1, 3)))
        for _ in range(n)
    ]


def write_synthetic_notes(folder: str | Path, n_pages: int, page_bytes: int = 2000, seed: int = 0) -> int:
    """n_pages Roam-like pages of about page_bytes each (bullets, children, links, TODOs,
    attributes) under folder, one file at a time; returns the bytes written."""
    rng = random.Random(seed)
    words = _syllable_words(rng, 3000)
    folder = Path(folder)
    written = 0
    for i in range(n_pages):
        title = f"{rng.choice(words).capitalize()} {rng.choice(words)} {i}"
        sub = folder / f"Area {i % 20}" if i % 3 == 0 else folder
        sub.mkdir(parents=True, exist_ok=True)
        lines, size = [f"- type:: #{rng.choice(words)}"], 0
        while size < page_bytes:
            sentence = " ".join(rng.choice(words) for _ in range(rng.randint(6, 16)))
            kind = rng.random()
            if kind < 0.1:
                line = f"- {{{{[[TODO]]}}}} {sentence} [[{rng.choice(words).capitalize()}]]"
            elif kind < 0.2:
                line = f"- {rng.choice(words)}:: {rng.randint(1, 999)} {rng.choice(words)}"
            else:
                line = f"- {sentence.capitalize()}."
            lines.append(line)
            for _ in range(rng.randint(0, 3)):
                lines.append(f"    - {' '.join(rng.choice(words) for _ in range(rng.randint(4, 12)))}")
            size = sum(len(x) + 1 for x in lines)
        data = ("\n".join(lines) + "\n").encode("utf-8")
        (sub / f"{title}.md").write_bytes(data)
        written += len(data)
    return written


def _questions(blocks, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        block = rng.choice(blocks)
        words = [w for w in f"{block.page} {block.text}".replace("\n", " ").split() if w.isalpha() and len(w) > 3]
        picks = [rng.choice(words) if words else block.page for _ in range(2)]
        template = rng.choice(_TEMPLATES)
        out.append(template.format(*picks[: template.count("{}")]))
    return out


def bench_retrieval(n_queries: int, seed: int = 0, k: int = 3) -> dict:
    from bytechat.notes import roam
    from bytechat.notes.blocks import all_blocks
    from bytechat.notes.index import NotesIndex, index_folder

    blocks = all_blocks(roam.load_pages(paths.example_roam_dir()))
    with tempfile.TemporaryDirectory(prefix="bytechat-bench-notes-") as tmp:
        index_folder(paths.example_roam_dir(), Path(tmp) / "index.sqlite", progress=False).close()
        with NotesIndex.open(Path(tmp) / "index.sqlite") as index:  # read-only, as chat opens it
            questions = _questions(blocks, n_queries, seed)
            for q in questions[:20]:  # warm the page cache
                index.search(q, k)
            times, n_hits = [], 0
            for q in questions:
                start = time.perf_counter()
                n_hits += len(index.search(q, k))
                times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {
        "graph": paths.example_roam_dir().relative_to(paths.root()).as_posix(),
        "blocks": len(blocks),
        "queries": len(times),
        "k": k,
        "median_ms": round(statistics.median(times), 3),
        "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 3),
        "max_ms": round(times[-1], 3),
        "mean_hits": round(n_hits / len(times), 2),
    }


_BUILD_CHILD = r"""
import json, sys, time
from bytechat.notes.index import index_folder
before = rss_kib("VmHWM")
start = time.perf_counter()
index = index_folder(sys.argv[1], sys.argv[2], progress=False)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "pages": index.pages, "blocks": len(index), "rss_before_kb": before,
                  "peak_rss_kb": rss_kib("VmHWM")}))
"""


def _search_times(index_path: Path, seed: int, n: int = 200) -> dict:
    """Top-3 search latency on a big synthetic index, questions from its vocabulary."""
    from bytechat.notes.index import NotesIndex

    rng = random.Random(seed)
    words = _syllable_words(rng, 3000)  # the same draw as write_synthetic_notes(seed=seed)
    questions = [f"what did I write about {rng.choice(words)} {rng.choice(words)}?" for _ in range(n)]
    times = []
    with NotesIndex.open(index_path) as index:
        for q in questions:
            start = time.perf_counter()
            index.search(q, 3)
            times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {
        "search_median_ms": round(statistics.median(times), 3),
        "search_p99_ms": round(times[int(0.99 * (n - 1))], 3),
    }


def bench_build(n_pages: int, seed: int = 0) -> dict:
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bytechat-bench-notes-") as tmp:
        for label, pages in (("small", max(1, n_pages // 10)), ("full", n_pages)):
            folder = Path(tmp) / label
            notes_bytes = write_synthetic_notes(folder, pages, seed=seed)
            target = Path(tmp) / f"{label}.sqlite"
            r = run_child(_BUILD_CHILD, [folder, target], "index build", timeout=900)
            search = _search_times(target, seed)  # small: a large real graph's size (~20,000 blocks)
            runs[label] = {
                "pages": r["pages"],
                "blocks": r["blocks"],
                "notes_mb": round(notes_bytes / 1e6, 2),
                "index_mb": round(target.stat().st_size / 1e6, 2),
                "seconds": round(r["seconds"], 2),
                "mb_per_s": round(notes_bytes / 1e6 / r["seconds"], 2) if r["seconds"] > 0 else None,
                "rss_before_mib": round(r["rss_before_kb"] / 1024, 1),
                "peak_rss_mib": round(r["peak_rss_kb"] / 1024, 1),
                **search,
            }
    runs["rss_growth_mib"] = round(runs["full"]["peak_rss_mib"] - runs["small"]["peak_rss_mib"], 1)
    return runs


def run(ctx: Context) -> dict:
    n_pages = ctx.plan.notes_pages
    retrieval = bench_retrieval(ctx.plan.notes_queries, ctx.seed)
    build = bench_build(n_pages, ctx.seed)
    met = (
        retrieval["p99_ms"] < TARGET_SEARCH_MS
        and build["full"]["seconds"] < TARGET_BUILD_S
        and build["rss_growth_mib"] < FLAT_GROWTH_MIB
    )
    return {
        "retrieval": retrieval,
        "build": build,
        "search_p99_ms": retrieval["p99_ms"],
        "build_s": build["full"]["seconds"],
        "build_peak_rss_mib": build["full"]["peak_rss_mib"],
        "target": (
            f"top-{retrieval['k']} search p99 < {TARGET_SEARCH_MS:g} ms on the example graph; "
            f"{n_pages:,} pages indexed in < {TARGET_BUILD_S:g} s with peak RSS within "
            f"{FLAT_GROWTH_MIB:g} MiB of a tenth as many"
        ),
        "met": met,
    }


def lines(s: dict) -> list[str]:
    r, b = s["retrieval"], s["build"]
    lines = table(
        ["search (example graph)", "blocks", "queries", "median ms", "p99 ms", "max ms", "hits/query"],
        [[f"top-{r['k']}", r["blocks"], r["queries"], r["median_ms"], r["p99_ms"], r["max_ms"], r["mean_hits"]]],
    )
    rows = [
        [
            label,
            b[label]["pages"],
            b[label]["blocks"],
            b[label]["notes_mb"],
            b[label]["index_mb"],
            b[label]["seconds"],
            b[label]["mb_per_s"],
            b[label]["rss_before_mib"],
            b[label]["peak_rss_mib"],
        ]
        for label in ("small", "full")
    ]
    lines += [
        "",
        *table(
            [
                "build (synthetic notes)",
                "pages",
                "blocks",
                "notes MB",
                "index MB",
                "s",
                "MB/s",
                "RSS after imports MiB",
                "peak RSS MiB",
            ],
            rows,
        ),
    ]
    return lines + [
        "",
        f"peak RSS growth, full over small: {b['rss_growth_mib']} MiB; top-3 search p99: "
        f"{b['small']['search_p99_ms']} ms on small ({b['small']['blocks']:,} blocks, re-indexed in "
        f"{b['small']['seconds']} s), {b['full']['search_p99_ms']} ms on full (median {b['full']['search_median_ms']} ms)",
    ]
