"""Task suites: the right rows, deterministic subsampling, clear errors."""

import json

import pytest

from selfdistill.data.prompts import SCHEMA
from selfdistill.data.synthetic import LEARNT_BBH_SUBTASKS, SUBTASKS
from support import needs_bbh
from selfdistill.eval.task_suites import SUITES, check_suite_options, subsample, suite_rows


def test_subsample_is_seeded_ordered_and_bounded():
    rows = [{"i": i} for i in range(50)]
    a = subsample(rows, limit=10, seed=1, key="k")
    assert a == subsample(rows, limit=10, seed=1, key="k")
    assert len(a) == 10 and [r["i"] for r in a] == sorted(r["i"] for r in a)
    assert a != subsample(rows, limit=10, seed=2, key="k")
    assert subsample(rows, limit=None, seed=0) == rows == subsample(rows, limit=99, seed=0)


def test_synthetic_suite_is_test_split_with_limit_per_subtask():
    rows = suite_rows("synthetic", limit=3, seed=0)
    subs = [s for subs in SUBTASKS.values() for s in subs]
    assert [r["subtask"] for r in rows] == [s for s in subs for _ in range(3)]
    assert all("/test/" in r["id"] and set(r) == set(SCHEMA) for r in rows)
    assert rows == suite_rows("synthetic", limit=3, seed=0)
    assert rows != suite_rows("synthetic", limit=3, seed=1)


@needs_bbh
def test_bbh_learnt_is_the_real_bbh_items_of_the_learnt_subtasks():
    rows = suite_rows("bbh_learnt", limit=2, seed=0)
    assert [r["subtask"] for r in rows] == [s for s in LEARNT_BBH_SUBTASKS for _ in range(2)]
    assert all(r["task"] == "bbh" and r["id"].startswith("bbh/") for r in rows)


def test_bbh_named_subset_and_local_path(tmp_path):
    (tmp_path / "navigate.json").write_text(json.dumps(
        {"examples": [{"input": f"q{i}", "target": "Yes"} for i in range(5)]}))
    rows = suite_rows("bbh", subtasks=["navigate"], path=str(tmp_path), limit=4, seed=0)
    assert len(rows) == 4 and {r["subtask"] for r in rows} == {"navigate"}
    assert len(suite_rows("bbh", subtasks=["navigate"], path=str(tmp_path))) == 5


def test_gsm8k_limit_is_total(tmp_path):
    (tmp_path / "test.jsonl").write_text("\n".join(
        json.dumps({"question": f"q{i}", "answer": f"step\n#### {i}"}) for i in range(20)))
    rows = suite_rows("gsm8k", path=str(tmp_path), limit=7, seed=3)
    assert len(rows) == 7 and all(r["task"] == "gsm8k" for r in rows)


def test_metamathqa_is_grouped_validation(tmp_path):
    records = [{"query": f"q{g}-{v}", "response": f"so\nThe answer is: {g}", "type": "GSM_AnsAug",
                "original_question": f"seed{g}"} for g in range(300) for v in range(2)]
    file = tmp_path / "mm.json"
    file.write_text(json.dumps(records))
    rows = suite_rows("metamathqa", path=str(file))
    groups = {r["group"] for r in rows}
    assert groups and len(rows) == 2 * len(groups)  # both augmentations of a held-out seed question, no more
    assert len(suite_rows("metamathqa", path=str(file), limit=1)) == 1


@pytest.mark.parametrize("name,kwargs,match", [
    ("nope", {}, "unknown task suite"),
    ("synthetic", {"limit": 0}, "limit"),
    ("gsm8k", {"subtasks": ["navigate"]}, "only be chosen for the 'bbh' suite"),
    ("bbh", {"subtasks": ["not_a_subtask"]}, "unknown BBH subtask"),
])
def test_bad_requests_raise_clearly(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_suite_options(name, **kwargs)
    with pytest.raises(ValueError, match=match):
        suite_rows(name, **kwargs)


def test_every_suite_is_named():
    assert set(SUITES) == {"synthetic", "synthetic_dev", "bbh_learnt", "bbh", "gsm8k", "gsm8k_dev", "metamathqa"}


def test_the_synthetic_dev_suite_is_train_side_and_apart_from_the_test_split():
    dev = suite_rows("synthetic_dev", limit=20)
    test = {r["question"] for r in suite_rows("synthetic")}
    assert len(dev) == 20 * 5 and all("/train/" in r["id"] for r in dev)
    assert not {r["question"] for r in dev} & test


def test_the_gsm8k_dev_suite_is_held_out_train_questions_no_training_run_sees():
    from selfdistill.data.sources import load_rows

    dev = suite_rows("gsm8k_dev")
    assert len(dev) == 75 and all(r["id"].startswith("gsm8k/train/") for r in dev)
    groups = {r["group"] for r in dev}
    for seed, fraction in ((0, 0.01), (1, 0.05)):  # the trainer's default split, and another one
        train = load_rows("gsm8k", split="train", seed=seed, validation_fraction=fraction)
        assert not groups & set(train["group"])
    assert len(load_rows("gsm8k", split="train")) == 7473 - 75  # at the defaults nothing else is dropped
