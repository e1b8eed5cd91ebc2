"""The recipe of ``scripts/compare_runs.py``: training runs side by side at equal steps, binned means of their
logged metrics (the table: :func:`selfdistill.train.compare.comparison_table`).

    python scripts/compare_runs.py --runs runs/a runs/b --labels a b
    python scripts/compare_runs.py --runs 9f8dacf:selfdistill/assets/smollm2_135m_mtp/metrics.jsonl \\
        selfdistill/assets/smollm2_135m_mtp --labels k2-16 k2-5 --out results/ablations/smollm2_k_range.md

Prints a markdown table (and writes it, with the command and commit, to ``--out`` when given).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_METRICS = ["agree_slot2", "agree_slot3", "agree_slot4", "agree_slot5", "agree_run"]


@dataclass(kw_only=True)
class CompareConfig:
    runs: list[str] = field(default_factory=list, metadata={
        "help": "run folders, metrics.jsonl files or REV:path in git history (two or more)"})
    labels: list[str] | None = field(default=None, metadata={"help": "one per run (default: run1, run2, ...)"})
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    bin_steps: int = field(default=50, metadata={"help": "steps per bin"})
    max_step: int | None = field(default=None, metadata={
        "help": "only steps <= this (e.g. the last step of a run stopped early; default: every logged step)"})
    out: str | None = field(default=None, metadata={"help": "also write the table here (markdown)"})


def check_config(cfg: CompareConfig) -> None:
    if len(cfg.runs) < 2:
        raise ValueError(f"--runs needs two or more runs, got {cfg.runs}")
    if cfg.labels is not None and len(cfg.labels) != len(cfg.runs):
        raise ValueError(f"--labels must name each of the {len(cfg.runs)} runs, got {cfg.labels}")
    if cfg.bin_steps < 1 or not cfg.metrics:
        raise ValueError("--bin_steps must be >= 1 and --metrics non-empty")
    if cfg.max_step is not None and cfg.max_step < 1:
        raise ValueError(f"--max_step must be >= 1, got {cfg.max_step}")


def run_compare_runs(cfg: CompareConfig) -> str:
    """Print the table of ``cfg.runs`` (and write it to ``cfg.out``); returns it."""
    from selfdistill.provenance import provenance
    from selfdistill.run_folder import write_markdown_report
    from selfdistill.train.compare import comparison_table, read_metrics

    labels = cfg.labels or [f"run{i + 1}" for i in range(len(cfg.runs))]
    runs = {label: [r for r in read_metrics(source) if cfg.max_step is None or r["step"] <= cfg.max_step]
            for label, source in zip(labels, cfg.runs)}
    table = comparison_table(runs, cfg.metrics, bin_steps=cfg.bin_steps)
    print(table)
    if cfg.out:
        steps = f" (steps <= {cfg.max_step})" if cfg.max_step else ""
        write_markdown_report(cfg.out, provenance(), dict(zip(labels, cfg.runs)), "Runs",
                              f"Mean of each logged value over {cfg.bin_steps}-step bins{steps}:\n\n{table}")
    return table
