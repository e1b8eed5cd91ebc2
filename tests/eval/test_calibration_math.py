"""Calibration math (selfdistill/eval/calibration.py): hand-computed cases and synthetic confidences whose true
calibration is known."""

import random

import pytest
import torch

from selfdistill.eval.calibration import (expected_calibration_error, fit_confidence_map, isotonic_curve,
                                          platt_parameters, pool_adjacent_violators, precision_at, reliability)
from selfdistill.models.calibration import interpolate


def test_pool_adjacent_violators_by_hand():
    assert pool_adjacent_violators([0.2, 0.6, 0.4, 0.9], [1, 1, 1, 1]) == pytest.approx([0.2, 0.5, 0.5, 0.9])
    # weights pull the pooled value: (0.6*3 + 0.2*1) / 4 = 0.5
    assert pool_adjacent_violators([0.6, 0.2], [3, 1]) == pytest.approx([0.5, 0.5])
    assert pool_adjacent_violators([0.9, 0.5, 0.1], [1, 1, 1]) == pytest.approx([0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="positive"):
        pool_adjacent_violators([0.1], [0])


def test_ece_and_reliability_by_hand():
    conf, ok = [0.95, 0.95, 0.15, 0.15], [True, False, False, False]
    table = reliability(conf, ok)
    assert [(r["n"], r["confidence"], r["precision"]) for r in table] == [(2, 0.15, 0.0), (2, 0.95, 0.5)]
    assert expected_calibration_error(conf, ok) == pytest.approx((2 * 0.15 + 2 * 0.45) / 4)
    assert expected_calibration_error([1.0, 0.0], [True, False]) == 0.0  # 1.0 falls in the last bin
    assert precision_at(conf, ok, 0.9) == (0.5, 2) and precision_at(conf, ok, 0.99) == (None, 0)


def test_isotonic_curve_by_hand():
    # 4 bins of 2: precisions 0, 1, 0.5, 1 -> pooled to 0, 0.75, 0.75, 1 at the bin mean confidences
    conf = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    ok = [False, False, True, True, True, False, True, True]
    x, y = isotonic_curve(conf, ok, bin_size=2)
    assert x == pytest.approx((0.0, 0.15, 0.35, 0.55, 0.75, 1.0))
    assert y == pytest.approx((0.0, 0.0, 0.75, 0.75, 1.0, 1.0))


def _overconfident(n, seed=0):
    """Raw confidence p ~ U(0, 1); correct with probability sigmoid(2 * logit(p) - 1) (the known answer)."""
    rng = random.Random(seed)
    conf, ok = [], []
    for _ in range(n):
        p = min(max(rng.random(), 1e-4), 1 - 1e-4)
        truth = torch.sigmoid(2 * torch.logit(torch.tensor(p)) - 1).item()
        conf.append(p)
        ok.append(rng.random() < truth)
    return conf, ok


def test_platt_recovers_the_known_map():
    a, b = platt_parameters(*_overconfident(20000))
    assert a == pytest.approx(2.0, abs=0.1) and b == pytest.approx(-1.0, abs=0.1)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_a_fitted_map_is_calibrated_on_fresh_samples(method):
    cmap = fit_confidence_map({2: _overconfident(20000, seed=1)}, method=method)
    conf, ok = _overconfident(20000, seed=2)
    x, y = cmap.curves[0]
    for p in (0.3, 0.7, 0.9):  # the fitted curve is the true one
        truth = torch.sigmoid(2 * torch.logit(torch.tensor(p)) - 1).item()
        assert interpolate(torch.tensor([p]), torch.tensor(x), torch.tensor(y)).item() == pytest.approx(truth,
                                                                                                        abs=0.04)
    mapped = interpolate(torch.tensor(conf), torch.tensor(x), torch.tensor(y)).tolist()
    assert expected_calibration_error(conf, ok) > 0.05 and expected_calibration_error(mapped, ok) < 0.02


def test_fit_needs_consecutive_slots_and_a_known_method():
    samples = _overconfident(100)
    with pytest.raises(ValueError, match="without gaps"):
        fit_confidence_map({2: samples, 4: samples})
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_confidence_map({2: samples}, method="histogram")
