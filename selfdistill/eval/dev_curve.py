"""Dev tokens per forward against training tokens across runs: does more training keep paying?

Each point is one dev sweep (``scripts/pareto.py`` on ``gsm8k_dev``) of an adapter and the raw training tokens
behind that adapter (its run record's ``total.raw_tokens``, lineage included). The mean and its standard error
come from the sweep's per-item samples (:func:`selfdistill.eval.paired.read_samples`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from selfdistill.eval.paired import read_samples


def curve_point(sweep: str | Path, *, task: str, setting: str, raw_tokens: int) -> dict:
    """``{sweep, raw_tokens, n, tokens_per_forward, stderr}`` of one sweep's ``setting`` on ``task``."""
    samples = read_samples(sweep, task)
    if setting not in samples:
        raise ValueError(f"{sweep} has no {task} samples of {setting!r}; it has {sorted(samples)}")
    values = [r["tokens_per_forward"] for r in samples[setting]]
    mean = math.fsum(values) / len(values)
    var = math.fsum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
    return {"sweep": str(sweep), "raw_tokens": raw_tokens, "n": len(values), "tokens_per_forward": mean,
            "stderr": math.sqrt(var / len(values))}


def plot_curve(points: Sequence[dict], path: Path, *, title: str, target: float | None = None) -> Path:
    """Tokens per forward (± standard error) against training tokens, one marker per sweep, joined in order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted(points, key=lambda p: p["raw_tokens"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar([p["raw_tokens"] / 1e6 for p in pts], [p["tokens_per_forward"] for p in pts],
                yerr=[p["stderr"] for p in pts], marker="o", capsize=3, color="tab:green")
    for p in pts:
        ax.annotate(f"{p['tokens_per_forward']:.3f}", (p["raw_tokens"] / 1e6, p["tokens_per_forward"]), fontsize=8,
                    xytext=(4, -12), textcoords="offset points")
    if target is not None:
        ax.axhline(target, color="gray", ls="--", lw=1, label=f"target {target:g}")
        ax.legend(fontsize=8)
    ax.set(xlabel="raw training tokens (millions, all runs of the lineage)", ylabel="tokens per forward (dev)",
           title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
