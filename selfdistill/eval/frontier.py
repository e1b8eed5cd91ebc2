"""Pareto frontiers of decoding settings: the settings no other setting beats on both axes.

A sweep gives, per task, one point per decoding setting (accuracy, tokens per forward, tokens/s). Higher is
better on every axis. Point ``q`` *dominates* ``p`` when ``q`` is at least as good on both axes and strictly
better on one; the frontier is the set of points nothing dominates.

Conventions (tested): exact duplicates do not dominate each other, so both stay on the frontier; a point with
a missing or NaN coordinate is never on it (it cannot be compared); the frontier is returned in increasing
``x`` (so consecutive points can be joined by a line: ``y`` then decreases).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any


def _getter(axis: str | Callable[[Any], float]) -> Callable[[Any], float]:
    if callable(axis):
        return axis
    return lambda p: p[axis] if isinstance(p, dict) else getattr(p, axis)


def _value(get: Callable[[Any], float], point) -> float | None:
    try:
        v = get(point)
    except (KeyError, AttributeError):
        return None
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether ``a = (x, y)`` dominates ``b`` (maximising both): ``a >= b`` on both, ``>`` on at least one."""
    return a[0] >= b[0] and a[1] >= b[1] and (a[0] > b[0] or a[1] > b[1])


def frontier_mask(points: Sequence, *, x: str | Callable, y: str | Callable) -> list[bool]:
    """Per point, whether it is on the Pareto frontier of ``(x, y)`` (both maximised); see the module docstring.

    ``x``/``y`` are dict keys / attribute names of the points, or functions of a point.
    O(n^2), which is nothing for sweeps of tens of settings.
    """
    gx, gy = _getter(x), _getter(y)
    coords = [(_value(gx, p), _value(gy, p)) for p in points]
    valid = [c[0] is not None and c[1] is not None for c in coords]
    return [ok and not any(v2 and dominates(c2, c) for c2, v2 in zip(coords, valid))
            for c, ok in zip(coords, valid)]


def pareto_frontier(points: Sequence, *, x: str | Callable, y: str | Callable) -> list:
    """The non-dominated ``points`` (maximising ``x`` and ``y``), sorted by increasing ``x`` then decreasing ``y``.

    Example: accuracy vs tokens per forward, ``pareto_frontier(rows, x="tokens_per_forward_mean",
    y="accuracy")``: the settings for which no other setting is both faster and at least as accurate.
    """
    gx, gy = _getter(x), _getter(y)
    on = [p for p, keep in zip(points, frontier_mask(points, x=x, y=y)) if keep]
    return sorted(on, key=lambda p: (_value(gx, p), -_value(gy, p)))
