"""Two sweeps of the same prompts compared item by item: what an ablation of a model (two adapters, two recipes)
changes in tokens per forward, accuracy and text, with a paired standard error.

Each sweep's ``samples/<task>__<setting>.jsonl[.gz]`` (written by ``scripts/pareto.py``) holds one record per item
(``id``, ``completion``, ``correct``, ``tokens_per_forward``). Records of the same setting are paired by ``id``;
pairing removes the spread between questions (a long derivation vs a one-liner), which dominates the per-sweep
standard deviations, so a small difference between two adapters can be told from noise.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Sequence
from pathlib import Path

#: The columns of :func:`compare_settings` rows, in table order.
COLUMNS = ("setting", "n", "tpf_a", "tpf_b", "tpf_diff", "tpf_diff_se", "accuracy_a", "accuracy_b", "same_text")


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(mean(b - a), its standard error)`` over pairs ``(a[i], b[i])``; the error is ``std(b - a, ddof=1) /
    sqrt(n)`` (``nan`` for one pair)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired difference needs two equally long, non-empty sequences, got {len(a)} and {len(b)}")
    diffs = [y - x for x, y in zip(a, b)]
    mean = math.fsum(diffs) / len(diffs)
    if len(diffs) == 1:
        return mean, float("nan")
    var = math.fsum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return mean, math.sqrt(var / len(diffs))


def pair_records(a: Sequence[dict], b: Sequence[dict]) -> list[tuple[dict, dict]]:
    """The records of ``a`` and ``b`` with the same ``id``, in ``a``'s order; refuses disjoint or repeated ids."""
    by_id = {r["id"]: r for r in b}
    if len(by_id) != len(b) or len({r["id"] for r in a}) != len(a):
        raise ValueError("a sweep's samples repeat an id")
    pairs = [(r, by_id[r["id"]]) for r in a if r["id"] in by_id]
    if not pairs:
        raise ValueError("the two sweeps share no item id (different tasks, subsets or seeds?)")
    return pairs


def compare_setting(setting: str, a: Sequence[dict], b: Sequence[dict]) -> dict:
    """One row of :data:`COLUMNS` for one setting: over the shared items, both sweeps' mean tokens per forward,
    their paired difference (b - a) and its standard error, both accuracies (%), and the share of items whose
    completion is the same text in both (%)."""
    pairs = pair_records(a, b)
    diff, se = paired_difference([x["tokens_per_forward"] for x, _ in pairs],
                                 [y["tokens_per_forward"] for _, y in pairs])
    n = len(pairs)
    return {"setting": setting, "n": n,
            "tpf_a": math.fsum(x["tokens_per_forward"] for x, _ in pairs) / n,
            "tpf_b": math.fsum(y["tokens_per_forward"] for _, y in pairs) / n,
            "tpf_diff": diff, "tpf_diff_se": se,
            "accuracy_a": 100 * sum(bool(x["correct"]) for x, _ in pairs) / n,
            "accuracy_b": 100 * sum(bool(y["correct"]) for _, y in pairs) / n,
            "same_text": 100 * sum(x["completion"] == y["completion"] for x, y in pairs) / n}


def read_samples(folder: str | Path, task: str) -> dict[str, list[dict]]:
    """``{setting: records}`` of one task in a sweep folder (``samples/<task>__<setting>.jsonl`` or ``.jsonl.gz``)."""
    root = Path(folder) / "samples"
    if not root.is_dir():
        raise FileNotFoundError(f"{folder} has no samples/ folder: is it a pareto.py sweep?")
    out = {}
    for path in sorted(root.glob(f"{task}__*.jsonl*")):
        setting = path.name[len(task) + 2:].removesuffix(".gz").removesuffix(".jsonl")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            out[setting] = [json.loads(line) for line in f if line.strip()]
    if not out:
        raise FileNotFoundError(f"{root} holds no samples of task {task!r}")
    return out


def compare_sweeps(a: dict[str, list[dict]], b: dict[str, list[dict]]) -> list[dict]:
    """One :func:`compare_setting` row per setting both sweeps ran, in ``a``'s order; refuses sweeps with none."""
    shared = [s for s in a if s in b]
    if not shared:
        raise ValueError(f"the sweeps ran no setting in common ({sorted(a)} vs {sorted(b)})")
    return [compare_setting(s, a[s], b[s]) for s in shared]


def comparison_markdown(rows: Sequence[dict], *, labels: tuple[str, str]) -> str:
    """A markdown table of :func:`compare_sweeps` rows, headed by the two sweeps' labels."""
    a, b = labels
    lines = [f"| setting | n | tokens / forward: {a} | {b} | {b} - {a} (paired SE) | accuracy (%): {a} | {b} "
             f"| same text (%) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['n']} | {r['tpf_a']:.3f} | {r['tpf_b']:.3f} | "
                     f"{r['tpf_diff']:+.3f} ± {r['tpf_diff_se']:.3f} | {r['accuracy_a']:.1f} | {r['accuracy_b']:.1f} "
                     f"| {r['same_text']:.1f} |")
    return "\n".join(lines)
