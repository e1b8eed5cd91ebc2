"""ConfAdapt with and without a confidence map: the setting resolves once against the model (names say which
confidence it used), and the map really decides acceptance (checked against independent references)."""

import pytest
import torch

from selfdistill.decode.decoder import mtp_generate
from selfdistill.decode.engine import strategy_for
from selfdistill.decode.registry import make_strategy, pop_options
from selfdistill.models.calibration import ConfidenceMap, set_calibration
from selfdistill.models.loader import load_model

PROMPTS = ["Question: Tom has 3 apples and gets 5 more. How many apples does he have?\nAnswer:",
           "Question: A box holds 4 rows of 6 pencils. How many pencils?\nAnswer:"]


def constant_map(value: float, slots: int = 15) -> ConfidenceMap:
    return ConfidenceMap(curves=tuple(((0.0, 1.0), (value, value)) for _ in range(slots)))


@pytest.fixture(scope="module")
def student():
    model, tok = load_model("tiny-student", dtype="float64")
    yield model, tok
    set_calibration(model, None)


def test_resolution_against_the_model():
    cmap = constant_map(0.5, slots=3)
    unit = make_strategy("conf_adapt", threshold=0.9, k_max=4)
    assert unit.calibrated is None and unit.calibration is None
    resolved = unit.resolve(calibration=cmap)
    assert resolved.calibrated is True and resolved.calibration is cmap
    assert resolved.setting_name == "conf_adapt_0.9_kmax4_cal"
    assert resolved.resolve(calibration=None) is resolved  # resolved once, trusted afterwards
    raw = unit.resolve(calibration=None)
    assert raw.calibrated is False and raw.setting_name == "conf_adapt_0.9_kmax4"
    off = make_strategy("conf_adapt", k_max=4, calibrated=False).resolve(calibration=cmap)
    assert off.calibration is None
    with pytest.raises(ValueError, match="has no confidence calibration"):
        make_strategy("conf_adapt", calibrated=True).resolve(calibration=None)
    with pytest.raises(ValueError, match="covers slots up to 4: pass k_max <= 4"):
        make_strategy("conf_adapt", k_max=5).resolve(calibration=cmap)
    assert make_strategy("verify", k_max=4).resolve(calibration=cmap).calibration is None


def test_calibrated_is_parsed_from_text_options():
    assert pop_options({"calibrated": "false"}) == {"calibrated": False}
    assert pop_options({"calibrated": "True"}) == {"calibrated": True}
    with pytest.raises(ValueError, match="calibrated"):
        pop_options({"calibrated": "maybe"})
    with pytest.raises(ValueError, match="true, false or None"):
        make_strategy("conf_adapt", calibrated="yes")


def _decode(model, tok, **options):
    prompts = [tok(p, add_special_tokens=False).input_ids for p in PROMPTS]
    return mtp_generate(model, prompts, max_new_tokens=24, eos_token_id=[], **options)


def test_the_map_decides_acceptance(student):
    model, tok = student
    try:
        set_calibration(model, constant_map(1.0))  # every mask "certain": the chunk is 1 token or all k_max
        certain = _decode(model, tok, strategy="conf_adapt", threshold=0.9, k_max=4)
        assert all(n in (1, 4) for row in certain.tokens_per_pass for n in row[:-1])  # the last pass may be cut
        assert {1, 4} <= {n for row in certain.tokens_per_pass for n in row}  # the raw gate at column 0 decides

        set_calibration(model, constant_map(0.0))  # no mask ever trusted: one token per pass, plain greedy
        never = _decode(model, tok, strategy="conf_adapt", threshold=0.01, k_max=4)
        greedy = _decode(model, tok, strategy="static", k=1)
        assert never.sequences == greedy.sequences and all(n == [1] * 24 for n in never.tokens_per_pass)

        off = _decode(model, tok, strategy="conf_adapt", threshold=0.9, k_max=4, calibrated=False)
    finally:
        set_calibration(model, None)
    raw = _decode(model, tok, strategy="conf_adapt", threshold=0.9, k_max=4)
    assert off.sequences == raw.sequences and off.tokens_per_pass == raw.tokens_per_pass
    # the raw rule emits partial chunks, so the cases above test the map
    assert any(n in (2, 3) for row in raw.tokens_per_pass for n in row[:-1])


def test_the_engine_names_the_confidence_it_used(student):
    model, _ = student
    try:
        set_calibration(model, constant_map(0.5))
        assert strategy_for(model, "conf_adapt", threshold=0.9).setting_name == "conf_adapt_0.9_kmax16_cal"
    finally:
        set_calibration(model, None)
    assert strategy_for(model, "conf_adapt", threshold=0.9).setting_name == "conf_adapt_0.9_kmax16"


def test_an_unresolved_calibrated_unit_refuses_to_guess():
    unit = make_strategy("conf_adapt", calibrated=True, k_max=2)
    with pytest.raises(RuntimeError, match="not resolved"):
        unit.confidences(torch.zeros(1, 2, 5))


def test_the_real_token_keeps_its_raw_probability_as_the_gate():
    """Column 0 (the last real token's prediction) is not a draft: the map applies to the masks only."""
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]]])  # top-1: 0.7, 0.5, 0.4
    unit = make_strategy("conf_adapt", k_max=3, threshold=0.9).resolve(calibration=constant_map(0.95, slots=2))
    torch.testing.assert_close(unit.confidences(probs.log()), torch.tensor([[0.7, 0.95, 0.95]]))
    raw = make_strategy("conf_adapt", k_max=3, threshold=0.9, calibrated=False)
    torch.testing.assert_close(raw.confidences(probs.log()), torch.tensor([[0.7, 0.5, 0.4]]))
