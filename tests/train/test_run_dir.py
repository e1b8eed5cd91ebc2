"""One run per output folder: a used folder is refused, a resume continues it exactly and checks its settings."""

import json
import shutil

import pytest
import yaml

from selfdistill.train.run_dir import METRICS_FILE, RESOLVED_CONFIG

from test_distill_trainer import _losses, _train


@pytest.fixture(scope="module")
def tokenizer():
    from test_distill_trainer import _tokenizer

    return _tokenizer()


def _metric_steps(folder):
    return [(r["step"], r["loss"]) for r in map(json.loads, open(folder / METRICS_FILE)) if "loss" in r]


def test_a_used_output_dir_is_refused_unless_overwritten(tokenizer, tmp_path):
    _train(tokenizer, tmp_path, max_steps=3)
    with pytest.raises(FileExistsError, match="not empty.*--overwrite_output_dir true"):
        _train(tokenizer, tmp_path, max_steps=2)
    _train(tokenizer, tmp_path, max_steps=2, overwrite_output_dir=True)
    assert [s for s, _ in _metric_steps(tmp_path)] == [1, 2]  # not the first run's rows with the second's
    assert not (tmp_path / "checkpoint-3").exists()


def test_resume_after_a_kill_leaves_the_files_of_an_uninterrupted_run(tokenizer, tmp_path):
    full = _train(tokenizer, tmp_path / "full")
    run = tmp_path / "killed"
    shutil.copytree(tmp_path / "full", run)
    # killed during the save at step 6: the checkpoint lacks its trainer state, a temporary file is left
    (run / "checkpoint-6" / "trainer_state.json").unlink()
    (run / "checkpoint-6" / "model.safetensors.tmp1234").write_bytes(b"half")
    (run / "run_record.json.tmp").write_text("{")
    resumed = _train(tokenizer, run, resume_from_checkpoint="true")
    assert _metric_steps(run) == _metric_steps(tmp_path / "full")  # steps 4-6 once each, same losses
    assert _losses(resumed) == _losses(full)
    assert not list(run.rglob("*.tmp*"))
    assert (run / "checkpoint-6" / "trainer_state.json").is_file()  # saved again by the resumed run
    recorded = yaml.safe_load((run / RESOLVED_CONFIG).read_text())
    assert recorded["resume_from_checkpoint"] == str(run / "checkpoint-3")


def test_resume_refuses_changed_settings_but_accepts_the_documented_few(tokenizer, tmp_path):
    _train(tokenizer, tmp_path, max_steps=3)
    ckpt = str(tmp_path / "checkpoint-3")
    with pytest.raises(ValueError, match=r"other options.*'learning_rate': \(0.001, 0.01\).*'seed'"):
        _train(tokenizer, tmp_path / "other", max_steps=4, resume_from_checkpoint=ckpt, learning_rate=1e-2, seed=4)
    trainer = _train(tokenizer, tmp_path, max_steps=4, logging_steps=2, resume_from_checkpoint=ckpt)
    assert trainer.state.global_step == 4
    assert yaml.safe_load((tmp_path / RESOLVED_CONFIG).read_text())["max_steps"] == 4


def test_resume_true_needs_a_complete_checkpoint(tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        _train(tokenizer, tmp_path, resume_from_checkpoint="true")
    with pytest.raises(FileNotFoundError, match="not a complete Trainer checkpoint"):
        _train(tokenizer, tmp_path / "x", resume_from_checkpoint=str(tmp_path / "nope"))


def test_the_command_line_takes_config_equals_resume_true_and_refuses_nan(tmp_path, capsys):
    from test_distill_trainer import parse_config

    from support import REPO

    config = REPO / "configs" / "tiny.yaml"
    cfg = parse_config([f"--config={config}", "--output_dir", str(tmp_path), "--resume_from_checkpoint", "true",
                        "--overwrite_output_dir", "true"])
    assert cfg.k_max == 5 and cfg.resume_from_checkpoint == "true" and cfg.overwrite_output_dir
    with pytest.raises(SystemExit) as exit_:
        parse_config(["--output_dir", str(tmp_path), "--ntp_weight", "nan"])
    assert exit_.value.code == 2 and "must be finite numbers" in capsys.readouterr().err


def test_differences_names_each_changed_key_with_both_values():
    from selfdistill.provenance import differences

    assert differences({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 4}) == {
        "b": (2, 5), "c": (3, None), "d": (None, 4)}
    assert differences({"a": [1]}, {"a": [1]}) == {}


def test_another_runs_checkpoint_is_refused_into_a_used_folder_and_its_run_is_left_whole(tokenizer, tmp_path):
    _train(tokenizer, tmp_path / "victim", max_steps=6)
    _train(tokenizer, tmp_path / "other", max_steps=3)
    before = sorted(p.name for p in (tmp_path / "victim").iterdir()), _metric_steps(tmp_path / "victim")
    with pytest.raises(FileExistsError, match="belongs to the run in .*other.* holds another run"):
        _train(tokenizer, tmp_path / "victim", max_steps=4, resume_from_checkpoint=str(tmp_path / "other" /
                                                                                      "checkpoint-3"))
    assert (sorted(p.name for p in (tmp_path / "victim").iterdir()), _metric_steps(tmp_path / "victim")) == before
    # into an empty folder it continues that run
    trainer = _train(tokenizer, tmp_path / "fresh", max_steps=4, resume_from_checkpoint=str(tmp_path / "other" /
                                                                                           "checkpoint-3"))
    assert trainer.state.global_step == 4


def test_a_run_that_failed_before_starting_does_not_block_its_re_run(tokenizer, tmp_path):
    from test_distill_trainer import _cfg

    from selfdistill.train.run import run_distillation

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError):
        run_distillation(_cfg(tmp_path / "run", dataset=str(empty)))
    assert [p.name for p in (tmp_path / "run").iterdir()] == [RESOLVED_CONFIG]  # unstarted
    trainer = _train(tokenizer, tmp_path / "run", max_steps=2)
    assert trainer.state.global_step == 2


def test_an_output_dir_that_is_a_file_is_refused_with_a_message(tokenizer, tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(NotADirectoryError, match="output_dir .*taken is an existing file"):
        _train(tokenizer, tmp_path / "taken", max_steps=1)
