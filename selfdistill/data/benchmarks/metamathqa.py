"""MetaMathQA loader (its train/validation split is :func:`selfdistill.data.split.grouped_split`).

Records ``{"query", "response", "type", "original_question"}`` (response ending ``The answer is: X``) -> rows:
``id`` ``metamathqa/{i}``, ``task`` ``metamathqa``, ``subtask`` = type (``GSM_AnsAug``, ``MATH_FOBAR``, ...),
``question`` = query, ``solution`` = response, ``answer`` = the text after the last ``The answer is:`` (``""``
when a response has none), ``group`` = original_question (the GSM8K/MATH seed question every augmentation of it
shares).
"""

from __future__ import annotations

import os

import datasets

from selfdistill.data.benchmarks.source import check_columns, is_local, load_hub, read_records, require_file, to_dataset
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
    ``split`` is only used for hub loads (MetaMathQA has a single ``train`` split; see :func:`grouped_split`).
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
