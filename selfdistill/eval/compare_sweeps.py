"""The recipe of ``scripts/compare_sweeps.py``: two decoding sweeps of the same prompts side by side, item by item
(:mod:`selfdistill.eval.paired`): per setting both ran, tokens per forward with the paired difference and its
standard error, accuracy, and how often the text is the same. For ablations of a model: two adapters, two recipes,
one setting grid.

    python scripts/compare_sweeps.py --sweeps results/smollm2-135m-mtp-750 results/ablations/smollm2_nospace_750 \\
        --labels shipped nospace --task gsm8k --out results/ablations/smollm2_nospace_750.md

Prints a markdown table (and writes it, with the command and commit, to ``--out`` when given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(kw_only=True)
class CompareSweepsConfig:
    sweeps: list[str] = field(default_factory=list, metadata={"help": "two pareto.py output folders (a, then b)"})
    labels: list[str] | None = field(default=None, metadata={"help": "a name for each (default: a b)"})
    task: str = field(default="gsm8k", metadata={"help": "the task whose samples are compared"})
    out: str | None = field(default=None, metadata={"help": "also write the table here (markdown)"})


def check_config(cfg: CompareSweepsConfig) -> None:
    if len(cfg.sweeps) != 2:
        raise ValueError(f"--sweeps needs exactly two sweep folders, got {cfg.sweeps}")
    if cfg.labels is not None and len(cfg.labels) != 2:
        raise ValueError(f"--labels must name both sweeps, got {cfg.labels}")
    for folder in cfg.sweeps:
        if not (Path(folder) / "samples").is_dir():
            raise FileNotFoundError(f"--sweeps {folder}: no samples/ folder there (a pareto.py output folder?)")


def run_compare_sweeps(cfg: CompareSweepsConfig) -> str:
    """Print the paired table of ``cfg.sweeps`` on ``cfg.task`` (and write it to ``cfg.out``); returns it."""
    from selfdistill.eval.paired import compare_sweeps, comparison_markdown, read_samples
    from selfdistill.provenance import provenance
    from selfdistill.run_folder import write_markdown_report

    labels = tuple(cfg.labels or ("a", "b"))
    a, b = (read_samples(folder, cfg.task) for folder in cfg.sweeps)
    table = comparison_markdown(compare_sweeps(a, b), labels=labels)
    print(table)
    if cfg.out:
        write_markdown_report(cfg.out, provenance(), dict(zip(labels, cfg.sweeps)),
                              f"Sweeps ({cfg.task}, items paired by id)", table)
    return table
