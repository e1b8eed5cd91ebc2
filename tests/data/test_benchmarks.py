"""Benchmark loaders: schema, real-data contents, clear errors, hub code paths (with ``load_dataset`` faked),
and the grouped MetaMathQA split on a fixture derived from GSM8K train rows at test time."""

from __future__ import annotations

import json
import re

import datasets
import pytest

from rewards import grade
from selfdistill.data.benchmarks import BBH_SUBTASKS, LOADERS, load_bbh, load_benchmark, load_gsm8k, load_metamathqa
from selfdistill.data.split import grouped_split
from selfdistill.data.benchmarks.gsm8k import strip_calculator_annotations
from selfdistill.data.benchmarks.source import is_local
from selfdistill.paths import default_bbh_dir, default_gsm8k_dir
from support import needs_bbh, needs_gsm8k
from selfdistill.data.prompts import SCHEMA


def assert_schema(ds: datasets.Dataset) -> None:
    assert tuple(ds.column_names) == SCHEMA
    assert all(ds.features[c].dtype == "string" for c in SCHEMA)
    assert len(set(ds["id"])) == len(ds), "ids must be unique"


# --- GSM8K ---------------------------------------------------------------------------------------------------

@needs_gsm8k
@pytest.mark.parametrize("split, n", [("test", 1319), ("train", 7473)])
def test_gsm8k_real_data(split, n):
    ds = load_gsm8k(split=split)
    assert_schema(ds)
    assert len(ds) == n
    assert set(ds["task"]) == {"gsm8k"} and set(ds["subtask"]) == {""}
    assert ds["group"] == ds["question"]
    assert all(re.fullmatch(r"-?\d+", a) for a in ds["answer"]), "answers are plain integers, commas stripped"
    assert not any("<<" in s for s in ds["solution"])
    raw = [json.loads(line) for line in (default_gsm8k_dir() / f"{split}.jsonl").open()]
    with_comma = [i for i, r in enumerate(raw) if "," in r["answer"].rsplit("####", 1)[1]]
    assert with_comma, "GSM8K has answers like 1,080"
    i = with_comma[0]
    assert ds[i]["answer"] == raw[i]["answer"].rsplit("####", 1)[1].strip().replace(",", "")
    assert ds[i]["question"] == raw[i]["question"] and ds[i]["id"] == f"gsm8k/{split}/{i}"


@needs_gsm8k
def test_gsm8k_calculator_annotations_option():
    kept = load_gsm8k(split="test", calculator_annotations=True)
    stripped = load_gsm8k(split="test")
    assert "<<" in kept[0]["solution"]
    assert [strip_calculator_annotations(s) for s in kept["solution"]] == stripped["solution"]
    assert kept["answer"] == stripped["answer"]


def test_strip_calculator_annotations():
    assert strip_calculator_annotations("48/2 = <<48/2=24>>24 clips\n#### 24") == "48/2 = 24 clips\n#### 24"


def test_gsm8k_local_file_and_dir(tmp_path):
    rows = [{"question": "q1", "answer": "1+1=<<1+1=2>>2\n#### 2"}, {"question": "q2", "answer": "x\n#### 1,500"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for path in (tmp_path, tmp_path / "train.jsonl", str(tmp_path / "train.jsonl")):
        ds = load_gsm8k(path, split="train")
        assert_schema(ds)
        assert ds["answer"] == ["2", "1500"] and ds["solution"][0] == "1+1=2\n#### 2"


def test_gsm8k_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)nothing_here.*openai/gsm8k"):
        load_gsm8k(tmp_path / "nothing_here", split="test")
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        load_gsm8k(tmp_path, split="test")  # a directory without test.jsonl
    with pytest.raises(ValueError, match="unknown GSM8K split"):
        load_gsm8k(split="validation")
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(ValueError, match="####"):
        load_gsm8k(tmp_path, split="test")
    (tmp_path / "test.jsonl").write_text(json.dumps({"query": "q", "answer": "#### 1"}) + "\n")
    with pytest.raises(ValueError, match="lacks column"):
        load_gsm8k(tmp_path, split="test")


def test_default_path_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFDISTILL_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "gsm8k" / "test.jsonl"))):
        load_gsm8k()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "bbh"))):
        load_bbh(subtasks="snarks")


# --- hub code paths (load_dataset faked: no network here) ----------------------------------------------------

@pytest.fixture
def fake_hub(monkeypatch):
    calls = []
    tables = {
        ("openai/gsm8k", "main"): {"question": ["q"], "answer": ["a <<1+1=2>>2\n#### 2"]},
        ("meta-math/MetaMathQA", None): {"query": ["q"], "response": ["r The answer is: 3"], "type": ["MATH_SV"],
                                         "original_question": ["o"]},
        ("lukaemon/bbh", "snarks"): {"input": ["i1", "i2"], "target": ["(A)", "(B)"]},
        ("lukaemon/bbh", "navigate"): {"input": ["i3"], "target": ["Yes"]},
    }

    def load_dataset(name, config=None, *, split):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict(tables[(name, config)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_paths(fake_hub):
    g = load_gsm8k("openai/gsm8k", split="train")
    assert_schema(g)
    assert g[0]["answer"] == "2" and g[0]["id"] == "gsm8k/train/0"
    m = load_metamathqa("meta-math/MetaMathQA")
    assert_schema(m)
    assert (m[0]["answer"], m[0]["subtask"], m[0]["group"]) == ("3", "MATH_SV", "o")
    b = load_bbh("lukaemon/bbh", ["snarks", "navigate"])
    assert_schema(b)
    assert b["subtask"] == ["snarks", "snarks", "navigate"] and b["answer"] == ["(A)", "(B)", "Yes"]
    assert fake_hub == [("openai/gsm8k", "main", "train"), ("meta-math/MetaMathQA", None, "train"),
                        ("lukaemon/bbh", "snarks", "test"), ("lukaemon/bbh", "navigate", "test")]


def test_hub_failure_is_explained(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match=r"(?s)GSM8K.*'openai/gsm8k'.*no network.*local path"):
        load_gsm8k("openai/gsm8k")


@pytest.mark.parametrize("path, local", [
    ("openai/gsm8k", False),
    ("meta-math/MetaMathQA", False),
    ("/abs/dir", True),
    ("./rel/dir", True),
    ("../shared/data/gsm8k", True),
    ("~/data", True),
    ("some/test.jsonl", True),
    ("plainname", True),
])
def test_is_local(path, local):
    assert is_local(path) is local


def test_load_benchmark_registry():
    assert set(LOADERS) == {"gsm8k", "metamathqa", "bbh"}
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("mmlu")


# --- BBH -----------------------------------------------------------------------------------------------------

@needs_bbh
def test_bbh_real_data():
    stems = sorted(p.stem for p in default_bbh_dir().glob("*.json"))
    assert stems == sorted(BBH_SUBTASKS) and len(BBH_SUBTASKS) == 27
    ds = load_bbh()
    assert_schema(ds)
    expected = sum(len(json.loads((default_bbh_dir() / f"{s}.json").read_text())["examples"]) for s in BBH_SUBTASKS)
    assert len(ds) == expected
    assert list(dict.fromkeys(ds["subtask"])) == list(BBH_SUBTASKS)
    assert set(ds["task"]) == {"bbh"} and set(ds["solution"]) == {""}
    first = json.loads((default_bbh_dir() / "snarks.json").read_text())["examples"][0]
    snarks = load_bbh(subtasks="snarks")
    assert (snarks[0]["question"], snarks[0]["answer"], snarks[0]["id"]) == (first["input"], first["target"],
                                                                              "bbh/snarks/0")
    one_file = load_bbh(default_bbh_dir() / "snarks.json")
    assert one_file["id"] == snarks["id"]


def test_bbh_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown BBH subtask\(s\) \['snark'\]; valid: boolean_expressions"):
        load_bbh(tmp_path, subtasks=["snark"])
    with pytest.raises(FileNotFoundError, match=r"(?s)navigate\.json.*lukaemon/bbh"):
        load_bbh(tmp_path, subtasks="navigate")
    (tmp_path / "navigate.json").write_text(json.dumps({"examples": [{"input": "x"}]}))
    with pytest.raises(ValueError, match="lacks column"):
        load_bbh(tmp_path, subtasks="navigate")
    with pytest.raises(ValueError, match="holds subtask 'navigate' only"):
        load_bbh(tmp_path / "navigate.json", subtasks="snarks")


# --- MetaMathQA ----------------------------------------------------------------------------------------------

_TYPES = ("GSM_AnsAug", "GSM_Rephrased", "GSM_SV")


def _metamath_records(n_seeds: int = 30) -> list[dict]:
    """MetaMathQA-schema records: each seed question gets one augmentation per type, all sharing
    ``original_question``. Seeds are GSM8K train rows when the data is present, else hand-made."""
    path = default_gsm8k_dir() / "train.jsonl"
    if path.is_file():
        with path.open() as f:
            seeds = [json.loads(next(f)) for _ in range(n_seeds)]
    else:
        seeds = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = <<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}"}
                 for i in range(n_seeds)]
    records = []
    for seed in seeds:
        body, answer = seed["answer"].rsplit("####", 1)
        response = strip_calculator_annotations(body).strip() + "\nThe answer is: " + answer.strip().replace(",", "")
        for t in _TYPES:
            records.append({"query": f"[{t}] {seed['question']}", "response": response, "type": t,
                            "original_question": seed["question"]})
    return records


@pytest.fixture
def metamath_file(tmp_path):
    path = tmp_path / "MetaMathQA-395K.json"
    path.write_text(json.dumps(_metamath_records()))
    return path


def test_metamathqa_loader(metamath_file, tmp_path):
    records = json.loads(metamath_file.read_text())
    ds = load_metamathqa(metamath_file)
    assert_schema(ds)
    assert len(ds) == len(records) == 90
    assert set(ds["task"]) == {"metamathqa"} and set(ds["subtask"]) == set(_TYPES)
    assert ds["group"] == [r["original_question"] for r in records]
    assert ds["solution"] == [r["response"] for r in records]
    assert all(grade("metamath", r["solution"], r["answer"]) for r in ds)
    # a directory holding MetaMathQA-395K.json and a .jsonl file load the same rows
    assert load_metamathqa(tmp_path)["id"] == ds["id"]
    jsonl = tmp_path / "mm.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert load_metamathqa(jsonl)["answer"] == ds["answer"]


def test_metamathqa_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)MetaMathQA-395K\.json.*meta-math/MetaMathQA"):
        load_metamathqa(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"query": "q", "response": "r"}]))
    with pytest.raises(ValueError, match="lacks column"):
        load_metamathqa(bad)
    bad.write_text(json.dumps({"query": "q"}))
    with pytest.raises(ValueError, match="JSON list"):
        load_metamathqa(bad)


def test_metamathqa_grouped_split(metamath_file):
    ds = load_metamathqa(metamath_file)
    parts = grouped_split(ds, validation_fraction=0.2, seed=0)
    train, val = parts["train"], parts["validation"]
    assert len(train) + len(val) == len(ds)
    assert set(train["id"]).isdisjoint(val["id"])
    assert set(train["group"]).isdisjoint(val["group"]), "a seed question straddles train/validation"
    assert len(set(val["group"])) == 6  # 20% of 30 groups, every augmentation of each
    assert len(val) == 18
    # deterministic by seed, independent of row order, different for another seed
    again = grouped_split(ds, validation_fraction=0.2, seed=0)
    assert again["validation"]["id"] == val["id"]
    shuffled = grouped_split(ds.shuffle(seed=123), validation_fraction=0.2, seed=0)
    assert set(shuffled["validation"]["id"]) == set(val["id"])
    other = grouped_split(ds, validation_fraction=0.2, seed=1)
    assert set(other["validation"]["group"]) != set(val["group"])
    # rows keep their order within each side
    assert train["id"] == [i for i in ds["id"] if i in set(train["id"])]


def test_metamathqa_split_errors(metamath_file):
    ds = load_metamathqa(metamath_file)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="validation_fraction"):
            grouped_split(ds, validation_fraction=bad, seed=0)
    one_group = ds.filter(lambda r: r["group"] == ds[0]["group"])
    with pytest.raises(ValueError, match="at least 2 distinct groups"):
        grouped_split(one_group, validation_fraction=0.5, seed=0)
    tiny = grouped_split(ds, validation_fraction=0.001, seed=0)  # rounds to 0 groups: at least one held out
    assert len(set(tiny["validation"]["group"])) == 1
