"""Smoke test of scripts/bench_decode.py: it runs end to end on the shipped student and reports every setting."""

import csv

import pytest
import torch

from selfdistill.eval import bench_decode
from selfdistill.decode.forward_cost import FORWARD_WIDTHS, add_ratios


def test_bench_decode_on_suite_prompts(tmp_path):
    bench = bench_decode
    cfg = bench.parse_args(["--model", "tiny-student", "--suite", "synthetic", "--limit", "3", "--max-new-tokens", "6",
                            "--batch-sizes", "1,2", "--repeats", "1",
                            "--only", "static_k1,static_k2,conf_adapt_0.9_kmax16_margin2",
                            "--num-threads", "1", "--forward-cost-repeats", "2", "--out", str(tmp_path)])
    rows = bench.run_bench_decode(cfg)
    assert [(r["batch_size"], r["strategy"]) for r in rows] == [
        (b, s) for b in (1, 2) for s in ("generate", "static_k1", "static_k2", "conf_adapt_0.9_kmax16_margin2")]
    assert all(r["prompts"] == 3 and r["new_tokens"] > 0 for r in rows)
    by = {(r["batch_size"], r["strategy"]): r for r in rows}
    for b in (1, 2):  # static k=1 is greedy decoding through our cache: generate's token count
        assert by[b, "static_k1"]["new_tokens"] == by[b, "generate"]["new_tokens"]
    with open(tmp_path / "bench.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert (tmp_path / "bench.json").is_file()
    # forward-only ratios are relative to static k=1; the bare-forward table has every width per batch size
    assert all(r["forward_only_ratio"] > 0 for r in rows if r["strategy"] != "generate")
    k2 = [r for r in rows if r["strategy"] == "static_k2"]
    assert all(1 < r["tokens_per_forward_pooled"] <= 2 for r in k2)
    assert [r["model_calls"] for r in k2][0] < [r["model_calls"] for r in rows if r["strategy"] == "static_k1"][0]
    with open(tmp_path / "forward_cost.csv") as f:
        costs = list(csv.DictReader(f))
    assert [(int(c["batch_size"]), int(c["new_tokens"])) for c in costs] == [
        (b, w) for b in (1, 2) for w in FORWARD_WIDTHS]
    assert all(float(c["ratio_to_w1"]) == 1.0 for c in costs if c["new_tokens"] == "1")
    assert all(float(c["linear_ratio_to_w1"]) == 1.0 for c in costs if c["new_tokens"] == "1")
    assert all(float(c["linear_ms"]) > 0 for c in costs)


def test_random_llama_shapes():
    bench = bench_decode
    assert bench.random_llama_shape("1024,8", vocab_size=8192) == dict(
        hidden_size=1024, num_layers=8, vocab_size=8192, num_heads=16, num_kv_heads=8)
    # the preset is Llama-3.2-1B's shape: built without memory, it has that model's 1,235,814,400 parameters
    from selfdistill.models.tiny import tiny_model

    with torch.device("meta"):
        model = tiny_model("llama", dtype=torch.bfloat16, **bench.random_llama_shape("llama-3.2-1b", vocab_size=1))
    assert sum(p.numel() for p in model.parameters()) == 1_235_814_400
    for bad in ("1024", "1024,x", "0,8", "1024,8,2"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--random-llama", bad])
    with pytest.raises(SystemExit):
        bench.parse_args(["--only", "static_k2,conf_0.5"])  # a typo must not silently drop a setting


def test_cost_rows_are_medians_relative_to_the_first_width():
    from selfdistill.decode.forward_cost import cost_rows

    rows = cost_rows({1: [0.1, 0.3, 0.2], 4: [0.5, 0.4, 0.9]}, {1: [], 4: []}, batch_size=2, context=7)
    assert [(r["new_tokens"], r["ms"], r["ratio_to_w1"]) for r in rows] == [(1, 200.0, 1.0), (4, 500.0, 2.5)]
    assert all(r["batch_size"] == 2 and r["context"] == 7 for r in rows)
    assert all(r["linear_ms"] != r["linear_ms"] for r in rows)  # no linear layers: nan, not a crash


def test_ratios_are_against_generate_and_static_k1_of_the_same_batch_size():
    best = {"generate": {"tokens_per_second": 10.0, "tokens_per_forward_pooled": 1.0},
            "static_k1": {"tokens_per_second": 12.0, "new_tokens": 100, "forward_seconds": 5.0, "model_calls": 100,
                          "tokens_per_forward_pooled": 1.0},
            "static_k2": {"tokens_per_second": 15.0, "new_tokens": 100, "forward_seconds": 4.0, "model_calls": 50,
                          "tokens_per_forward_pooled": 2.0}}
    row = add_ratios(best["static_k2"], best, baseline=False)
    assert row["ratio_to_generate"] == 1.5
    assert row["forward_only_ratio"] == (100 / 4.0) / (100 / 5.0)  # 1.25
    assert row["pass_cost_ratio"] == (4.0 / 50) / (5.0 / 100)  # 1.6: a two-token pass costs 1.6 one-token ones
    assert row["speedup_per_tpf"] == 0.75
    assert row["ratio_to_generate_cb"] != row["ratio_to_generate_cb"]  # no generate_cb row: nan
    plain = add_ratios(best["generate"], best, baseline=True)
    assert plain["ratio_to_generate"] == 1.0 and plain["pass_cost_ratio"] != plain["pass_cost_ratio"]
