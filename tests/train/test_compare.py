"""Runs compared at equal steps: binned means by hand, logs read from folders, files and git history, and the
recipe's usage errors."""

import json
import math
import subprocess

import pytest

from selfdistill.train.compare import binned_means, comparison_table, read_metrics


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


RECORDS = [{"step": 10, "loss": 3.0, "a": 0.1}, {"step": 20, "loss": 2.0, "a": 0.3, "b": 1.0},
           {"step": 30, "loss": 1.0, "a": 0.5}, {"step": 30, "train_runtime": 9.0}]


def test_binned_means_by_hand():
    means = binned_means([r for r in RECORDS if "loss" in r], ["a", "b"], bin_steps=20)
    assert list(means) == [20, 40]  # steps 10, 20 -> (0, 20]; step 30 -> (20, 40]
    assert means[20]["a"] == pytest.approx(0.2) and means[20]["b"] == 1.0
    assert means[40]["a"] == 0.5 and math.isnan(means[40]["b"])
    with pytest.raises(ValueError, match="bin_steps"):
        binned_means(RECORDS, ["a"], bin_steps=0)


def test_table_puts_runs_side_by_side(tmp_path):
    one = read_metrics(str(_write(tmp_path / "m.jsonl", RECORDS)))
    assert [r["step"] for r in one] == [10, 20, 30]  # the summary line without a loss is not a training record
    other = [dict(r, a=r["a"] * 2) for r in one]
    table = comparison_table({"x": one, "y": other}, ["a"], bin_steps=20).splitlines()
    assert table[0] == "| steps | a x | a y |"
    assert table[2] == "| 1-20 | 0.200 | 0.400 |" and table[3] == "| 21-40 | 0.500 | 1.000 |"


def test_read_metrics_from_a_folder_and_from_git_history(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _write(run / "metrics.jsonl", RECORDS)
    assert len(read_metrics(str(run))) == 3
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(run)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "metrics.jsonl"], check=True)
    subprocess.run([*git, "commit", "-qm", "log"], check=True)
    _write(run / "metrics.jsonl", RECORDS[:1])  # the working copy changes; history keeps three records
    assert len(read_metrics("HEAD:metrics.jsonl", repo=run)) == 3
    with pytest.raises(FileNotFoundError, match="git show"):
        read_metrics("HEAD:nothing.jsonl", repo=run)
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        read_metrics(str(tmp_path / "missing"))
    _write(run / "empty.jsonl", [{"step": 1, "eval_loss": 2.0}])
    with pytest.raises(FileNotFoundError, match="no training records"):
        read_metrics(str(run / "empty.jsonl"))


@pytest.mark.parametrize("argv, message", [
    (["--runs", "a"], "two or more runs"),
    (["--runs", "a", "b", "--labels", "x"], "--labels must name each"),
    (["--runs", "a", "b", "--bin_steps", "0"], "--bin_steps must be >= 1"),
    (["--runs", "a", "b", "--max_step", "0"], "--max_step must be >= 1"),
])
def test_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        _compare(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def _compare(argv):
    from selfdistill.cli import parse_config
    from selfdistill.train.compare_runs import CompareConfig, check_config, run_compare_runs

    return run_compare_runs(parse_config(CompareConfig, argv, check=check_config))


def test_the_recipe_writes_its_table_with_the_command(tmp_path):
    a, b = _write(tmp_path / "a.jsonl", RECORDS), _write(tmp_path / "b.jsonl", RECORDS)
    out = tmp_path / "cmp.md"
    table = _compare(["--runs", str(a), str(b), "--metrics", "a", "--bin_steps", "30", "--out", str(out)])
    text = out.read_text()
    assert "| 1-30 | 0.300 | 0.300 |" in table and table in text and text.startswith("Command: `python ")


def test_max_step_keeps_the_steps_both_runs_reached(tmp_path):
    long_run = _write(tmp_path / "long.jsonl", RECORDS)
    short_run = _write(tmp_path / "short.jsonl", RECORDS[:2])
    out = tmp_path / "cmp.md"
    table = _compare(["--runs", str(long_run), str(short_run), "--metrics", "a", "--bin_steps", "10",
                      "--max_step", "20", "--out", str(out)])
    assert table.splitlines()[2:] == ["| 1-10 | 0.100 | 0.100 |", "| 11-20 | 0.300 | 0.300 |"]
    assert "10-step bins (steps <= 20)" in out.read_text()
