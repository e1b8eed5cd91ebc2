"""Training runs compared at equal steps: their ``metrics.jsonl`` logs, binned by step, side by side.

An ablation at equal steps (two recipes, same data and budget) reads best as the mean of each metric over a few
step bins, since one logged batch is noisy. A run is named by its output folder, its ``metrics.jsonl``, or
``REV:path`` for a log that only lives in git history (read with ``git show``).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from selfdistill.paths import REPO_ROOT


def read_metrics(source: str, *, repo: Path = REPO_ROOT) -> list[dict]:
    """The training records (lines with a ``loss``) of one run's ``metrics.jsonl``.

    ``source``: a run folder, a ``metrics.jsonl`` file, or ``REV:path`` inside ``repo``'s git history.
    Raises ``FileNotFoundError`` naming ``source`` when there is nothing to read.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if path.is_file():
        text = path.read_text()
    elif ":" in source and not path.exists():
        shown = subprocess.run(["git", "show", source], cwd=repo, capture_output=True, text=True)
        if shown.returncode:
            raise FileNotFoundError(f"{source}: not a run folder or file, and git show says: {shown.stderr.strip()}")
        text = shown.stdout
    else:
        raise FileNotFoundError(f"{source}: no such run folder or metrics.jsonl")
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    train = [r for r in records if "loss" in r and "step" in r]
    if not train:
        raise FileNotFoundError(f"{source}: holds no training records (lines with 'step' and 'loss')")
    return train


def binned_means(records: list[dict], metrics: list[str], *, bin_steps: int) -> dict[int, dict[str, float]]:
    """``{last step of the bin: {metric: mean}}`` over bins ``(0, b], (b, 2b], ...`` of the logged steps.

    A metric missing from every record of a bin (e.g. ``agree_slot5`` when no step drew ``k >= 5``) is NaN there.
    """
    if bin_steps < 1:
        raise ValueError(f"bin_steps must be >= 1, got {bin_steps}")
    bins: dict[int, list[dict]] = {}
    for r in records:
        bins.setdefault(math.ceil(r["step"] / bin_steps) * bin_steps, []).append(r)
    out = {}
    for end in sorted(bins):
        out[end] = {}
        for m in metrics:
            values = [r[m] for r in bins[end] if isinstance(r.get(m), (int, float))]
            out[end][m] = sum(values) / len(values) if values else math.nan
    return out


def comparison_table(runs: dict[str, list[dict]], metrics: list[str], *, bin_steps: int) -> str:
    """A markdown table: one row per step bin, one column per (metric, run)."""
    means = {label: binned_means(recs, metrics, bin_steps=bin_steps) for label, recs in runs.items()}
    ends = sorted(set().union(*(m.keys() for m in means.values())))
    head = ["steps"] + [f"{m} {label}" for m in metrics for label in runs]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for end in ends:
        cells = [f"{end - bin_steps + 1}-{end}"]
        for m in metrics:
            for label in runs:
                value = means[label].get(end, {}).get(m, math.nan)
                cells.append("" if math.isnan(value) else f"{value:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
