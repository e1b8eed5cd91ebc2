"""Which settings of each strategy the measurements run: a sweep's switches and points (``scripts/pareto.py``) and
the speed benchmark's points (``scripts/bench_decode.py``).

A strategy class says how it decodes (:mod:`selfdistill.decode.strategies`); which of its settings a sweep or a
benchmark runs is measurement, kept here with the measuring, as its labels and plot styles are
(:mod:`selfdistill.eval.presentation`). A registered strategy without a :data:`SWEEPS` entry decodes everywhere and
is in no sweep; one without :data:`BENCH_POINTS` is benchmarked at its default options.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from selfdistill.decode.registry import Strategy, strategy_class, strategy_names

if TYPE_CHECKING:
    from selfdistill.eval.sweep import SweepGrid


def _distinct(what: str, values) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"duplicate {what}: {list(values)}")
    return list(values)


def _static_points(grid: SweepGrid) -> list[dict]:
    return [{"k": k} for k in _distinct("static k values", grid.static_k)]


def _conf_adapt_points(grid: SweepGrid) -> list[dict]:
    """The paper's grid: thresholds in (0, 1] (above 1 every point would be plain greedy decoding)."""
    for t in _distinct("thresholds", grid.thresholds):
        if not 0.0 < t <= 1.0:
            raise ValueError(f"ConfAdapt thresholds must be in (0, 1], got {t}")
    if grid.compare_raw and grid.calibrated is False:
        raise ValueError("compare_raw sweeps raw confidences beside calibrated ones: it needs calibrated "
                         "ConfAdapt (a model with mtp_calibration.json, calibrated not false)")
    kinds = (grid.calibrated, False) if grid.compare_raw else (grid.calibrated,)
    return [{"threshold": t, "k_max": grid.k_max, "mask_margin": grid.mask_margin, "calibrated": cal}
            for cal in kinds for t in grid.thresholds]


def _lossless_points(grid: SweepGrid) -> list[dict]:
    return [{"threshold": grid.verify_threshold, "k_max": grid.k_max, "mask_margin": grid.mask_margin}]


def _hedged_points(grid: SweepGrid) -> list[dict]:
    return [{"threshold": grid.verify_threshold, "k_max": grid.k_max, "mask_margin": grid.mask_margin,
             "lead_groups": h} for h in _distinct("hedged lead groups", grid.hedged_lead_groups)]


@dataclass(frozen=True)
class Swept:
    """A strategy in sweeps: ``flag``, the ``ParetoConfig`` switch that includes it; ``points``, its option sets
    for a grid; ``default``, whether a sweep that names no strategies includes it."""

    flag: str
    points: Callable[[SweepGrid], list[dict]] = lambda grid: [{}]
    default: bool = True


#: Strategy name -> how sweeps run it.
SWEEPS: dict[str, Swept] = {
    "generate": Swept("generate_baseline"),
    "static": Swept("static", _static_points),
    "conf_adapt": Swept("conf_adapt", _conf_adapt_points),
    "verify": Swept("verify", _lossless_points),
    "quadratic": Swept("quadratic", _lossless_points, default=False),
    "hedged": Swept("hedged", _hedged_points),
}

#: Strategy name -> the option sets the speed benchmark runs (default: one, at the strategy's defaults).
BENCH_POINTS: dict[str, tuple[dict, ...]] = {
    "static": tuple({"k": k} for k in (1, 2, 3, 4)),
    "conf_adapt": ({"threshold": 0.99}, {"threshold": 0.9}, {"threshold": 0.7},
                   {"threshold": 0.9, "mask_margin": 2}, {"threshold": 0.7, "mask_margin": 2}),
    "verify": ({}, {"mask_margin": 2}, {"k_max": 4}, {"k_max": 8}),  # k_max 4 and 8: quadratic's, at equal k_max
    "quadratic": ({"k_max": 4}, {"k_max": 8}, {"k_max": 4, "mask_margin": 2}),
    "hedged": ({"k_max": 4, "lead_groups": 1}, {"k_max": 8, "lead_groups": 1}, {"k_max": 8, "lead_groups": 2}),
}


def sweep_strategies() -> tuple[str, ...]:
    """The registered strategies a sweep can include, in registry order (the order of reports)."""
    return tuple(n for n in strategy_names() if n in SWEEPS)


def bench_settings(*, k_max: int | None = None, mask_margin: int | None = None) -> list[tuple[str, Strategy]]:
    """``[(name, strategy)]``: every registered strategy at each of its bench points, in registry order.

    ``k_max``/``mask_margin``, when given, replace those of every point of the strategies that take them (the k a
    model was trained to, say); points that become equal are kept once."""
    units = {}
    for name in strategy_names():
        cls = strategy_class(name)
        takes = {o.name for o in cls.options}
        extra = {o: v for o, v in (("k_max", k_max), ("mask_margin", mask_margin)) if v is not None and o in takes}
        for point in BENCH_POINTS.get(name, ({},)):
            unit = cls(**(point | extra))
            units.setdefault(unit.setting_name, unit)
    return list(units.items())
