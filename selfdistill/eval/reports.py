"""The reports of a finished sweep: ``summary.csv``, ``summary.json``, ``frontier.md``, ``summary.md`` (plain words,
:mod:`selfdistill.eval.plain_summary`) and ``plots/<task>.png``
(layout and metrics: :mod:`selfdistill.eval.sweep`)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from selfdistill.decode.registry import strategy_class, strategy_names
from selfdistill.eval.frontier import frontier_mask
from selfdistill.eval.plain_summary import plain_summary
from selfdistill.eval.presentation import look
from selfdistill.run_folder import RunFolder

class Frontier(NamedTuple):
    """One frontier of a task's rows, and its plot panel: ``y`` against ``x`` (row columns), both maximised."""

    name: str
    x: str
    xlabel: str
    y: str
    ylabel: str


#: The frontiers reported per task, one plot panel each. The third is fidelity: agreement with the same model's
#: greedy answers, the axis that matters where task accuracy sits at the floor (a 135M model on GSM8K), since it
#: counts every changed answer, right or wrong.
FRONTIERS = (Frontier("tokens_per_forward", "tokens_per_forward_mean", "tokens per forward pass", "accuracy",
                      "accuracy (%)"),
             Frontier("tokens_per_second", "tokens_per_second", "tokens / s", "accuracy", "accuracy (%)"),
             Frontier("agreement", "tokens_per_forward_mean", "tokens per forward pass", "answer_agreement",
                      "answer agreement with greedy (%)"))
#: The mark of each frontier in ``frontier.md``.
FRONTIER_MARKS = {"tokens_per_forward": "F", "tokens_per_second": "T", "agreement": "A"}
CSV_COLUMNS = ("task", "setting", "strategy", "k", "threshold", "k_max", "mask_margin", "n", "accuracy",
               "accuracy_stderr", "tokens_per_forward_mean", "tokens_per_forward_std", "tokens_per_second",
               "answer_agreement", "exact_agreement", "draft_precision", "draft_checked",
               "batch_size", "num_threads", "host", "seconds", "new_tokens",
               "forward_passes", *(f"frontier_{f.name}" for f in FRONTIERS))


def table_rows(task: str, summaries: Sequence[dict]) -> list[dict]:
    """Flat rows (:data:`CSV_COLUMNS`) of one task's summaries, with both frontier memberships marked."""
    rows = []
    for s in summaries:
        st = s["setting"]
        row = {c: s.get(c) for c in CSV_COLUMNS}
        options = {o.name for o in strategy_class(st["strategy"]).options}  # older records hold every field
        row.update(task=task, setting=st["name"], strategy=st["strategy"],
                   **{k: st.get(k) if k in options else None for k in ("k", "threshold", "k_max", "mask_margin")})
        rows.append(row)
    for f in FRONTIERS:
        for row, on in zip(rows, frontier_mask(rows, x=f.x, y=f.y)):
            row[f"frontier_{f.name}"] = on
    return rows


def _fmt(v: float | None, digits: int) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _pct(v: float | None) -> str:
    return _fmt(None if v is None else 100 * v, 1)


def frontier_markdown(rows_by_task: dict[str, list[dict]], *, model: str, batch_size: int) -> str:
    """One markdown table per task: every setting, frontier members marked (README-includable)."""
    lines = [f"# Accuracy vs speed: `{model}`", "",
             "Accuracy ± standard error (%); tokens per forward pass, mean ± std over samples (prefill pass "
             f"counted); tokens/s measured at batch size {batch_size}; agreement with the same model's greedy "
             "output (the generate row): extracted answer / exact completion (%); draft precision: the share of "
             "emitted mask tokens that a later pass found equal to greedy's token at the same prefix (%; lossless "
             "modes verify theirs; the last chunk of each completion is unchecked). Frontier (non-dominated, higher "
             "is better on both axes): **F** accuracy vs tokens per forward, **T** accuracy vs tokens/s, **A** answer "
             "agreement vs tokens per forward.", ""]
    for task, rows in rows_by_task.items():
        lines += [f"## {task} (n = {rows[0]['n']})", "",
                  "| setting | accuracy (%) | tokens / forward | tokens / s | agreement (%) | draft precision (%) "
                  "| frontier |",
                  "|---|---:|---:|---:|---:|---:|:---:|"]
        for r in rows:
            marks = "".join(m for name, m in FRONTIER_MARKS.items() if r[f"frontier_{name}"])
            lines.append(f"| {r['setting']} | {_fmt(100 * r['accuracy'], 1)} ± {_fmt(100 * r['accuracy_stderr'], 1)} "
                         f"| {_fmt(r['tokens_per_forward_mean'], 2)} ± {_fmt(r['tokens_per_forward_std'], 2)} "
                         f"| {_fmt(r['tokens_per_second'], 1)} | {_pct(r['answer_agreement'])} / "
                         f"{_pct(r['exact_agreement'])} | {_pct(r.get('draft_precision'))} | {marks} |")
        lines.append("")
    return "\n".join(lines)


def plot_task(path: Path, task: str, rows: Sequence[dict], *, model: str, batch_size: int) -> None:
    """One panel per :data:`FRONTIERS` entry (accuracy vs tokens per forward and vs tokens/s, answer agreement vs
    tokens per forward): ConfAdapt curve, static-k points, verify, the generate baseline, error bars = standard
    error, frontier drawn as a step line and ringed. A panel whose y column no row has (agreement without a
    generate row) is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [f for f in FRONTIERS if any(_finite(r.get(f.y)) for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        _plot_panel(ax, rows, panel, batch_size=batch_size)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(f"{task}: {model} (n = {rows[0]['n']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: A setting whose accuracy is below this share of ``generate``'s is drawn faint, as "fast and wrong".
COLLAPSED_SHARE = 0.25


def collapsed(rows: Sequence[dict]) -> set[str]:
    """Settings whose accuracy fell below :data:`COLLAPSED_SHARE` of ``generate``'s (none without a ``generate``
    row, or when ``generate`` itself scores 0): still on the frontier if they are, but not a goal."""
    base = next((r["accuracy"] for r in rows if r["strategy"] == "generate" and _finite(r.get("accuracy"))), None)
    if not base:
        return set()
    return {r["setting"] for r in rows if _finite(r.get("accuracy")) and r["accuracy"] < COLLAPSED_SHARE * base}


def _plot_panel(ax, rows: Sequence[dict], panel: Frontier, *, batch_size: int) -> None:
    name, xcol, xlabel, ycol, ylabel = panel
    wrong = collapsed(rows)
    for strategy in strategy_names():
        shown = look(strategy)
        style = shown.style | {"label": shown.label}
        pts = [r for r in rows if r["strategy"] == strategy and _finite(r[xcol]) and _finite(r.get(ycol))]
        if shown.curve is not None:
            pts.sort(key=lambda r: -r[shown.curve])
        if not pts:
            continue
        if name == "tokens_per_second":
            style = style | {"ls": "none"}  # measured speed need not fall with the threshold: no curve
        faint = [r for r in pts if r["setting"] in wrong]
        pts = [r for r in pts if r["setting"] not in wrong]
        if faint:
            ax.scatter([r[xcol] for r in faint], [100 * r[ycol] for r in faint], marker="x", alpha=0.4,
                       color=style.get("color", "gray"))
        if not pts:
            continue
        yerr = [100 * _nan0(r["accuracy_stderr"]) for r in pts] if ycol == "accuracy" else None
        ax.errorbar([r[xcol] for r in pts], [100 * r[ycol] for r in pts], yerr=yerr, capsize=2, **style)
        for r in pts:
            label = _point_label(r)
            if label:
                ax.annotate(label, (r[xcol], 100 * r[ycol]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = sorted((r for r in rows if r[f"frontier_{name}"]), key=lambda r: r[xcol])
    useful = [r for r in front if r["setting"] not in wrong]
    if useful:
        ax.step([r[xcol] for r in useful], [100 * r[ycol] for r in useful], where="post", color="red", alpha=0.35,
                lw=6, zorder=0, label="Pareto frontier")
    if len(useful) < len(front):  # the true frontier goes on through fast-and-wrong points: drawn thin
        ax.step([r[xcol] for r in front], [100 * r[ycol] for r in front], where="post", color="gray", alpha=0.5,
                lw=1, ls="--", zorder=0)
    if front:
        ax.scatter([r[xcol] for r in front], [100 * r[ycol] for r in front], s=160, facecolors="none",
                   edgecolors=["gray" if r["setting"] in wrong else "red" for r in front], zorder=5)
        for r in front:
            if r["setting"] in wrong:
                ax.annotate("fast and wrong", (r[xcol], 100 * r[ycol]), fontsize=7, color="gray", xytext=(-20, 10),
                            textcoords="offset points")
    if wrong:
        ax.scatter([], [], marker="x", color="gray", alpha=0.4,
                   label=f"accuracy < {COLLAPSED_SHARE:.0%} of generate's (fast and wrong)")
    ax.set_xlabel(xlabel + (f" (batch size {batch_size})" if name == "tokens_per_second" else ""))
    ax.set_ylabel(ylabel)
    top = max(100 * r[ycol] for r in rows if _finite(r.get(ycol)))
    ax.set_ylim(-2, min(102, top * 1.15 + 5))
    ax.grid(alpha=0.3)


def _point_label(row: dict) -> str | None:
    # a stored row holds every option of its setting as measured (defaults filled): read, not rebuilt
    return look(row["strategy"]).point({o.name: row.get(o.name) for o in strategy_class(row["strategy"]).options})


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _nan0(v) -> float:
    return 0.0 if not _finite(v) else v


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (a committed summary names no machine's
    absolute paths), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_reports(root: Path, summaries: dict[str, list[dict]], *, meta: dict, plots: bool = True) -> dict[str, Path]:
    """``summary.csv``, ``summary.json``, ``frontier.md`` and (``plots``) ``plots/<task>.png`` from the finished
    summaries ``{task: [summary per setting]}``; ``meta`` (provenance, config) goes into ``summary.json``.
    Returns the written paths by kind."""
    rows_by_task = {task: table_rows(task, s) for task, s in summaries.items() if s}
    all_rows = [r for rows in rows_by_task.values() for r in rows]
    written = {"csv": root / "summary.csv", "json": root / "summary.json", "markdown": root / "frontier.md",
               "summary": root / "summary.md"}
    folder = RunFolder(root)
    folder.write_csv(written["csv"].name, all_rows, columns=CSV_COLUMNS)
    frontiers = {task: {f.name: [r["setting"] for r in sorted(rows, key=lambda r: r[f.x]) if r[f"frontier_{f.name}"]]
                        for f in FRONTIERS} for task, rows in rows_by_task.items()}
    folder.write_text(written["json"].name, json.dumps(meta | {"results": summaries, "frontier": frontiers},
                                                       indent=2, default=str))
    model, batch = meta["config"]["model"], meta["config"]["batch_size"]
    folder.write_text(written["markdown"].name, frontier_markdown(rows_by_task, model=model, batch_size=batch))
    folder.write_text(written["summary"].name, plain_summary(rows_by_task, root=shown_path(root), model=model))
    if plots:
        for task, rows in rows_by_task.items():
            written[f"plot_{task}"] = root / "plots" / f"{task}.png"
            plot_task(written[f"plot_{task}"], task, rows, model=model, batch_size=batch)
    return written
