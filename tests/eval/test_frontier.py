"""Pareto frontier of (speed, accuracy) points, both maximised: hand-made cases."""

import math
from dataclasses import dataclass

from selfdistill.eval.frontier import dominates, frontier_mask, pareto_frontier


def pts(*xy):
    return [{"name": f"p{i}", "x": x, "y": y} for i, (x, y) in enumerate(xy)]


def names(points):
    return [p["name"] for p in points]


def test_dominates_needs_one_strict_improvement():
    assert dominates((2, 1), (1, 1)) and dominates((1, 2), (1, 1)) and dominates((2, 2), (1, 1))
    assert not dominates((1, 1), (1, 1))  # equal: neither dominates
    assert not dominates((2, 0), (1, 1)) and not dominates((1, 1), (2, 0))  # a trade-off


def test_single_point_is_the_frontier():
    assert names(pareto_frontier(pts((1.0, 0.5)), x="x", y="y")) == ["p0"]
    assert pareto_frontier([], x="x", y="y") == []


def test_staircase_sorted_by_x_and_dominated_points_dropped():
    # p0 (1, .9) slow+accurate, p1 (2, .8), p2 (3, .5) fast; p3 (1.5, .7) is beaten by p1; p4 (3, .4) by p2.
    points = pts((1, 0.9), (2, 0.8), (3, 0.5), (1.5, 0.7), (3, 0.4))
    assert names(pareto_frontier(points, x="x", y="y")) == ["p0", "p1", "p2"]
    assert frontier_mask(points, x="x", y="y") == [True, True, True, False, False]


def test_ties_on_one_axis_keep_only_the_better_other_axis():
    points = pts((2, 0.5), (2, 0.7), (1, 0.7))  # same x: the higher y wins; same y: the higher x wins
    assert names(pareto_frontier(points, x="x", y="y")) == ["p1"]


def test_exact_duplicates_both_stay():
    points = pts((2, 0.5), (2, 0.5), (1, 0.4))
    assert names(pareto_frontier(points, x="x", y="y")) == ["p0", "p1"]


def test_input_order_does_not_matter():
    points = pts((3, 0.5), (1, 0.9), (2, 0.8), (2.5, 0.1))
    front = names(pareto_frontier(points, x="x", y="y"))
    assert front == ["p1", "p2", "p0"]
    assert names(pareto_frontier(points[::-1], x="x", y="y")) == front


def test_nan_or_missing_coordinates_are_never_on_it_and_never_dominate():
    points = pts((1, 0.9), (math.nan, 1.0), (2, None)) + [{"name": "p3", "y": 2.0}]
    assert names(pareto_frontier(points, x="x", y="y")) == ["p0"]


def test_attribute_and_callable_axes():
    @dataclass
    class P:
        speed: float
        acc: float

    points = [P(1, 0.9), P(2, 0.95), P(3, 0.2)]
    assert pareto_frontier(points, x="speed", y="acc") == [P(2, 0.95), P(3, 0.2)]
    # Minimising x instead: negate it with a callable.
    assert pareto_frontier(points, x=lambda p: -p.speed, y="acc") == [P(2, 0.95), P(1, 0.9)]
