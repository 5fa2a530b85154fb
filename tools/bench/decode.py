"""Section `decode`: batch-1 bytes/s with the KV cache and with full recomputation at 256
bytes of context (train-profile model, tools/decode_speed.py), and the time to first byte
for a 1 KB prompt. Decoding runs with the chat's thread count (BYTECHAT_THREADS)."""

from __future__ import annotations

import copy
import statistics
from dataclasses import asdict

import torch
from tqdm.auto import tqdm

from tools.bench.common import Context, decode_threads, fmt, median_time, table, torch_threads

TARGET_KV_RATIO = 6.0  # KV-cache decoding over full recomputation
TARGET_KV_BPS = 300.0  # KV-cache decoding bytes/s at batch 1
CONTEXT = 256


def run(ctx: Context) -> dict:
    from bytechat.core.rng import make_generator
    from bytechat.model import GPT
    from bytechat.serve.generate import SamplingConfig, generate_bytes
    from tools.decode_speed import decode_speed

    plan, device, profile = ctx.plan, ctx.device, ctx.params.profile("train")
    torch.manual_seed(ctx.seed)
    model = GPT(profile.model).to(device).eval()
    threads = decode_threads() if device.type == "cpu" else None
    kv, full = [], []
    for _ in tqdm(range(plan.decode_repeats), desc="decode", leave=False):
        kv.append(decode_speed(model, context=CONTEXT, n=plan.decode_bytes, use_cache=True, threads=threads))
        full.append(decode_speed(model, context=CONTEXT, n=plan.decode_bytes, use_cache=False, threads=threads))
    kv_bps, full_bps = statistics.median(kv), statistics.median(full)

    # Time to first byte: a 1 KB prompt (generate_bytes keeps its last block_size bytes),
    # prefill + the first sample, on a copy set up as ChatEngine sets it up.
    chat_model = copy.deepcopy(model).eval()
    if device.type == "cpu":
        chat_model.use_decode_layout()
    prompt = bytes(32 + (i * 37) % 95 for i in range(1024))
    sampling = SamplingConfig(max_new_tokens=1)

    def first_byte() -> None:
        next(generate_bytes(chat_model, prompt, sampling, make_generator(0)))

    with torch_threads(threads):
        ttfb = median_time(first_byte, plan.ttfb_repeats, device)
    ratio = kv_bps / full_bps
    return {
        "model": asdict(profile.model),
        "threads": threads,
        "context": min(CONTEXT, profile.model.block_size),
        "bytes_timed": plan.decode_bytes,
        "kv_bytes_per_s": round(kv_bps, 1),
        "full_bytes_per_s": round(full_bps, 1),
        "kv_over_full": round(ratio, 2),
        "ttfb_ms": round(ttfb * 1e3, 2),
        "ttfb_prompt_bytes": len(prompt),
        "ttfb_prefill_bytes": min(len(prompt), profile.model.block_size),
        "target": f"KV cache >= {TARGET_KV_RATIO:g}x full recomputation and >= {TARGET_KV_BPS:g} bytes/s",
        "met": bool(ratio >= TARGET_KV_RATIO and kv_bps >= TARGET_KV_BPS),
    }


def lines(s: dict) -> list[str]:
    return table(
        ["measure", "value"],
        [
            ["KV cache, bytes/s", fmt(s["kv_bytes_per_s"], ".1f")],
            ["full recomputation, bytes/s", fmt(s["full_bytes_per_s"], ".1f")],
            ["KV / full", f"{s['kv_over_full']:.1f}x"],
            [
                f"time to first byte, {s['ttfb_prompt_bytes']} B prompt ({s['ttfb_prefill_bytes']} B prefill)",
                f"{s['ttfb_ms']:.1f} ms",
            ],
            ["context, threads", f"{s['context']} bytes, {s['threads']}"],
        ],
    )
