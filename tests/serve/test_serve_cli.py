"""The command lines: ``python -m selfdistill.serve`` refuses bad options before loading anything, and
``scripts/bench_serve.py`` runs end to end with tiny limits (a real server subprocess and HTTP clients)."""

import csv
import functools
import json

import pytest
from selfdistill.serve import bench as bench_serve
from support import needs_gsm8k

pytest.importorskip("fastapi")


@pytest.mark.parametrize("argv, message", [
    (["--strategy", "generate"], "model.generate baseline"),
    (["--strategy", "static", "--threshold", "0.5"], "takes no option threshold"),
    (["--max-batch", "0"], "--max-batch must be >= 1"),
    (["--chat-template", "/no/such/template.jinja"], "no such file"),
    (["--model", "/no/such/ckpt"], "no such folder"),
    (["--strategy", "hedged", "--lead-groups", "0"], "lead_groups must be an int >= 1"),
    (["--strategy", "verify", "--lead-groups", "2"], "takes no option lead_groups"),
    (["--dtype", "float8"], "unknown dtype 'float8'"),
    (["--model", "tiny-teacher"], "has no <mtp> mask token"),
])
def test_serve_refuses_bad_options_before_loading(capsys, argv, message):
    from selfdistill.serve.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@needs_gsm8k
def test_bench_serve_smoke(tmp_path):
    bench = bench_serve
    rows = bench.run_bench_serve(["--requests", "2", "--max-tokens", "6", "--warmup", "0", "--concurrency", "1", "2",
                       "--settings", "conf_adapt_0.9", "--k_max", "4", "--mask_margin", "2", "--out", str(tmp_path)])
    assert [(r["setting"], r["concurrency"]) for r in rows] == [
        ("plain_static_k1", 1), ("conf_adapt_0.9", 1), ("plain_static_k1", 2), ("conf_adapt_0.9", 2)]
    assert all(r["requests"] == 2 and 0 < r["output_tokens"] <= 12 and r["ttft_mean_s"] > 0 for r in rows)
    assert [r["ratio_to_plain"] for r in rows if r["setting"] == "plain_static_k1"] == [1.0, 1.0]
    with open(tmp_path / "bench.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    record = json.loads((tmp_path / "bench.json").read_text())
    assert record["provenance"]["hardware"] and "bench_serve.py" in record["provenance"]["command"]
    # --k_max/--mask_margin reach the adaptive settings only (the server validated them: the run would 4xx otherwise)
    assert record["settings"]["conf_adapt_0.9"] == {"strategy": "conf_adapt", "threshold": 0.9, "k_max": 4,
                                                    "mask_margin": 2}
    assert record["settings"]["plain_static_k1"] == {"strategy": "static", "k": 1}
    bench_cfg = bench.BenchServeConfig(k_max=4, mask_margin=2)
    # verify is the lossless default (every mask prediction drafted), as everywhere else
    assert bench.setting_options(bench_cfg)["verify"] == {"strategy": "verify", "k_max": 4, "mask_margin": 2}


def test_bench_serve_refuses_a_bad_k_max_before_starting_a_server(capsys, tmp_path):
    bench = bench_serve
    with pytest.raises(SystemExit) as exit_:
        bench.run_bench_serve(["--k_max", "0", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "--k_max and --mask_margin must be >= 1" in capsys.readouterr().err


def test_a_request_naming_a_strategy_without_k_max_gets_the_models_trained_one():
    from selfdistill.decode.registry import make_strategy
    from selfdistill.serve.plan import ServeContext

    ctx = ServeContext(model_name="m", tokenizer=None, strategy=make_strategy("conf_adapt", k_max=5),
                       max_positions=None, check_setting=lambda unit: None,
                       resolve=functools.partial(make_strategy, trained_k_max=5))  # as strategy_for(model) does
    assert ctx.strategy_of({"strategy": "verify"}).k_max == 5
    assert ctx.strategy_of({"strategy": "verify", "k_max": 3}).k_max == 3
    assert ctx.strategy_of({"threshold": 0.5}).k_max == 5  # the server's own setting, one option changed
    assert ServeContext(model_name="m", tokenizer=None, strategy=ctx.strategy, max_positions=None,
                        check_setting=lambda unit: None).strategy_of({"strategy": "verify"}).k_max == 16


def test_serve_refuses_a_cuda_device_this_torch_cannot_see_and_a_missing_server_package(monkeypatch):
    import importlib.util

    from selfdistill.serve import __main__ as serve_main

    with pytest.raises(ValueError, match="--device cuda: this torch sees no CUDA device"):
        serve_main.check_device("cuda", cuda_available=False)
    serve_main.check_device("cpu", cuda_available=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    with pytest.raises(ValueError, match=r"needs uvicorn: pip install -e '.\[serve\]'"):
        serve_main.check_config(serve_main.ServeConfig(model="tiny-student"))


def test_a_model_without_a_mask_token_may_still_be_served_as_plain_greedy_decoding():
    from selfdistill.serve.__main__ import ServeConfig, check_config

    check_config(ServeConfig(model="tiny-teacher", strategy="static", k=1))  # no error: it feeds no mask


def test_bench_serve_refuses_a_name_that_leaves_results(capsys):
    bench = bench_serve
    with pytest.raises(SystemExit) as exit_:
        bench.run_bench_serve(["--name", "../../x"])
    assert exit_.value.code == 2 and "--name '../../x' must be a plain folder name" in capsys.readouterr().err


def test_the_stress_plan_mixes_settings_and_draws_its_leavers_under_the_seed():
    from selfdistill.serve.stress import SETTINGS, plan

    requests = plan(48, 16, model="m", prompts=["a", "b"], max_tokens=8, seed=0)
    assert len(requests) == 48 and sum(r["leave_after"] is not None for r in requests) == 16
    assert {r["body"]["selfdistill"]["strategy"] for r in requests} == {s["strategy"] for s in SETTINGS}
    assert {r["body"]["stream"] for r in requests} == {True, False}
    assert plan(48, 16, model="m", prompts=["a"], max_tokens=8, seed=0)[5]["leave_after"] == \
        plan(48, 16, model="m", prompts=["a"], max_tokens=8, seed=0)[5]["leave_after"]


def test_a_requests_setting_is_built_once_and_reaches_the_engine_as_built(monkeypatch):
    # #30: the request's options become one Strategy (with the model's trained k_max and calibration), which the
    # scheduler's check and engine trust as it is: no second build from the name, no throwaway engine
    from selfdistill.decode import registry
    from selfdistill.models.loader import load_model
    from selfdistill.serve.app import create_app

    model, tok = load_model("tiny-student", dtype="float32")
    app = create_app(model, tok, model_name="m", strategy=registry.make_strategy("static", k=1))
    builds = []
    real = registry.make_strategy
    monkeypatch.setattr(registry, "make_strategy", lambda *a, **k: builds.append(a[0]) or real(*a, **k))
    unit = app.state.ctx.strategy_of({"strategy": "conf_adapt", "threshold": 0.5})
    engine = app.state.scheduler._engine_for(unit)
    assert engine.strategy is unit and unit.threshold == 0.5 and unit.calibrated  # the tiny student's map
    assert [b for b in builds if isinstance(b, str)] == ["conf_adapt"]
