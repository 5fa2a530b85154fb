"""Load test for the chat server: many concurrent chat requests, latency and error figures.

    python -m tools.loadtest --requests 2000 --concurrency 16 --out artifacts/bench/web.json

Without --url it starts `python -m bytechat.web.server` on a free loopback port, with
--ckpt or else a tiny random model (the figures then measure the server, not a model).
Every reply must be complete (finish_reason "stop" or "length"; with --stream the pieces
must also add up to the final reply). Exit status 1 when any request failed: a 5xx, a
transport error or an incomplete reply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass

import httpx

from bytechat.atomic import write_json
from tools.local_server import running_server, save_tiny_model

COMPLETE = ("stop", "length")


@dataclass
class Outcome:
    status: int | None  # None: no HTTP answer (transport error)
    seconds: float
    complete: bool
    n_bytes: int = 0
    problem: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.loadtest", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32, help="bytes asked for per reply")
    p.add_argument("--stream", action="store_true", help="use POST /chat/stream (default: POST /chat)")
    p.add_argument("--url", help="a running server (default: start one)")
    p.add_argument("--ckpt", help="model for the server started here (default: a tiny random model)")
    p.add_argument("--server-concurrency", type=int, default=None,
                   help="--max-concurrency of the server started here")  # fmt: skip
    p.add_argument("--timeout-s", type=float, default=60.0, help="client timeout per request")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.max_new_tokens < 1:
        p.error("--requests, --concurrency and --max-new-tokens must be >= 1")
    return args


# ---------------------------------------------------------------- one request


def request_body(i: int, max_new_tokens: int) -> dict:
    return {"messages": [{"role": "user", "content": f"hello number {i}"}], "max_new_tokens": max_new_tokens, "seed": i}


async def post_chat(http: httpx.AsyncClient, body: dict) -> Outcome:
    start = time.perf_counter()
    response = await http.post("/chat", json=body)
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        return Outcome(response.status_code, seconds, False, problem=response.text[:200])
    done = response.json()
    return Outcome(200, seconds, done.get("finish_reason") in COMPLETE, done.get("n_bytes", 0))


async def post_stream(http: httpx.AsyncClient, body: dict) -> Outcome:
    start = time.perf_counter()
    async with http.stream("POST", "/chat/stream", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return Outcome(response.status_code, time.perf_counter() - start, False, problem=response.text[:200])
        pieces, done, event = [], None, "message"
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
                if event == "message":
                    pieces.append(data["text"])
                elif event == "done":
                    done = data
            elif line == "":
                event = "message"
    seconds = time.perf_counter() - start
    if done is None:
        return Outcome(200, seconds, False, problem="stream ended without a done event")
    complete = done["finish_reason"] in COMPLETE and "".join(pieces) == done["reply"]
    return Outcome(200, seconds, complete, done["n_bytes"])


async def one_request(http: httpx.AsyncClient, i: int, args: argparse.Namespace) -> Outcome:
    body = request_body(i, args.max_new_tokens)
    start = time.perf_counter()
    try:
        return await (post_stream if args.stream else post_chat)(http, body)
    except (httpx.HTTPError, json.JSONDecodeError, KeyError) as exc:
        return Outcome(None, time.perf_counter() - start, False, problem=f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- the run


async def run_load(url: str, args: argparse.Namespace) -> tuple[list[Outcome], float]:
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout_s, limits=limits) as http:
        for i in range(min(4, args.requests)):  # warm-up: connections, first-call costs
            await one_request(http, -1 - i, args)
        next_index = iter(range(args.requests))
        outcomes: list[Outcome] = []

        async def worker() -> None:
            for i in next_index:  # shared iterator: each index is taken once
                outcomes.append(await one_request(http, i, args))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        return outcomes, time.perf_counter() - start


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summarize(outcomes: list[Outcome], wall_s: float, url: str, args: argparse.Namespace) -> dict:
    latencies = sorted(o.seconds * 1000 for o in outcomes)
    statuses = Counter("transport" if o.status is None else str(o.status) for o in outcomes)
    errors = {
        "5xx": sum(1 for o in outcomes if o.status is not None and o.status >= 500),
        "4xx": sum(1 for o in outcomes if o.status is not None and 400 <= o.status < 500),
        "transport": statuses.get("transport", 0),
        "incomplete": sum(1 for o in outcomes if o.status == 200 and not o.complete),
    }
    n_bytes = sum(o.n_bytes for o in outcomes)
    problems = [o.problem for o in outcomes if o.problem][:5]
    return {
        "url": url,
        "endpoint": "/chat/stream" if args.stream else "/chat",
        "requests": len(outcomes),
        "concurrency": args.concurrency,
        "max_new_tokens": args.max_new_tokens,
        "seconds": round(wall_s, 3),
        "requests_per_s": round(len(outcomes) / wall_s, 2),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p90": round(percentile(latencies, 90), 1),
            "p99": round(percentile(latencies, 99), 1),
            "max": round(latencies[-1], 1),
            "mean": round(sum(latencies) / len(latencies), 1),
        },
        "status_counts": dict(sorted(statuses.items())),
        "errors": errors,
        "bytes_generated": n_bytes,
        "generated_bytes_per_s": round(n_bytes / wall_s, 1),
        "first_problems": problems,
        "ok": sum(errors.values()) == 0,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with ExitStack() as stack:
        url = args.url
        if url is None:
            ckpt = args.ckpt or save_tiny_model(stack.enter_context(tempfile.TemporaryDirectory()))
            server_args = ["--max-waiting", str(max(64, args.concurrency)),
                           "--max-new-tokens", str(max(1024, args.max_new_tokens))]  # fmt: skip
            if args.server_concurrency:
                server_args += ["--max-concurrency", str(args.server_concurrency)]
            url = stack.enter_context(running_server(ckpt, *server_args))
        outcomes, wall_s = asyncio.run(run_load(url.rstrip("/"), args))
    result = summarize(outcomes, wall_s, url, args)
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
