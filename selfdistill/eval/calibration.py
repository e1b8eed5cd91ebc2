"""Calibration math for mask-slot confidences: the fit of a :class:`~selfdistill.models.calibration.ConfidenceMap`,
expected calibration error and reliability tables. Pure functions of ``(confidence, correct)`` samples per slot.

A sample is one mask prediction: its raw top-1 probability and whether greedy decoding chose the same token at
that position (:mod:`selfdistill.eval.calibrate` collects them). The fit is isotonic regression: samples sorted
by confidence are grouped into bins of ``bin_size`` (equal count), each bin's precision is made non-decreasing by
pool-adjacent-violators (weighted by the bin counts), and the curve runs through (bin mean confidence, fitted
precision), flat beyond the first and last bin. Or Platt scaling: a logistic map of the confidence's log-odds,
``sigmoid(a * logit(p) + b)``, two parameters per slot, tabulated as knots in the same format.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from selfdistill.models.calibration import ConfidenceMap


def pool_adjacent_violators(values: Sequence[float], weights: Sequence[float]) -> list[float]:
    """The weighted least-squares non-decreasing fit of ``values`` (same length).

    >>> pool_adjacent_violators([0.2, 0.6, 0.4, 0.9], [1, 1, 1, 1])
    [0.2, 0.5, 0.5, 0.9]
    """
    if len(values) != len(weights):
        raise ValueError(f"values and weights differ in length: {len(values)} != {len(weights)}")
    blocks: list[list[float]] = []  # [weighted sum, weight, count]
    for v, w in zip(values, weights):
        if w <= 0:
            raise ValueError(f"weights must be positive, got {w}")
        blocks.append([v * w, w, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, w2, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += w2
            blocks[-1][2] += c
    return [s / w for s, w, c in blocks for _ in range(int(c))]


def isotonic_curve(conf: Sequence[float], correct: Sequence[bool], *, bin_size: int = 200
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Knots ``(x, y)`` of the fitted curve (see the module docstring): ``x`` from 0 to 1, strictly increasing.

    Args:
        conf: ``[n]`` raw confidences in [0, 1].
        correct: ``[n]`` whether each prediction was greedy's token.
        bin_size: samples per bin (the last bin takes the remainder; fewer samples than this make one bin).
    """
    if len(conf) != len(correct) or not conf:
        raise ValueError(f"need matching, non-empty conf and correct, got {len(conf)} and {len(correct)}")
    if bin_size < 1:
        raise ValueError(f"bin_size must be >= 1, got {bin_size}")
    pairs = sorted(zip(conf, correct))
    n_bins = max(1, len(pairs) // bin_size)
    edges = [round(i * len(pairs) / n_bins) for i in range(n_bins + 1)]
    bins = [pairs[a:b] for a, b in zip(edges, edges[1:])]
    xs = [sum(c for c, _ in b) / len(b) for b in bins]
    ys = pool_adjacent_violators([sum(ok for _, ok in b) / len(b) for b in bins], [len(b) for b in bins])
    knots: dict[float, float] = {}
    for x, y in zip([0.0, *xs, 1.0], [ys[0], *ys, ys[-1]]):
        knots[x] = max(knots.get(x, 0.0), y)  # equal x (all-ones confidences): one knot, y stays non-decreasing
    x_out = tuple(sorted(knots))
    return x_out, tuple(min(1.0, max(0.0, knots[x])) for x in x_out)


#: Where a Platt curve is tabulated: dense in log-odds, so the knots resolve confidences near 1 (and 0, 1 exactly).
PLATT_LOGITS = tuple(-10 + 0.25 * i for i in range(97))  # -10 .. 14


def platt_parameters(conf: Sequence[float], correct: Sequence[bool], *, steps: int = 50) -> tuple[float, float]:
    """``(a, b)`` of ``P(correct) = sigmoid(a * logit(conf) + b)`` by maximum likelihood (Newton, float64); ``a``
    is kept >= 0, so the map is non-decreasing."""
    if len(conf) != len(correct) or not conf:
        raise ValueError(f"need matching, non-empty conf and correct, got {len(conf)} and {len(correct)}")
    p = torch.tensor(conf, dtype=torch.float64).clamp(1e-7, 1 - 1e-7)
    x = torch.stack([torch.logit(p), torch.ones_like(p)], dim=1)
    y = torch.tensor(correct, dtype=torch.float64)
    w = torch.tensor([1.0, 0.0], dtype=torch.float64)
    for _ in range(steps):
        q = torch.sigmoid(x @ w)
        hess = x.T @ (x * (q * (1 - q))[:, None]) + 1e-6 * torch.eye(2, dtype=torch.float64)
        step = torch.linalg.solve(hess, x.T @ (y - q))
        w = w + step
        if step.abs().max() < 1e-10:
            break
    return max(float(w[0]), 0.0), float(w[1])


def platt_curve(conf: Sequence[float], correct: Sequence[bool]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Knots ``(x, y)`` of the fitted Platt map (:func:`platt_parameters`), tabulated at :data:`PLATT_LOGITS`."""
    a, b = platt_parameters(conf, correct)
    z = torch.tensor(PLATT_LOGITS, dtype=torch.float64)
    xs = [0.0, *torch.sigmoid(z).tolist(), 1.0]
    ys = [1 / (1 + math.exp(-b)) if a == 0 else 0.0, *torch.sigmoid(a * z + b).tolist(),
          1 / (1 + math.exp(-b)) if a == 0 else 1.0]
    knots: dict[float, float] = {}
    for x, y in zip(xs, ys):
        knots[x] = max(knots.get(x, 0.0), y)
    x_out = tuple(sorted(knots))
    return x_out, tuple(knots[x] for x in x_out)


METHODS = ("isotonic", "platt")


def fit_confidence_map(samples: dict[int, tuple[Sequence[float], Sequence[bool]]], *, method: str = "isotonic",
                       bin_size: int = 200) -> ConfidenceMap:
    """One curve per slot depth; ``samples``: ``{slot: (conf, correct)}`` for the slots ``2, 3, ...`` without gaps."""
    slots = sorted(samples)
    if slots != list(range(2, len(slots) + 2)):
        raise ValueError(f"samples must cover the slots 2, 3, ... without gaps, got {slots}")
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {METHODS}")
    fit = (lambda c, ok: isotonic_curve(c, ok, bin_size=bin_size)) if method == "isotonic" else platt_curve
    return ConfidenceMap(curves=tuple(fit(*samples[d]) for d in slots), method=method)


def reliability(conf: Sequence[float], correct: Sequence[bool], *, bins: int = 10) -> list[dict]:
    """Per equal-width confidence bin ``[i/bins, (i+1)/bins)`` (the last one closed): ``n``, mean ``confidence``
    and ``precision`` (share correct); empty bins are left out."""
    if len(conf) != len(correct):
        raise ValueError(f"conf and correct differ in length: {len(conf)} != {len(correct)}")
    acc: list[list[float]] = [[0, 0.0, 0] for _ in range(bins)]
    for c, ok in zip(conf, correct):
        b = acc[min(int(c * bins), bins - 1)]
        b[0] += 1
        b[1] += c
        b[2] += bool(ok)
    return [{"bin": (i / bins, (i + 1) / bins), "n": n, "confidence": s / n, "precision": k / n}
            for i, (n, s, k) in enumerate(acc) if n]


def expected_calibration_error(conf: Sequence[float], correct: Sequence[bool], *, bins: int = 10) -> float:
    """ECE: the count-weighted mean of ``|precision - confidence|`` over :func:`reliability`'s bins."""
    table = reliability(conf, correct, bins=bins)
    total = sum(r["n"] for r in table)
    if not total:
        raise ValueError("ECE of no samples")
    return sum(r["n"] * abs(r["precision"] - r["confidence"]) for r in table) / total


def precision_at(conf: Sequence[float], correct: Sequence[bool], threshold: float) -> tuple[float | None, int]:
    """``(precision, n)`` of the predictions with confidence >= ``threshold`` (``None`` when there are none)."""
    chosen = [ok for c, ok in zip(conf, correct) if c >= threshold]
    return (sum(chosen) / len(chosen) if chosen else None), len(chosen)
