"""On-policy training text: a dataset's questions answered by the base model's own greedy decoding.

The distillation teacher scores the student's chunks in whatever text the windows hold. Reference solutions
(GSM8K's human-written ones) are text the base model would not write; at decode time the student continues the
base model's *own* greedy text. On-policy rows replace each row's ``solution`` by the base model's greedy
completion of the same prompt the benchmark uses, so training sees the text decoding will see (issue #11's second
ablation; ``scripts/onpolicy_data.py`` writes them, ``docs/training.md`` shows how to train on them).

Pure pieces here (which rows, in which chunks, what a kept row looks like); the script does the decoding.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from selfdistill.data.prompts import SCHEMA

#: Format version of the folder ``scripts/onpolicy_data.py`` writes (``meta.json``).
FORMAT_VERSION = 1


def pick_rows(rows: Sequence[dict], *, limit: int | None, seed: int) -> list[dict]:
    """``limit`` rows of ``rows`` drawn without replacement by ``seed`` (all of them, shuffled, when ``limit`` is
    ``None`` or larger). Deterministic in ``seed`` and independent of nothing else, so a resumed run picks the same."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return [rows[i] for i in order[:limit]]


def chunks(items: Sequence, *, size: int) -> list[list]:
    """``items`` cut into consecutive lists of ``size`` (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def onpolicy_row(row: dict, record: dict, *, max_new_tokens: int) -> dict:
    """The normalised ``row`` with its ``solution`` replaced by the base model's completion in ``record``
    (:func:`selfdistill.eval.evaluation.evaluate`'s record for that row), plus what the completion was:

    - ``finished``: it ended (EOS or a stop string) before ``max_new_tokens``; an unfinished one is cut text that
      would teach an end-of-answer where the model does not stop, so training files keep finished rows only;
    - ``base_correct``: its extracted answer equals the reference ``answer`` (the row keeps the reference answer);
    - ``reference_solution``: the row's original solution.
    """
    if record["id"] != row["id"]:
        raise ValueError(f"record {record['id']!r} does not belong to row {row['id']!r}")
    completion = record["completion"].strip()
    return {key: row[key] for key in SCHEMA} | {
        "solution": completion,
        "finished": bool(completion) and record["new_tokens"] < max_new_tokens,
        "base_correct": bool(record["correct"]),
        "reference_solution": row["solution"],
    }
