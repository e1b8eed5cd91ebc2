"""Two sweeps compared item by item: the paired difference by hand, pairing by id, samples read from plain and
gzipped files, and the recipe end to end with its usage errors."""

import gzip
import json
import math

import pytest

from selfdistill.cli import parse_config
from selfdistill.eval.paired import (compare_setting, compare_sweeps, comparison_markdown, pair_records,
                                     paired_difference, read_samples)


def _rec(i, tpf, correct=False, completion="x"):
    return {"id": f"q{i}", "tokens_per_forward": tpf, "correct": correct, "completion": completion}


def test_paired_difference_by_hand():
    mean, se = paired_difference([1.0, 2.0, 3.0], [1.5, 2.0, 4.0])  # diffs 0.5, 0, 1: mean 0.5, sd 0.5
    assert mean == pytest.approx(0.5) and se == pytest.approx(0.5 / math.sqrt(3))
    mean, se = paired_difference([1.0], [3.0])
    assert mean == 2.0 and math.isnan(se)
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1.0], [1.0, 2.0])


def test_records_pair_by_id_in_the_first_sweeps_order():
    a = [_rec(1, 1.0), _rec(2, 2.0), _rec(3, 3.0)]
    b = [_rec(3, 3.5), _rec(1, 1.0)]  # other order, q2 missing
    assert [(x["id"], y["tokens_per_forward"]) for x, y in pair_records(a, b)] == [("q1", 1.0), ("q3", 3.5)]
    with pytest.raises(ValueError, match="share no item"):
        pair_records(a, [_rec(9, 1.0)])
    with pytest.raises(ValueError, match="repeat an id"):
        pair_records(a, [_rec(1, 1.0), _rec(1, 2.0)])


def test_compare_setting_by_hand():
    a = [_rec(1, 1.0, True, "same"), _rec(2, 2.0, False, "p"), _rec(3, 1.0, False, "q"), _rec(4, 2.0, True, "r")]
    b = [_rec(1, 2.0, True, "same"), _rec(2, 2.0, True, "p"), _rec(3, 1.0, False, "Q"), _rec(4, 3.0, True, "R")]
    row = compare_setting("verify", a, b)
    assert (row["n"], row["tpf_a"], row["tpf_b"], row["tpf_diff"]) == (4, 1.5, 2.0, 0.5)
    # diffs 1, 0, 0, 1: sd sqrt(1/3), se sqrt(1/3) / 2
    assert row["tpf_diff_se"] == pytest.approx(math.sqrt(1 / 3) / 2)
    assert (row["accuracy_a"], row["accuracy_b"], row["same_text"]) == (50.0, 75.0, 50.0)


def _sweep(root, records_by_setting, *, gz=()):
    (root / "samples").mkdir(parents=True)
    for setting, records in records_by_setting.items():
        text = "".join(json.dumps(r) + "\n" for r in records)
        path = root / "samples" / f"gsm8k__{setting}.jsonl"
        if setting in gz:
            with gzip.open(f"{path}.gz", "wt", encoding="utf-8") as f:
                f.write(text)
        else:
            path.write_text(text)
    return root


def test_read_samples_takes_plain_and_gzipped_files_of_one_task(tmp_path):
    root = _sweep(tmp_path / "s", {"verify_kmax5": [_rec(1, 1.5)], "conf_adapt_0.9": [_rec(1, 1.1)]},
                  gz={"verify_kmax5"})
    (root / "samples" / "bbh__verify_kmax5.jsonl").write_text(json.dumps(_rec(7, 9.0)) + "\n")
    got = read_samples(root, "gsm8k")
    assert sorted(got) == ["conf_adapt_0.9", "verify_kmax5"] and got["verify_kmax5"][0]["tokens_per_forward"] == 1.5
    with pytest.raises(FileNotFoundError, match="no samples of task 'gsm8k'"):
        read_samples(_sweep(tmp_path / "t", {}), "gsm8k")
    with pytest.raises(ValueError, match="no setting in common"):
        compare_sweeps({"a": []}, {"b": []})


def test_the_recipe_compares_the_settings_both_sweeps_ran(tmp_path, capsys):
    from selfdistill.eval import compare_sweeps as recipe

    a = _sweep(tmp_path / "a", {"generate": [_rec(1, 1.0), _rec(2, 1.0)], "verify": [_rec(1, 1.5), _rec(2, 2.0)]})
    b = _sweep(tmp_path / "b", {"verify": [_rec(2, 2.5), _rec(1, 1.5)]}, gz={"verify"})
    out = tmp_path / "cmp.md"
    cfg = parse_config(recipe.CompareSweepsConfig, ["--sweeps", str(a), str(b), "--labels", "old", "new",
                                                    "--out", str(out)], check=recipe.check_config)
    table = recipe.run_compare_sweeps(cfg)
    assert table == comparison_markdown(compare_sweeps(read_samples(a, "gsm8k"), read_samples(b, "gsm8k")),
                                        labels=("old", "new"))
    assert "| verify | 2 | 1.750 | 2.000 | +0.250 ± 0.250 |" in table and "generate" not in table
    assert table in out.read_text() and "Commit:" in out.read_text()
    for argv, message in ((["--sweeps", str(a)], "exactly two"),
                          (["--sweeps", str(a), str(tmp_path / "none")], "no samples/ folder"),
                          (["--sweeps", str(a), str(b), "--labels", "x"], "name both")):
        with pytest.raises(SystemExit):
            parse_config(recipe.CompareSweepsConfig, argv, check=recipe.check_config)
        assert message in capsys.readouterr().err
