"""tools.bench in a tiny mode: every section runs and lands in report.json / report.md.
No timing assertions (the machine is shared); only that the numbers are there."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from tools import bench
from bytechat.core import paths

TINY_PLAN = bench.Plan(
    peak_repeats=2,
    train_warmup=1,
    train_steps=2,
    decode_bytes=4,
    decode_repeats=1,
    ttfb_repeats=1,
    batch_calls=5,
    batch_stream_mb=0.1,
    stream_mb=2.0,
    eval_kb=4.0,
    eval_fp32=True,
    web_requests=6,
    web_concurrency=2,
    serve_clients=(1, 2),
    serve_requests_per_client=1,
    serve_max_new_tokens=8,
    notes_queries=20,
    notes_pages=30,
    compile=False,  # compiling costs ~30 s a shape; tests/test_generate.py and test_batch_engine.py compile
)

NUMBERS = {
    "peak": ["fp32_gflops", "bf16_gflops"],
    "train": [],
    "decode": ["kv_bytes_per_s", "full_bytes_per_s", "kv_over_full", "ttfb_ms"],
    "batching": ["get_batch_us", "train_step_ms", "share_of_step"],
    "streams": ["rss_growth_mib"],
    "eval": [],
    "web": ["requests_per_s", "p50_ms", "p99_ms", "errors"],
    "serve": ["scaling", "single_vs_unbatched", "most_clients_vs_unbatched", "errors"],
    "notes": ["search_p99_ms", "build_s", "build_peak_rss_mib"],
}


@pytest.fixture(scope="module")
def tiny_params(tmp_path_factory):
    """params.yaml with the real data section and tiny smoke/train models."""
    raw = yaml.safe_load(paths.params_file().read_text(encoding="utf-8"))
    for name, size in (("smoke", 16), ("train", 32)):
        raw["profiles"][name]["model"].update(
            n_layer=1, n_head=2, n_embd=size, block_size=size, conv_kernel=0, copy_dim=0
        )
        raw["profiles"][name]["train"]["batch_size"] = 2
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def report(tiny_params, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = bench.run_bench(
        quick=True, out_dir=out, plan=TINY_PLAN, params_path=tiny_params, threads=1, serve_ckpt="random"
    )
    return out, result


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_every_section_is_in_report_json_with_numbers(report):
    out, result = report
    saved = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert saved["quick"] is True and saved["machine"]["threads"] == 1
    for section in bench.SECTIONS:
        assert section in saved, section
        assert "error" not in saved[section], saved[section].get("traceback")
        assert "target" in saved[section] and "met" in saved[section]
        assert saved[section]["met"] in (True, False, None)
        for key in NUMBERS[section]:
            assert is_number(saved[section][key]), (section, key, saved[section][key])
    for profile in ("smoke", "train"):
        row = saved["train"]["profiles"][profile]
        for path in ("fast", "reference"):
            for key in ("step_ms", "bytes_per_s", "gflops", "mfu", "first_loss"):
                assert is_number(row[path][key]), (profile, path, key)
        assert is_number(row["speedup"]) and is_number(row["loss_rel_diff"])
        assert row["reference"]["dtype"] == "fp32"
    for size in ("small", "full"):
        for key in ("corpus_mb", "mb_per_s", "peak_rss_mib", "seconds"):
            assert is_number(saved["streams"][size][key]), (size, key)
    assert saved["streams"]["full"]["corpus_mb"] > saved["streams"]["small"]["corpus_mb"]
    for dtype in ("auto", "fp32"):
        if dtype in saved["eval"]:
            assert is_number(saved["eval"][dtype]["bytes_per_s"])
    assert is_number(saved["eval"]["auto"]["bytes_per_s"])
    assert saved["web"]["errors"] == 0 and saved["web"]["requests"] == TINY_PLAN.web_requests
    serve = saved["serve"]
    assert serve["errors"] == 0 and serve["model"].startswith("random smoke-profile")
    for mode in ("unbatched", "batched"):
        assert [r["clients"] for r in serve[mode]] == [1, 2]
        for r in serve[mode]:
            assert r["requests"] == r["clients"] and r["mean_reply_bytes"] == 8, "a random model never stops early"
            assert all(is_number(r[key]) for key in ("bytes_per_s", "ttfb_p50_ms", "p50_ms", "p99_ms")), r
    notes = saved["notes"]
    assert notes["retrieval"]["queries"] == TINY_PLAN.notes_queries and notes["retrieval"]["blocks"] > 300
    assert notes["build"]["full"]["pages"] == TINY_PLAN.notes_pages and notes["build"]["small"]["pages"] == 3
    assert notes["build"]["full"]["blocks"] > notes["build"]["small"]["blocks"] > 0
    assert is_number(notes["build"]["full"]["search_median_ms"]) and is_number(notes["build"]["rss_growth_mib"])
    assert result["train"]["profiles"].keys() == saved["train"]["profiles"].keys()


def test_report_md_has_a_table_per_section(report):
    out, _ = report
    text = (out / "report.md").read_text(encoding="utf-8")
    for section in bench.SECTIONS:
        assert f"## {section}" in text
    assert text.count("Target:") == len(bench.SECTIONS)
    assert "|---|" in text and "failed" not in text
    assert not list(out.glob(".*.tmp")), "atomic writes leave no temp files"


def test_skip_and_bad_section(tmp_path, tiny_params):
    with pytest.raises(ValueError, match="unknown sections"):
        bench.run_bench(quick=True, out_dir=tmp_path, skip=["nope"], params_path=tiny_params)
    result = bench.run_bench(
        quick=True,
        out_dir=tmp_path,
        plan=TINY_PLAN,
        params_path=tiny_params,
        threads=1,
        skip=[s for s in bench.SECTIONS if s != "peak"],
    )
    assert result["skipped"] == sorted(s for s in bench.SECTIONS if s != "peak")
    assert "train" not in json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))


def test_cli_writes_the_report_and_refuses_unknown_sections(tmp_path, capsys):
    from tools.bench.__main__ import main

    assert main(["--skip", "nope"]) == 2
    assert "unknown sections ['nope']" in capsys.readouterr().err
    others = ",".join(s for s in bench.SECTIONS if s != "peak")
    assert main(["--quick", "--threads", "1", "--skip", others, "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert saved["quick"] is True and saved["skipped"] == sorted(others.split(","))
    assert "## peak" in (tmp_path / "report.md").read_text(encoding="utf-8") and "## peak" in capsys.readouterr().out
