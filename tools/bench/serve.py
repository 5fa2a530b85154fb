"""Section `serve`: the chat server with 1, 4 and 16 clients streaming replies, unbatched,
batched, and batched on the compiled decode step: aggregate bytes/s, time to first byte,
p50/p99 (smoke model, --serve-ckpt)."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from dataclasses import asdict
from pathlib import Path

from bytechat.core.config import Profile
from tools.bench.common import Context, fmt, table

TARGET_SERVE_SCALING = 4.0  # batched server: aggregate bytes/s at the most clients over one client
TARGET_SERVE_P99_S = 1.5  # batched server: p99 latency of a reply at the most clients
TARGET_SERVE_SINGLE = 0.9  # batched server, one client: bytes/s over the unbatched server's
TARGET_COMPILED_SCALING = 6.0  # compiled server: the most clients' aggregate bytes/s over one client (issue 26)
TARGET_COMPILED_P99_S = 0.5  # compiled server: p99 of a reply at the most clients
# The servers measured: flags of each (eager unless it may compile; the compiled one
# compiles its batch sizes at start, up to minutes the first time: no inductor cache yet).
SERVERS = {
    "unbatched": ("--max-batch-size", "0", "--no-compile"),
    "batched": ("--no-compile",),
    "compiled": (),
}
COMPILE_START_S = 900.0


def serve_model(ckpt: str | None, folder: Path, profile: Profile) -> tuple[Path, str]:
    """(export folder, what it is): ckpt; else the newest export; else (or ckpt "random")
    a randomly initialised model of `profile`'s size, which never ends its turn, so every
    reply is max_new_tokens long."""
    from bytechat.model.export import newest_export
    from tools.local_server import save_tiny_model

    if ckpt is None:
        found = newest_export()
        if found is not None:
            return found, f"{found.name} (newest export)"
    elif ckpt != "random":
        return Path(ckpt), Path(ckpt).name
    path = save_tiny_model(folder, config=asdict(profile.model))
    return path, f"random {profile.name}-profile model"


def run(ctx: Context) -> dict:
    """The chat server under 1..N concurrent clients streaming replies (tools.loadtest),
    with its batched decoding and without (--max-batch-size 0: each reply alone on worker
    threads, the server before batching). Both servers run side by side, idle in turn;
    at each client count the two are measured back to back, in alternating order."""
    import asyncio

    from tools.loadtest import run_load, summarize
    from tools.local_server import running_server

    plan = ctx.plan
    out: dict = {
        "clients": list(plan.serve_clients),
        "max_new_tokens": plan.serve_max_new_tokens,
        "requests_per_client": plan.serve_requests_per_client,
    }
    servers = {mode: flags for mode, flags in SERVERS.items() if plan.compile or mode != "compiled"}
    out |= {mode: [] for mode in servers}
    common = [
        "--no-notes",
        "--max-waiting",
        str(max(64, max(plan.serve_clients))),
        "--max-new-tokens",
        str(max(1024, plan.serve_max_new_tokens)),
    ]
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        path, out["model"] = serve_model(ctx.serve_ckpt, folder, ctx.params.profile("smoke"))
        env = {"BYTECHAT_COMPILE": "1"}
        urls = {
            mode: stack.enter_context(running_server(path, *flags, *common, startup_timeout_s=COMPILE_START_S, env=env))
            for mode, flags in servers.items()
        }
        for i, clients in enumerate(plan.serve_clients):
            for mode in list(servers) if i % 2 == 0 else list(servers)[::-1]:
                args = argparse.Namespace(
                    concurrency=clients,
                    requests=clients * plan.serve_requests_per_client,
                    max_new_tokens=plan.serve_max_new_tokens,
                    stream=True,
                    timeout_s=120.0,
                )
                outcomes, wall_s = asyncio.run(run_load(urls[mode], args))
                run = summarize(outcomes, wall_s, urls[mode], args)
                out[mode].append(
                    {
                        "clients": clients,
                        "requests": run["requests"],
                        "bytes_per_s": run["generated_bytes_per_s"],
                        "mean_reply_bytes": run["mean_reply_bytes"],
                        "ttfb_p50_ms": (run["ttfb_ms"] or {}).get("p50"),
                        "p50_ms": run["latency_ms"]["p50"],
                        "p99_ms": run["latency_ms"]["p99"],
                        "errors": sum(run["errors"].values()),
                    }
                )
    batched, unbatched, compiled = out["batched"], out["unbatched"], out.get("compiled", [])
    out["scaling"] = round(batched[-1]["bytes_per_s"] / batched[0]["bytes_per_s"], 2)
    if compiled:
        out["compiled_scaling"] = round(compiled[-1]["bytes_per_s"] / compiled[0]["bytes_per_s"], 2)
        out["compiled_vs_batched"] = round(compiled[-1]["bytes_per_s"] / batched[-1]["bytes_per_s"], 2)
        out["compiled_met"] = bool(
            out["compiled_scaling"] >= TARGET_COMPILED_SCALING and compiled[-1]["p99_ms"] <= TARGET_COMPILED_P99_S * 1e3
        )
    out["single_vs_unbatched"] = round(batched[0]["bytes_per_s"] / unbatched[0]["bytes_per_s"], 3)
    out["most_clients_vs_unbatched"] = round(batched[-1]["bytes_per_s"] / unbatched[-1]["bytes_per_s"], 2)
    out["errors"] = sum(r["errors"] for r in batched + unbatched + compiled)
    out["target"] = (
        f"batched: {plan.serve_clients[-1]} clients >= {TARGET_SERVE_SCALING:g}x the bytes/s of "
        f"{plan.serve_clients[0]}, p99 <= {TARGET_SERVE_P99_S:g} s at {plan.serve_clients[-1]}, one "
        f"client >= {TARGET_SERVE_SINGLE:.0%} of the unbatched server's bytes/s; 0 errors"
    )
    out["met"] = bool(
        out["scaling"] >= TARGET_SERVE_SCALING
        and batched[-1]["p99_ms"] <= TARGET_SERVE_P99_S * 1e3
        and out["single_vs_unbatched"] >= TARGET_SERVE_SINGLE
        and out["errors"] == 0
    )
    return out


def lines(s: dict) -> list[str]:
    rows = []
    for mode in SERVERS:
        for r in s.get(mode, []):
            rows.append(
                [
                    mode,
                    r["clients"],
                    r["requests"],
                    fmt(r["bytes_per_s"], ",.0f"),
                    fmt(r["mean_reply_bytes"], ".0f"),
                    fmt(r["ttfb_p50_ms"], ".0f"),
                    fmt(r["p50_ms"], ".0f"),
                    fmt(r["p99_ms"], ".0f"),
                    r["errors"],
                ]
            )
    header = [
        "server",
        "clients",
        "requests",
        "bytes/s (all clients)",
        "mean reply B",
        "TTFB p50 ms",
        "p50 ms",
        "p99 ms",
        "errors",
    ]
    return table(header, rows) + [
        "",
        f"Model: {s['model']}, replies of at most {s['max_new_tokens']} bytes, streamed. Batched: "
        f"{s['scaling']:.2f}x the bytes/s of one client at {s['clients'][-1]}; one client at "
        f"{s['single_vs_unbatched']:.1%} of the unbatched server; {s['most_clients_vs_unbatched']:.2f}x the "
        f"unbatched server at {s['clients'][-1]} clients."
        + (
            f" Compiled: {s['compiled_scaling']:.2f}x one client at {s['clients'][-1]} (target "
            f">= {TARGET_COMPILED_SCALING:g}x, p99 <= {TARGET_COMPILED_P99_S:g} s), {s['compiled_vs_batched']:.2f}x the eager "
            "batched server."
            if "compiled_scaling" in s
            else ""
        ),
    ]
