"""The sweep recipe (scripts/pareto.py's) on a tiny random checkpoint: files written, resume, argument errors."""

import csv
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from support import save_tiny_checkpoint


@pytest.fixture(scope="module")
def pareto():
    from selfdistill.eval import pareto

    return pareto


@pytest.fixture(autouse=True)
def restore_threads():
    import torch

    before = torch.get_num_threads()  # main(num_threads=1) sets it for the whole process
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


def small_cfg(pareto, ckpt, out, **over):
    base = pareto.ParetoConfig(model=str(ckpt), tasks=["synthetic"], limit=4, static_k=[], thresholds=[0.9],
                               verify=False, generate_baseline=True, max_new_tokens=6, batch_size=8,
                               output_dir=str(out), name="tiny", progress=False, num_threads=1)
    return replace(base, **over)


def count_evaluations(monkeypatch):
    import selfdistill.eval.evaluation as ev

    calls = []
    real = ev.evaluate

    def counting(model, tokenizer, rows, setting, **kw):
        if len(rows) > 1:  # the one-row warm-up calls are not sweep runs
            calls.append(setting.name)
        return real(model, tokenizer, rows, setting, **kw)

    monkeypatch.setattr(ev, "evaluate", counting)
    return calls


def test_tiny_sweep_writes_reports_and_resumes(pareto, ckpt, tmp_path, monkeypatch):
    calls = count_evaluations(monkeypatch)
    cfg = small_cfg(pareto, ckpt, tmp_path)
    root = pareto.run_pareto(cfg)
    assert calls == ["generate", "conf_adapt_0.9_kmax16"]
    for name in ("summary.csv", "summary.json", "frontier.md", "plots/synthetic.png",
                 "samples/synthetic__generate.jsonl", "samples/synthetic__conf_adapt_0.9_kmax16.jsonl"):
        assert (root / name).is_file(), name
    rows = list(csv.DictReader(open(root / "summary.csv")))
    assert [r["setting"] for r in rows] == ["generate", "conf_adapt_0.9_kmax16"]
    assert all(int(r["n"]) == 20 for r in rows)  # 5 synthetic subtasks x limit 4
    assert float(rows[0]["tokens_per_forward_mean"]) == 1.0
    summary = json.loads((root / "summary.json").read_text())
    assert {"command", "commit", "hardware", "versions"} <= set(summary["provenance"])
    assert set(summary["frontier"]["synthetic"]) == {"tokens_per_forward", "tokens_per_second", "agreement"}
    samples = [json.loads(line) for line in open(root / "samples/synthetic__generate.jsonl")]
    assert len(samples) == 20 and {"completion", "extracted", "correct", "forward_passes"} <= set(samples[0])
    assert "gold" not in samples[0]  # sample files get committed; the benchmark's labels must not be
    assert "## synthetic (n = 20)" in (root / "frontier.md").read_text()
    # agreement with the generate row of the same sweep: 1 for itself, a fraction for ConfAdapt
    assert float(rows[0]["answer_agreement"]) == float(rows[0]["exact_agreement"]) == 1.0
    assert 0.0 <= float(rows[1]["exact_agreement"]) <= float(rows[1]["answer_agreement"]) <= 1.0
    assert summary["results"]["synthetic"][1]["agreement_n"] == 20

    # Re-run with one more setting: only the new one is decoded, the table holds all three.
    calls.clear()
    pareto.run_pareto(replace(cfg, static_k=[2], plots=False))
    assert calls == ["static_k2"]
    assert [r["setting"] for r in csv.DictReader(open(root / "summary.csv"))] == [
        "generate", "static_k2", "conf_adapt_0.9_kmax16"]

    # Other conditions under the same name are refused; --overwrite redoes everything requested.
    with pytest.raises(ValueError, match="other options"):
        pareto.run_pareto(replace(cfg, max_new_tokens=5, plots=False))
    calls.clear()
    pareto.run_pareto(replace(cfg, max_new_tokens=5, overwrite=True, plots=False))
    assert calls == ["generate", "conf_adapt_0.9_kmax16"]


def test_replaced_checkpoint_at_the_same_path_is_refused_and_a_touched_one_resumes(pareto, tmp_path, monkeypatch):
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt")
    cfg = small_cfg(pareto, ckpt, tmp_path / "out", limit=1, plots=False)
    pareto.run_pareto(cfg)
    weights = ckpt / "model.safetensors"
    # same bytes, new modification time (a fresh clone, a copy): the finished pairs are reused, nothing decoded
    os.utime(weights, (weights.stat().st_atime, weights.stat().st_mtime + 100))
    calls = count_evaluations(monkeypatch)
    pareto.run_pareto(cfg)
    assert calls == []
    # the same model name resolving to a copy of the files elsewhere (a packaged alias in a fresh clone): resumed
    elsewhere = str(shutil.copytree(ckpt, tmp_path / "elsewhere"))
    monkeypatch.setattr(pareto, "resolve_model", lambda name: elsewhere)
    pareto.run_pareto(cfg)
    assert calls == []
    monkeypatch.undo()
    # "retrained" in place: same size, one byte of a tensor changed
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checkpoint"):
        pareto.run_pareto(cfg)


def test_finished_pair_without_its_samples_is_refused_before_decoding(pareto, tmp_path, monkeypatch):
    # what a fresh clone looked like while gzipped samples were git-ignored: run files present, samples gone
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt")
    cfg = small_cfg(pareto, ckpt, tmp_path / "out", limit=1, plots=False)
    root = pareto.run_pareto(cfg)
    (root / "samples" / "synthetic__generate.jsonl").unlink()
    calls = count_evaluations(monkeypatch)
    with pytest.raises(FileNotFoundError, match="synthetic__generate.jsonl are missing"):
        pareto.run_pareto(replace(cfg, static_k=[2]))  # a new setting: nothing is decoded before the refusal
    assert calls == []


@pytest.mark.parametrize("over,match", [
    ({"tasks": ["nope"]}, "unknown task suite"),
    ({"thresholds": [1.5]}, "thresholds must be in"),
    ({"thresholds": [0.9, 0.9]}, "duplicate"),
    ({"batch_size": 0}, "batch_size"),
    ({"dtype": "float8"}, "unknown dtype"),
    ({"prompt_style": "cot"}, "prompt_style"),
    ({"bbh_subtasks": ["navigate"]}, "bbh suite is not among"),
    ({"device": "gpu"}, "unknown device"),
    ({"static_k": [], "thresholds": [], "verify": False, "generate_baseline": False}, "no settings"),
    ({"mask_margin": 0}, "mask_margin"),
])
def test_bad_arguments_fail_before_any_model_loading(pareto, tmp_path, monkeypatch, over, match):
    def no_loading(*a, **k):
        raise AssertionError("the model must not be loaded for bad arguments")

    monkeypatch.setattr(pareto, "load_model", no_loading)
    with pytest.raises(ValueError, match=match):
        pareto.run_pareto(small_cfg(pareto, tmp_path / "missing_ckpt", tmp_path, **over))


def test_model_without_mask_token_is_refused_before_loading_weights(pareto, tmp_path, monkeypatch):
    plain = save_tiny_checkpoint(tmp_path / "plain", with_mask_token=False)
    monkeypatch.setattr(pareto, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    with pytest.raises(ValueError, match="no <mtp> mask token"):
        pareto.run_pareto(small_cfg(pareto, plain, tmp_path))


def test_missing_student_says_what_to_do(pareto, monkeypatch):
    import selfdistill.models.tiny as tiny

    monkeypatch.setattr(tiny, "STUDENT_ASSET_DIR", Path("/nonexistent/tiny_student"))
    with pytest.raises(FileNotFoundError, match="--model tiny-teacher --add_mask_token"):
        pareto.resolve_model("tiny-student")


def test_command_line_defaults_and_flags(pareto):
    from transformers import HfArgumentParser

    (cfg,) = HfArgumentParser(pareto.ParetoConfig).parse_args_into_dataclasses(args=[])
    assert cfg.model == "tiny-student" and cfg.tasks == ["synthetic", "bbh_learnt"]
    assert len(cfg.thresholds) == 14 and cfg.static_k == [1, 2, 3, 4, 5] and cfg.k_max is None and cfg.verify
    (cfg,) = HfArgumentParser(pareto.ParetoConfig).parse_args_into_dataclasses(
        args=["--tasks", "bbh", "--bbh_subtasks", "navigate", "snarks", "--thresholds", "0.9", "0.8",
              "--no_verify", "--limit", "0"])
    assert cfg.bbh_subtasks == ["navigate", "snarks"] and cfg.thresholds == [0.9, 0.8] and not cfg.verify
    assert cfg.limit == 0


def test_baseline_only_grid_needs_no_mask_token(pareto):
    from transformers import HfArgumentParser

    (cfg,) = HfArgumentParser(pareto.ParetoConfig).parse_args_into_dataclasses(
        args=["--static", "False", "--conf_adapt", "False", "--no_verify"])
    assert [s.name for s in pareto.settings(cfg)] == ["generate"]
    (cfg,) = HfArgumentParser(pareto.ParetoConfig).parse_args_into_dataclasses(
        args=["--static", "False", "--conf_adapt", "False", "--no_verify", "--no_generate_baseline"])
    with pytest.raises(ValueError, match="no settings"):
        pareto.check_config(cfg)


def test_mask_margin_flag_reaches_conf_adapt_and_verify_only(pareto):
    from transformers import HfArgumentParser

    (cfg,) = HfArgumentParser(pareto.ParetoConfig).parse_args_into_dataclasses(
        args=["--static_k", "2", "--thresholds", "0.9", "--mask_margin", "2"])
    names = [s.name for s in pareto.settings(cfg)]
    assert names == ["generate", "static_k2", "conf_adapt_0.9_kmax16_margin2", "verify_kmax16_margin2"]
    (cfg,) = HfArgumentParser(pareto.ParetoConfig).parse_args_into_dataclasses(args=["--thresholds", "0.9"])
    assert cfg.mask_margin is None and "conf_adapt_0.9_kmax16" in [s.name for s in pareto.settings(cfg)]


def test_hedged_flag_adds_one_setting_per_lead_groups_value(pareto):
    from transformers import HfArgumentParser

    (cfg,) = HfArgumentParser(pareto.ParetoConfig).parse_args_into_dataclasses(
        args=["--no_static", "--thresholds", "0.9", "--k_max", "5", "--mask_margin", "2", "--hedged", "1", "2"])
    names = [s.name for s in pareto.settings(cfg)]
    assert names[-2:] == ["hedged1_kmax5_margin2", "hedged2_kmax5_margin2"] and "verify_kmax5_margin2" in names
    (cfg,) = HfArgumentParser(pareto.ParetoConfig).parse_args_into_dataclasses(args=["--hedged", "0"])
    with pytest.raises(ValueError, match="lead_groups"):
        pareto.check_config(cfg)
    (cfg,) = HfArgumentParser(pareto.ParetoConfig).parse_args_into_dataclasses(args=[])
    assert not any(s.strategy == "hedged" for s in pareto.settings(cfg))  # not in a sweep unless asked


def test_a_pair_stored_before_a_strategy_option_existed_still_resumes(tmp_path):
    """Stored fingerprints list every option field, None for those the strategy does not take; a field added
    later (lead_groups) must not make them look like other conditions, while a real difference still does."""
    import json

    from selfdistill.eval.evaluation import DecodeSetting
    from selfdistill.eval.sweep import SweepStore

    setting = DecodeSetting(strategy="verify", threshold=0.0, k_max=5)
    store = SweepStore(tmp_path, fingerprint={"limit": 3})
    store.save("gsm8k", setting, [{"id": "a"}], {"accuracy": 0.5})
    run = next((tmp_path / "runs").glob("*.json"))
    stored = json.loads(run.read_text())
    assert "lead_groups" not in stored["fingerprint"]["setting"]
    stored["fingerprint"]["setting"] = {"strategy": "verify", "k": None, "threshold": 0.0, "k_max": 5,
                                       "mask_margin": None}  # as older commits wrote it
    run.write_text(json.dumps(stored))
    assert store.load("gsm8k", setting) == {"accuracy": 0.5}
    with pytest.raises(ValueError, match="other options"):
        SweepStore(tmp_path, fingerprint={"limit": 4}).load("gsm8k", setting)


def test_step0_mask_embedding_is_seeded(pareto, tmp_path):
    """``--add_mask_token``: the new ``<mtp>`` row is random; a resumed or re-run step-0 sweep must get the same one."""
    import torch

    plain = save_tiny_checkpoint(tmp_path / "plain", with_mask_token=False)
    cfg = pareto.ParetoConfig(model=str(plain))
    rows = []
    for draws in (1, 2):
        torch.rand(draws)  # whatever the process drew before
        model, _ = pareto.load_model(str(plain), cfg, add_mask=True)
        rows.append(model.get_input_embeddings().weight[-1].detach().clone())
    assert torch.equal(rows[0], rows[1])


def test_a_sweeps_threshold_reaches_the_decoder_in_the_setting_built_once(pareto, ckpt, tmp_path, monkeypatch):
    # #30: from scripts/pareto.py's options to the engine, a setting is made from its name for the run once (the
    # grid); every engine gets that Strategy, and the reports read the stored rows instead of rebuilding it
    from selfdistill.decode import engine, registry
    from selfdistill.eval import evaluation

    builds, decoded = [], []
    real_make, real_engine = registry.make_strategy, engine.DecodeEngine.__init__
    for module in (registry, evaluation):  # every module that builds settings by name
        monkeypatch.setattr(module, "make_strategy", lambda *a, **k: builds.append(a[0]) or real_make(*a, **k))

    def spy(self, model, strategy, **kw):
        decoded.append(strategy)
        real_engine(self, model, strategy, **kw)
    monkeypatch.setattr(engine.DecodeEngine, "__init__", spy)
    pareto.run_pareto(small_cfg(pareto, ckpt, tmp_path, thresholds=[0.7], generate_baseline=False, plots=False,
                                add_mask_token=True))
    # one build to check the options before anything loads, one for the run with the model's trained k_max
    assert [b for b in builds if isinstance(b, str)] == ["conf_adapt", "conf_adapt"]
    assert decoded and all(s.name == "conf_adapt" and s.threshold == 0.7 for s in decoded)
    assert len({id(s) for s in decoded}) == 1  # every engine of the run (warm-up included) got that one object
