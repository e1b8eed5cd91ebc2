"""The dev curve's points (selfdistill/eval/dev_curve.py) from a stored dev sweep, against its own summary."""

import json

import pytest

from selfdistill.eval.dev_curve import curve_point, plot_curve
from support import REPO

SWEEP = REPO / "results" / "dev" / "smollm2-k5-cont1-dev"


def test_a_point_is_the_sweeps_mean_with_its_standard_error(tmp_path):
    point = curve_point(SWEEP, task="gsm8k_dev", setting="verify_kmax5_margin2", raw_tokens=1927200)
    summary = json.loads((SWEEP / "summary.json").read_text())["results"]["gsm8k_dev"]
    row = next(s for s in summary if s["setting"]["name"] == "verify_kmax5_margin2")
    assert point["n"] == 75 and point["tokens_per_forward"] == pytest.approx(row["tokens_per_forward_mean"])
    assert point["stderr"] == pytest.approx(row["tokens_per_forward_std"] / 75 ** 0.5, rel=1e-6)
    assert plot_curve([point], tmp_path / "c.png", title="t", target=2.0).stat().st_size > 0
    with pytest.raises(ValueError, match="no gsm8k_dev samples of 'quadratic'"):
        curve_point(SWEEP, task="gsm8k_dev", setting="quadratic", raw_tokens=1)
