"""The block a pass feeds and its attention pattern, on tiny hand-computed cases."""

import pytest
import torch

from selfdistill.decode.blocks import block_layout, group_pattern, pass_attention_mask

# Row 0 feeds [5, 6, 7] whose last token is a draft (position 10 on); row 1 feeds [8] (position 4 on).
PENDING, DRAFTS, STARTS = [[5, 6, 7], [8]], [1, 0], [10, 4]


def test_linear_layout_by_hand():
    lay = block_layout(PENDING, DRAFTS, STARTS, n_masks=2, mask_id=99, filler=0)
    assert (lay.width, lay.length, lay.mask_columns, lay.max_drafts) == (3, 5, 2, 1)
    assert lay.ids == [[5, 6, 7, 99, 99], [8, 0, 0, 99, 99]]
    assert lay.slot == [[1, 1, 1, 1, 1], [1, 0, 0, 1, 1]]  # pads are holes
    assert lay.positions == [[10, 11, 12, 13, 14], [4, 4, 4, 5, 6]]  # masks follow the last real token
    assert lay.anchors == [[0, 1, 2, 2, 2], [0, 1, 2, 0, 0]]
    # prediction columns: last verified token, each draft (repeated past a row's drafts), then the masks
    assert lay.sel == [[1, 2, 3, 4], [0, 0, 3, 4]]


def test_grouped_layout_by_hand():
    lay = block_layout(PENDING, DRAFTS, STARTS, n_masks=2, group_anchors=(0, 1), mask_id=99, filler=0)
    assert (lay.width, lay.length, lay.mask_columns) == (3, 7, 4)
    assert lay.ids == [[5, 6, 7, 99, 99, 99, 99], [8, 0, 0, 99, 99, 99, 99]]
    # group 0 follows the last verified token, group 1 the draft; row 1 has no draft: its group 1 is padding
    assert lay.slot == [[1, 1, 1, 1, 1, 1, 1], [1, 0, 0, 1, 1, 0, 0]]
    assert lay.positions == [[10, 11, 12, 12, 13, 13, 14], [4, 4, 4, 5, 6, 5, 6]]
    assert lay.anchors == [[0, 1, 2, 1, 1, 2, 2], [0, 1, 2, 0, 0, 0, 0]]
    assert lay.sel == [[1, 2, 3, 4, 5, 6], [0, 0, 3, 4, 5, 6]]


def test_hedged_layout_by_hand():
    """Groups after the last verified token and after the last draft: row 1 has no draft, so its group at
    provisional token 0 would repeat its last-token group and is padding."""
    lay = block_layout(PENDING, DRAFTS, STARTS, n_masks=2, group_anchors=(0, None), mask_id=99, filler=0)
    assert lay.slot == [[1, 1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 1, 1]]
    assert lay.positions == [[10, 11, 12, 12, 13, 13, 14], [4, 4, 4, 5, 6, 5, 6]]
    assert lay.anchors == [[0, 1, 2, 1, 1, 2, 2], [0, 1, 2, 0, 0, 0, 0]]
    # two drafts in row 0 with three groups (0, 1, last): group 1 follows draft 1, the last group draft 2
    two = block_layout([[5, 6, 7]], [2], [10], n_masks=1, group_anchors=(0, 1, None), mask_id=99)
    assert two.anchors == [[0, 1, 2, 0, 1, 2]] and two.positions == [[10, 11, 12, 11, 12, 13]]
    assert two.slot == [[1] * 6]


def test_bad_group_anchors_are_refused():
    for anchors in ((), (0, 0), (None, None), (2,), (-1, None), (True, None)):
        with pytest.raises(ValueError, match="distinct ints"):
            block_layout(PENDING, DRAFTS, STARTS, n_masks=2, group_anchors=anchors, mask_id=99)
    with pytest.raises(ValueError, match="lone group"):
        block_layout(PENDING, DRAFTS, STARTS, n_masks=2, group_anchors=(0,), mask_id=99)


def test_group_pattern_by_hand():
    lay = block_layout(PENDING, DRAFTS, STARTS, n_masks=2, group_anchors=(0, 1), mask_id=99)
    got = group_pattern(torch.tensor(lay.anchors), width=3, groups=2, n_masks=2)
    assert got.shape == (2, 7, 7) and got.dtype == torch.bool
    assert got[0].int().tolist() == [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 0, 1, 0, 0, 0],  # group 0 sees the prefix up to its anchor (column 1), not the draft
        [1, 1, 0, 1, 1, 0, 0],
        [1, 1, 1, 0, 0, 1, 0],  # group 1 sees the draft, never group 0
        [1, 1, 1, 0, 0, 1, 1]]


def test_one_group_is_causal_attention_over_the_rows_slots():
    lay = block_layout(PENDING, DRAFTS, STARTS, n_masks=2, group_anchors=(None,), mask_id=99)
    pattern = group_pattern(torch.tensor(lay.anchors), width=3, groups=1, n_masks=2)
    slot = torch.tensor(lay.slot).bool()[:, None, :]
    causal = torch.ones(5, 5, dtype=torch.bool).tril()[None]
    assert torch.equal(pattern & slot, causal & slot)


def test_pass_attention_mask_with_a_pattern():
    # one cache slot (a hole for row 1), then a 2-query block where query 1 may not see query 0
    slots = torch.tensor([[1, 1, 1], [0, 1, 1]])
    pattern = torch.tensor([[[1, 0], [0, 1]], [[1, 0], [1, 1]]], dtype=torch.bool)
    got = pass_attention_mask(slots, 2, attn_implementation="sdpa", dtype=torch.float64, pattern=pattern)
    assert got.shape == (2, 1, 2, 3)
    assert got[0, 0].int().tolist() == [[1, 1, 0], [1, 0, 1]]
    assert got[1, 0].int().tolist() == [[0, 1, 0], [0, 1, 1]]
    eager = pass_attention_mask(slots, 2, attn_implementation="eager", dtype=torch.float64, pattern=pattern)
    assert torch.equal(eager == 0, got)
