"""BIG-Bench Hard loader: ``<dir>/<subtask>.json`` files ``{"examples": [{"input", "target"}]}`` -> rows.

Row: ``id`` ``bbh/{subtask}/{i}``, ``task`` ``bbh``, ``subtask`` = file stem, ``question`` = input,
``solution`` ``""`` (BBH has no reference reasoning), ``answer`` = target, ``group`` = input. The files carry
BIG-bench's canary string: they are for evaluation only, never training data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import datasets

from selfdistill.data.benchmarks.source import check_columns, is_local, load_hub, require_file, to_dataset
from selfdistill.paths import default_bbh_dir

HUB_NAME = "lukaemon/bbh"  # one config per subtask, split "test"; lm-eval 0.4.13 uses "SaylorTwift/bbh"

#: The 27 BBH subtasks (file stems of the BIG-Bench-Hard repository's ``bbh/`` folder).
BBH_SUBTASKS: tuple[str, ...] = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
    "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
    "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
    "word_sorting",
)


def check_subtasks(subtasks: str | Sequence[str] | None) -> tuple[str, ...]:
    """``None`` -> all 27; a name or list of names -> validated tuple (unknown names raise, listing valid ones)."""
    if subtasks is None:
        return BBH_SUBTASKS
    names = (subtasks,) if isinstance(subtasks, str) else tuple(subtasks)
    unknown = [n for n in names if n not in BBH_SUBTASKS]
    if unknown:
        raise ValueError(f"unknown BBH subtask(s) {unknown}; valid: {', '.join(BBH_SUBTASKS)}")
    if not names:
        raise ValueError("empty list of BBH subtasks; pass None for all 27")
    return names


def _normalize(examples: list[dict], subtask: str) -> list[dict]:
    rows = []
    for i, ex in enumerate(examples):
        check_columns(ex, ("input", "target"), where=f"BBH {subtask} example {i}")
        rows.append({"id": f"bbh/{subtask}/{i}", "task": "bbh", "subtask": subtask, "question": ex["input"],
                     "solution": "", "answer": ex["target"], "group": ex["input"]})
    return rows


def load_bbh(path: str | os.PathLike | None = None, subtasks: str | Sequence[str] | None = None, *,
             hub_split: str = "test") -> datasets.Dataset:
    """BBH ``subtasks`` (default all 27, in :data:`BBH_SUBTASKS` order) as one normalised dataset.

    ``path``: ``None`` -> ``selfdistill.paths.default_bbh_dir()``; a local directory of ``<subtask>.json``
    files; a single ``<subtask>.json`` file (its stem is the subtask); or a hub id such as ``"lukaemon/bbh"``
    (one config per subtask).
    """
    if path is not None and is_local(path) and str(path).endswith(".json"):
        file = Path(path).expanduser()
        if subtasks is None:
            subtasks = file.stem
        names = check_subtasks(subtasks)
        if names != (file.stem,):
            raise ValueError(f"file {file} holds subtask {file.stem!r} only; asked for {list(names)}")
        base = file.parent
    else:
        names = check_subtasks(subtasks)
        base = None if path is not None and not is_local(path) else Path(path or default_bbh_dir()).expanduser()
    rows: list[dict] = []
    for name in names:
        if base is None:
            examples = list(load_hub(str(path), config=name, split=hub_split, what=f"BBH subtask {name}"))
        else:
            file = require_file(base / f"{name}.json", what=f"BBH subtask file {name}.json", how_to_get=(
                "Put the BIG-Bench-Hard repository's bbh/*.json files (and cot-prompts/ for few-shot) in that "
                f"folder (or set SELFDISTILL_DATA_DIR so that <dir>/bbh/ holds them), or pass the hub id "
                f"{HUB_NAME!r}."))
            data = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or "examples" not in data:
                raise ValueError(f"{file}: expected a JSON object with an 'examples' list")
            examples = data["examples"]
        rows.extend(_normalize(examples, name))
    return to_dataset(rows)
