"""GSM8K loader: ``question`` + ``answer`` (a worked solution ending ``#### N``) -> normalised rows.

Row: ``id`` ``gsm8k/{split}/{i}``, ``task`` ``gsm8k``, ``subtask`` ``""``, ``question``, ``solution`` (the
answer field), ``answer`` = N with thousands commas stripped, ``group`` = the question text (MetaMathQA's
``original_question`` of a GSM-derived row is that same text, so groups line up across the two datasets).

Calculator annotations ``<<48/2=24>>`` are removed from ``solution`` by default: they are tool-use markup from
GSM8K's collection, not reasoning text, MetaMathQA's GSM-derived responses do not have them, and they cost
tokens. lm-eval's zero-shot ``gsm8k`` task keeps them in its targets; pass ``calculator_annotations=True`` to do
the same. (Our few-shot prompts use the fixed CoT exemplars, so evaluation prompts do not depend on this.)
"""

from __future__ import annotations

import os
import re

import datasets

from rewards.graders import normalize_gsm8k_gold
from selfdistill.data.benchmarks.source import check_columns, is_local, load_hub, read_records, require_file, to_dataset
from selfdistill.paths import default_gsm8k_dir

HUB_NAME = "openai/gsm8k"
#: The dev split, for every recipe and adapter choice (the test split is reported, never tuned on): the GSM8K
#: *train* questions held out by the trainer's own grouped split at its defaults (validation_fraction 0.01, seed 0),
#: 75 questions. No adapter of the shipped lineage trained on them, and a ``gsm8k`` training run never does, at any
#: seed or fraction (:func:`selfdistill.data.sources.load_rows` drops them from its train side).
DEV_FRACTION, DEV_SEED = 0.01, 0
HUB_CONFIG = "main"
SPLITS = ("train", "test")
_ANNOTATION = re.compile(r"<<[^<>]*>>")


def strip_calculator_annotations(solution: str) -> str:
    """``"48/2 = <<48/2=24>>24"`` -> ``"48/2 = 24"``."""
    return _ANNOTATION.sub("", solution)


def normalize_gsm8k_record(record: dict, *, split: str, index: int, calculator_annotations: bool = False) -> dict:
    """One raw GSM8K record -> one normalised row (see the module docstring)."""
    where = f"GSM8K {split} row {index}"
    check_columns(record, ("question", "answer"), where=where)
    answer = normalize_gsm8k_gold(record["answer"]) if "####" in record["answer"] else None
    if answer is None:
        raise ValueError(f"{where}: answer does not end with '#### <number>': {record['answer'][-80:]!r}")
    solution = record["answer"] if calculator_annotations else strip_calculator_annotations(record["answer"])
    return {"id": f"gsm8k/{split}/{index}", "task": "gsm8k", "subtask": "", "question": record["question"],
            "solution": solution, "answer": answer, "group": record["question"]}


def load_gsm8k(path: str | os.PathLike | None = None, *, split: str = "test",
               calculator_annotations: bool = False) -> datasets.Dataset:
    """GSM8K ``split`` as a normalised dataset.

    ``path``: ``None`` -> ``selfdistill.paths.default_gsm8k_dir()/{split}.jsonl``; a local directory (holding
    ``{split}.jsonl``) or ``.jsonl`` file; or a hub id such as ``"openai/gsm8k"`` (config ``"main"``).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown GSM8K split {split!r}; choose from {SPLITS}")
    if path is not None and not is_local(path):
        records = load_hub(str(path), config=HUB_CONFIG, split=split, what="GSM8K")
    else:
        file = default_gsm8k_dir() / f"{split}.jsonl" if path is None else os.path.expanduser(str(path))
        if os.path.isdir(file):
            file = os.path.join(file, f"{split}.jsonl")
        file = require_file(file, what=f"GSM8K {split} file", how_to_get=(
            f"Put the openai/grade-school-math file grade_school_math/data/{split}.jsonl there (or set "
            f"SELFDISTILL_DATA_DIR so that <dir>/gsm8k/{split}.jsonl exists), or pass the hub id {HUB_NAME!r}."))
        records = read_records(file)
    rows = [normalize_gsm8k_record(dict(r), split=split, index=i, calculator_annotations=calculator_annotations)
            for i, r in enumerate(records)]
    return to_dataset(rows)


def dev_split(train: datasets.Dataset) -> datasets.DatasetDict:
    """``{"train", "validation"}`` of GSM8K's train split (normalised rows) at the dev split's fraction and seed:
    ``validation`` is the dev set."""
    from selfdistill.data.split import grouped_split

    return grouped_split(train, validation_fraction=DEV_FRACTION, seed=DEV_SEED)


def load_gsm8k_dev(path: str | os.PathLike | None = None) -> datasets.Dataset:
    """The dev questions (:data:`DEV_FRACTION`), normalised; their ids are ``gsm8k/train/{i}``."""
    return dev_split(load_gsm8k(path, split="train"))["validation"]
