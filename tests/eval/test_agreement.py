"""Agreement with the same model's greedy output: hand-computed cases, and a sweep reports it per setting."""

import pytest

from selfdistill.eval.agreement import add_agreement, agreement


def _r(i, extracted, completion):
    return {"id": i, "extracted": extracted, "completion": completion}


def test_answer_and_exact_agreement_by_hand():
    ref = [_r("a", "4", "2+2=4. 4"), _r("b", "7", "so 7"), _r("c", "", "no idea"), _r("d", "9", "it is 9")]
    got = [_r("b", "7", "so 7"), _r("a", "4", "2+2 = 4. 4"), _r("d", "8", "it is 8"), _r("c", "", "no idea")]
    assert agreement(got, ref) == {"answer_agreement": 0.75, "exact_agreement": 0.5, "agreement_n": 4}
    assert agreement(ref, ref)["exact_agreement"] == 1.0


def test_mismatched_items_are_refused():
    with pytest.raises(ValueError, match="same items"):
        agreement([_r("a", "1", "x")], [_r("b", "1", "x")])
    with pytest.raises(ValueError, match="same items"):
        agreement([_r("a", "1", "x")], [_r("a", "1", "x"), _r("a", "1", "x")])
    with pytest.raises(ValueError, match="no items"):
        agreement([], [])


def test_rows_are_read_against_their_tasks_generate_row_and_left_alone_without_one():
    stored = {("t", "generate"): [_r(1, "3", "x3")], ("t", "static_k2"): [_r(1, "3", "y3")],
              ("u", "static_k2"): [_r(1, "5", "z")]}
    summaries = {"t": [{"setting": {"name": "generate", "strategy": "generate"}},
                       {"setting": {"name": "static_k2", "strategy": "static"}}],
                 "u": [{"setting": {"name": "static_k2", "strategy": "static"}}]}
    out = add_agreement(summaries, lambda task, s: stored[(task, s["setting"]["name"])])
    assert out["t"][0]["exact_agreement"] == 1.0
    assert out["t"][1]["answer_agreement"] == 1.0 and out["t"][1]["exact_agreement"] == 0.0
    assert "answer_agreement" not in out["u"][0]
