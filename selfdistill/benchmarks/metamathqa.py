"""MetaMathQA loader and its grouped train/validation split.

Records ``{"query", "response", "type", "original_question"}`` (response ending ``The answer is: X``) -> rows:
``id`` ``metamathqa/{i}``, ``task`` ``metamathqa``, ``subtask`` = type (``GSM_AnsAug``, ``MATH_FOBAR``, ...),
``question`` = query, ``solution`` = response, ``answer`` = the text after the last ``The answer is:`` (``""``
when a response has none), ``group`` = original_question (the GSM8K/MATH seed question every augmentation of it
shares).
"""

from __future__ import annotations

import os
import random

import datasets

from selfdistill.benchmarks.source import check_columns, is_local, load_hub, read_records, require_file, to_dataset
from selfdistill.paths import default_data_dir

HUB_NAME = "meta-math/MetaMathQA"
LOCAL_FILE = "MetaMathQA-395K.json"  # the hub repository's single data file
_ANSWER_MARKER = "The answer is:"


def default_metamathqa_file():
    """``selfdistill.paths.default_data_dir()/metamathqa/MetaMathQA-395K.json``."""
    return default_data_dir() / "metamathqa" / LOCAL_FILE


def normalize_metamathqa_record(record: dict, *, index: int) -> dict:
    """One raw MetaMathQA record -> one normalised row (see the module docstring)."""
    check_columns(record, ("query", "response", "type", "original_question"), where=f"MetaMathQA row {index}")
    response = record["response"]
    idx = response.rfind(_ANSWER_MARKER)
    answer = response[idx + len(_ANSWER_MARKER):].strip() if idx >= 0 else ""
    return {"id": f"metamathqa/{index}", "task": "metamathqa", "subtask": record["type"],
            "question": record["query"], "solution": response, "answer": answer,
            "group": record["original_question"]}


def load_metamathqa(path: str | os.PathLike | None = None, *, split: str = "train") -> datasets.Dataset:
    """MetaMathQA as a normalised dataset.

    ``path``: ``None`` -> :func:`default_metamathqa_file` if it exists, else the hub id ``"meta-math/MetaMathQA"``;
    a local ``.json`` (list) / ``.jsonl`` file or a directory holding ``MetaMathQA-395K.json``; or a hub id.
    ``split`` is only used for hub loads (MetaMathQA has a single ``train`` split; see :func:`split_metamathqa`).
    """
    if path is None:
        path = default_metamathqa_file() if default_metamathqa_file().is_file() else HUB_NAME
    if not is_local(path):
        records = load_hub(str(path), config=None, split=split, what="MetaMathQA")
    else:
        file = os.path.expanduser(str(path))
        if os.path.isdir(file):
            file = os.path.join(file, LOCAL_FILE)
        file = require_file(file, what="MetaMathQA file", how_to_get=(
            f"Download {LOCAL_FILE} from the hub dataset {HUB_NAME!r} and put it there, or pass the hub id "
            f"{HUB_NAME!r}."))
        records = read_records(file)
    return to_dataset([normalize_metamathqa_record(dict(r), index=i) for i, r in enumerate(records)])


def split_metamathqa(ds: datasets.Dataset, *, validation_fraction: float, seed: int) -> datasets.DatasetDict:
    """``{"train", "validation"}`` split by ``group`` (the seed question), so that no seed question's
    augmentations straddle the two sides; deterministic in ``seed`` and independent of row order.

    ``validation_fraction`` is the fraction of *groups* held out (rounded, at least one group on each side);
    rows keep their original order within each side.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    groups = ds.select_columns(["group"]).to_dict()["group"]  # one Arrow read; iterating ds["group"] is ~100x slower
    unique = sorted(set(groups))  # sorted first so the shuffle does not depend on row order
    if len(unique) < 2:
        raise ValueError(f"need at least 2 distinct groups to split, got {len(unique)}")
    random.Random(seed).shuffle(unique)
    n_val = min(max(1, round(validation_fraction * len(unique))), len(unique) - 1)
    held_out = set(unique[:n_val])
    val_idx = [i for i, g in enumerate(groups) if g in held_out]
    train_idx = [i for i, g in enumerate(groups) if g not in held_out]
    return datasets.DatasetDict({"train": ds.select(train_idx), "validation": ds.select(val_idx)})
