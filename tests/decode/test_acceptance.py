"""Acceptance rules on tiny hand-computed cases."""

import pytest
import torch

from selfdistill.decode.acceptance import conf_adapt_accept, draft_lengths, leading_run, static_accept, verify_accept


def test_leading_run():
    flags = torch.tensor([[True, True, False, True],
                          [False, True, True, True],
                          [True, True, True, True]])
    assert leading_run(flags).tolist() == [2, 0, 4]
    assert leading_run(torch.zeros(2, 0, dtype=torch.bool)).tolist() == [0, 0]
    with pytest.raises(ValueError):
        leading_run(torch.ones(3, dtype=torch.bool))


def test_static_accept():
    assert static_accept(3, k=3) == 3
    assert static_accept(16, k=1) == 1
    for bad in (0, 4):
        with pytest.raises(ValueError):
            static_accept(3, k=bad)


def test_conf_adapt_accept():
    p = torch.tensor([[0.95, 0.92, 0.50, 0.99],   # run of 2, later confident position ignored
                      [0.40, 0.99, 0.99, 0.99],   # first position unconfident -> still emits 1
                      [0.90, 0.90, 0.90, 0.90]])  # threshold is inclusive
    assert conf_adapt_accept(p, threshold=0.9).tolist() == [2, 1, 4]
    assert conf_adapt_accept(p, threshold=1.01).tolist() == [1, 1, 1]  # tau > 1 is greedy decoding
    assert conf_adapt_accept(p, threshold=0.0).tolist() == [4, 4, 4]


def test_draft_lengths_can_be_zero():
    p = torch.tensor([[0.3, 0.95], [0.95, 0.95]])
    assert draft_lengths(p, threshold=0.9).tolist() == [0, 2]


def test_verify_accept():
    draft = torch.tensor([[5, 6, 7], [5, 6, 7], [5, 6, 7], [1, 2, 3]])
    target = torch.tensor([[5, 6, 7, 9],   # all agree
                           [5, 0, 7, 9],   # second disagrees: later agreement does not count
                           [0, 6, 7, 9],   # first disagrees
                           [1, 2, 3, 9]])  # agree, but only 1 real draft
    assert verify_accept(draft, target, torch.tensor([3, 3, 3, 1])).tolist() == [3, 1, 0, 1]
    assert verify_accept(draft, target).tolist() == [3, 1, 0, 3]
    assert verify_accept(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long)).tolist() == [0, 0]
    with pytest.raises(ValueError):
        verify_accept(draft, target[:, :2])
