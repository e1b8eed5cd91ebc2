"""The sweep recipe (scripts/pareto.py's): what changes tokens/s is in the conditions; bad outputs fail first."""

import csv
import json
from dataclasses import replace

import pytest

from selfdistill.cli import parse_config

from test_pareto import ckpt, pareto, restore_threads, small_cfg  # noqa: F401  (fixtures)


def test_threads_host_and_torch_are_conditions_and_recorded_per_row(pareto, ckpt, tmp_path):
    cfg = small_cfg(pareto, ckpt, tmp_path, limit=1, plots=False, thresholds=[], num_threads=1)
    root = pareto.run_pareto(cfg)
    rows = list(csv.DictReader(open(root / "summary.csv")))
    assert rows and all(r["num_threads"] == "1" and r["host"] for r in rows)
    result = json.loads((root / "summary.json").read_text())["results"]["synthetic"][0]
    assert {"num_threads", "host", "hardware", "torch"} <= set(result)
    with pytest.raises(ValueError, match="other options.*'num_threads': \\(1, 2\\)"):
        pareto.run_pareto(replace(cfg, num_threads=2))


@pytest.mark.parametrize("over, error, match", [
    (dict(name=".."), ValueError, "plain folder name"),
    (dict(name=None, model=".."), ValueError, "plain folder name"),
    (dict(output_dir="FILE"), NotADirectoryError, "FILE is a file"),
    (dict(output_dir="FILE/below"), NotADirectoryError, "is a file"),
    (dict(num_threads=-1), ValueError, "num_threads"),
])
def test_bad_outputs_fail_before_any_loading(pareto, tmp_path, monkeypatch, over, error, match):
    monkeypatch.setattr(pareto, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    (tmp_path / "FILE").write_text("")
    if "output_dir" in over:
        over = over | {"output_dir": str(tmp_path / over["output_dir"])}
    with pytest.raises(error, match=match):
        pareto.run_pareto(small_cfg(pareto, tmp_path / "ckpt", tmp_path, **over))


def test_the_command_line_takes_config_files_both_ways_and_reports_bad_values(pareto, tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text("limit: 3\ntasks: [synthetic]\n")
    for argv in (["--config", str(config)], [f"--config={config}"]):
        cfg = parse_config(pareto.ParetoConfig, [*argv, "--batch-size", "2"], check=pareto.check_config)
        assert (cfg.limit, cfg.tasks, cfg.batch_size) == (3, ["synthetic"], 2)
    with pytest.raises(SystemExit) as exit_:
        parse_config(pareto.ParetoConfig, ["--name", ".."], check=pareto.check_config)
    assert exit_.value.code == 2 and "plain folder name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(pareto.ParetoConfig, ["--config", str(tmp_path / "missing.yaml")])
    assert "no such file" in capsys.readouterr().err


def test_k_max_defaults_to_the_models_trained_one(pareto, tmp_path):
    cfg = parse_config(pareto.ParetoConfig, ["--static_k", "2", "--thresholds", "0.9"], check=pareto.check_config)

    def names(*, trained, k_max=None):
        return [s.name for s in pareto.settings(replace(cfg, k_max=k_max) if k_max else cfg, trained_k_max=trained)]

    assert names(trained=5) == ["generate", "static_k2", "conf_adapt_0.9_kmax5", "verify_kmax5"]
    assert names(trained=None) == ["generate", "static_k2", "conf_adapt_0.9_kmax16", "verify_kmax16"]
    assert names(trained=5, k_max=8)[2:] == ["conf_adapt_0.9_kmax8", "verify_kmax8"]  # --k_max wins


def test_conf_adapt_is_calibrated_when_the_model_has_a_map_unless_turned_off(pareto):
    cfg = parse_config(pareto.ParetoConfig, ["--no_static", "--thresholds", "0.9", "--no_verify"],
                       check=pareto.check_config)
    assert [s.name for s in pareto.settings(cfg, trained_k_max=5, has_calibration=True)] == [
        "generate", "conf_adapt_0.9_kmax5_cal"]
    assert pareto.settings(cfg, trained_k_max=5)[1].name == "conf_adapt_0.9_kmax5"
    off = parse_config(pareto.ParetoConfig, ["--thresholds", "0.9", "--calibrated", "false"])
    assert [s.calibrated for s in pareto.settings(off, has_calibration=True) if s.strategy == "conf_adapt"] == [False]


def test_compare_raw_sweeps_each_threshold_calibrated_and_raw(pareto, capsys):
    cfg = parse_config(pareto.ParetoConfig, ["--no_static", "--no_verify", "--thresholds", "0.95", "0.9",
                                             "--compare_raw", "true"], check=pareto.check_config)
    assert [s.name for s in pareto.settings(cfg, trained_k_max=5, has_calibration=True)] == [
        "generate", "conf_adapt_0.95_kmax5_cal", "conf_adapt_0.9_kmax5_cal", "conf_adapt_0.95_kmax5",
        "conf_adapt_0.9_kmax5"]
    with pytest.raises(ValueError, match="compare_raw.*needs calibrated"):
        pareto.settings(cfg, trained_k_max=5, has_calibration=False)  # no map: nothing to compare
    with pytest.raises(SystemExit):  # a usage error before anything loads
        parse_config(pareto.ParetoConfig, ["--thresholds", "0.9", "--calibrated", "false", "--compare_raw", "true"],
                     check=pareto.check_config)
    assert "compare_raw" in capsys.readouterr().err
