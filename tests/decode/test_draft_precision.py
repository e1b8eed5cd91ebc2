"""Draft precision: of the emitted mask tokens a later pass checked, the share that greedy decoding would have
chosen at the same prefix, overall and per slot depth (selfdistill.decode.results.draft_precision)."""

import math

import pytest
import torch

from selfdistill.decode.decoder import mtp_generate
from selfdistill.decode.results import draft_precision
from selfdistill.models.loader import load_model

PROMPTS = ["Question: Tom has 3 apples and gets 5 more. How many apples does he have?\nAnswer:",
           "Question: A box holds 4 rows of 6 pencils. How many pencils?\nAnswer:"]


def test_precision_by_hand():
    rows = [[[4, 3], [2, 1]], [[1, 0]], []]  # per completion: [checked, agreed] at slot 2, slot 3
    out = draft_precision(rows)
    assert out["draft_checked"] == 7 and out["draft_precision"] == pytest.approx(4 / 7)
    assert out["draft_precision_slot2"] == pytest.approx(3 / 5) and out["draft_checked_slot3"] == 2
    assert out["draft_precision_slot3"] == 0.5
    empty = draft_precision([[], []])
    assert empty["draft_checked"] == 0 and math.isnan(empty["draft_precision"])


@pytest.fixture(scope="module")
def student():
    return load_model("tiny-student", dtype="float64")


def _naive_checks(model, prompt, tokens, per_pass):
    """``[checked, agreed]`` per depth from the output alone: each chunk but the last, its tokens after the first
    against the argmax of a no-cache forward over prompt + output before them."""
    checks, start = {}, 0
    for n in per_pass[:-1]:
        for i in range(1, n):
            with torch.no_grad():
                greedy = model(torch.tensor([prompt + tokens[:start + i]])).logits[0, -1].argmax().item()
            c = checks.setdefault(i + 1, [0, 0])
            c[0] += 1
            c[1] += int(greedy == tokens[start + i])
        start += n
    return [checks.get(d, [0, 0]) for d in range(2, max(checks, default=1) + 1)]


@pytest.mark.parametrize("options", [dict(strategy="static", k=3),
                                     dict(strategy="conf_adapt", threshold=0.5, k_max=4)])
def test_adaptive_and_static_precision_equals_a_no_cache_greedy_check_of_the_output(student, options):
    model, tok = student
    prompts = [tok(p, add_special_tokens=False).input_ids for p in PROMPTS]
    out = mtp_generate(model, prompts, max_new_tokens=24, eos_token_id=[], **options)
    for prompt, tokens, per_pass, got in zip(prompts, out.sequences, out.tokens_per_pass, out.draft_checks):
        want = _naive_checks(model, prompt, tokens, per_pass)
        assert got == want[:len(got)] and all(c == [0, 0] for c in want[len(got):])
    stats = out.precision()
    assert stats["draft_checked"] > 0 and 0.0 <= stats["draft_precision"] <= 1.0


@pytest.mark.parametrize("strategy", ["verify", "quadratic", "hedged"])
def test_lossless_modes_report_their_acceptance_rule(student, strategy):
    """Every emitted draft was verified: precision 1, and each pass's tokens after its first are drafts."""
    model, tok = student
    prompts = [tok(p, add_special_tokens=False).input_ids for p in PROMPTS]
    out = mtp_generate(model, prompts, strategy=strategy, k_max=4, max_new_tokens=24, eos_token_id=[])
    stats = out.precision()
    assert stats["draft_precision"] == 1.0
    assert stats["draft_checked"] == sum(t - 1 for row in out.tokens_per_pass for t in row) > 0
