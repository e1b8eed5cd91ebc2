"""Teacher-side chunk scores: chunk log-likelihood, agreement run length, per-slot agreement."""

import math

import pytest
import torch

from selfdistill.train.teacher_scores import agreement_run_length, chunk_log_likelihood, per_slot_agreement


def test_chunk_log_likelihood_hand_case():
    # slot 0: softmax([0, ln3]) = [1/4, 3/4]; slot 1: uniform over 2
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]], dtype=torch.float64)
    # chosen logit minus log-sum-exp: equal to the hand value up to float64 rounding
    assert chunk_log_likelihood(logits, torch.tensor([[1, 0]])).item() == pytest.approx(
        math.log(0.75) + math.log(0.5), rel=1e-14)
    assert chunk_log_likelihood(logits, torch.tensor([[0, 1]])).item() == pytest.approx(
        math.log(0.25) + math.log(0.5), rel=1e-14)


def test_agreement_run_length_is_leading_run():
    s = torch.tensor([[1, 2, 3, 4], [1, 9, 3, 4], [9, 2, 3, 4], [1, 2, 3, 9]])
    t = torch.tensor([[1, 2, 3, 4]] * 4)
    assert agreement_run_length(s, t).tolist() == [4, 1, 0, 3]


def test_per_slot_agreement_with_validity():
    s = torch.tensor([[1, 2, 3], [1, 0, 3], [0, 0, 0]])
    t = torch.tensor([[1, 2, 3], [1, 2, 0], [1, 2, 3]])
    assert per_slot_agreement(s, t).tolist() == [2 / 3, 1 / 3, 1 / 3]
    assert per_slot_agreement(s, t, torch.tensor([True, True, False])).tolist() == [1.0, 0.5, 0.5]
    assert per_slot_agreement(s, t, torch.zeros(3, dtype=torch.bool)).tolist() == [0.0, 0.0, 0.0]
