"""On-policy training text: a dataset's questions answered by the base model's own greedy decoding.

The distillation teacher scores the student's chunks in whatever text the windows hold. Reference solutions
(GSM8K's human-written ones) are text the base model would not write; at decode time the student continues the
base model's *own* greedy text. On-policy rows replace each row's ``solution`` by the base model's greedy
completion of the same prompt the benchmark uses, so training sees the text decoding will see (issue #11's second
ablation; ``scripts/onpolicy_data.py`` writes them, ``docs/training.md`` shows how to train on them).

Pure pieces here (which rows, in which chunks, what a chunk keeps, the join at load); the recipe
(``selfdistill.eval.onpolicy_data``) does the decoding.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from collections.abc import Sequence

from selfdistill.data.prompts import SCHEMA
from selfdistill.run_folder import FINGERPRINT_FILE

#: Format version of the folder ``scripts/onpolicy_data.py`` writes (``fingerprint.json``, ``chunks/``).
#: 2: chunks hold :func:`onpolicy_record` (ids and generated text, no benchmark text); the trainer joins them with
#: their dataset at load (``onpolicy:<folder>``, :func:`join_onpolicy`).
FORMAT_VERSION = 2
#: The folder's chunk files: ``<folder>/chunks/*.jsonl`` (its options: ``<folder>/fingerprint.json``, the run folder's).
CHUNKS_DIR = "chunks"


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


def onpolicy_record(record: dict, *, max_new_tokens: int) -> dict:
    """What a chunk file keeps of one decoded row (:func:`selfdistill.eval.evaluation.evaluate`'s record): the
    row's ``id``, the base model's completion, and what the completion was. No question, reference solution or
    answer: a chunk holds only the model's own text, so it can be committed where the benchmark cannot.

    - ``finished``: it ended (EOS or a stop string) before ``max_new_tokens``; an unfinished one is cut text that
      would teach an end-of-answer where the model does not stop, so training keeps finished rows only;
    - ``base_correct``: its extracted answer equals the row's reference answer.
    """
    completion = record["completion"].strip()
    return {"id": record["id"], "completion": completion, "new_tokens": int(record["new_tokens"]),
            "finished": bool(completion) and record["new_tokens"] < max_new_tokens,
            "base_correct": bool(record["correct"])}


def onpolicy_row(row: dict, record: dict) -> dict:
    """The normalised ``row`` with its ``solution`` replaced by the completion of its :func:`onpolicy_record`,
    plus ``base_correct`` and the original as ``reference_solution``."""
    if record["id"] != row["id"]:
        raise ValueError(f"record {record['id']!r} does not belong to row {row['id']!r}")
    return {key: row[key] for key in SCHEMA} | {
        "solution": record["completion"], "base_correct": record["base_correct"],
        "reference_solution": row["solution"]}


def join_onpolicy(rows: Sequence[dict], records: Sequence[dict]) -> list[dict]:
    """Training rows: each *finished* record joined by ``id`` with its source row (in ``records``' order).

    ``rows``: the dataset the records were decoded from; a record whose id it lacks is an error (another dataset
    or version of it), as is an id written twice."""
    by_id = {row["id"]: row for row in rows}
    seen: set[str] = set()
    out = []
    for rec in records:
        if rec["id"] in seen:
            raise ValueError(f"on-policy record {rec['id']!r} appears twice")
        seen.add(rec["id"])
        if rec["id"] not in by_id:
            raise ValueError(f"on-policy record {rec['id']!r} has no row in its dataset: another dataset or version")
        if rec["finished"]:
            out.append(onpolicy_row(by_id[rec["id"]], rec))
    return out


def read_onpolicy_folder(folder: str | Path) -> tuple[dict, list[dict]]:
    """``(fingerprint, records)`` of an on-policy folder: its options and the records of every chunk written so
    far (a folder still being written gives the finished chunks)."""
    folder = Path(folder).expanduser()
    marker = folder / FINGERPRINT_FILE
    if not marker.is_file():
        raise FileNotFoundError(f"{folder} is not an on-policy data folder (no {FINGERPRINT_FILE}; "
                                "scripts/onpolicy_data.py writes one)")
    fp = json.loads(marker.read_text(encoding="utf-8"))
    if fp.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{folder} has on-policy format {fp.get('format_version')}, this version reads "
                         f"{FORMAT_VERSION}; write it again with scripts/onpolicy_data.py")
    records = [json.loads(line) for p in sorted((folder / CHUNKS_DIR).glob("*.jsonl"))
               for line in p.read_text(encoding="utf-8").splitlines()]
    return fp, records
