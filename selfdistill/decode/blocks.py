"""What one forward pass feeds, per row, and the attention pattern over it: pure functions, no model.

A pass feeds every row ``[its real tokens | pads | mask groups]``. Real tokens are what the row has to put into
the cache (the tokens emitted last pass, and for lossless strategies the drafts after them); pads fill the row to
the widest row ``W``; then ``G`` groups of ``g`` masks each, shared columns in every row, so cropping the last
``G * g`` cache slots drops every row's mask KV at once.

Where each group sits is the strategy's ``group_anchors``: one entry per group, an int ``j`` for "after the
``j``-th provisional token" (``j = 0``: the last verified token) or ``None`` for "after the row's last real token".

- ``(None,)`` (static, ConfAdapt, verify): one group after the last real token. Plain causal attention over slots
  plus the row's slot mask is the row's own causal attention.
- ``(0, 1, ..., M)`` (quadratic): group ``j`` follows the ``j``-th provisional token; it attends to the prefix and
  the real tokens up to its anchor, and causally within itself, not to other groups (:func:`group_pattern`).
  Groups past a row's own drafts are padding (slot mask 0).
- ``(0, ..., h - 1, None)`` (hedged): quadratic's groups after the first ``h`` provisional tokens, and one after
  the last draft. An int group at a row's last draft would repeat the ``None`` group, so it is padding there.

Each row predicts from its *anchors* (the last verified token and each draft: ``M + 1`` columns) and every mask
column; ``sel`` lists those columns per row, in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from selfdistill.models.attention import DENSE_MASK_IMPLEMENTATIONS, dense_mask_for


@dataclass
class Layout:
    """Host-side layout of one pass (``B`` rows, ``L = width + groups * n_masks`` columns), lists of ``[B][L]``.

    ``anchors[b][c]``: the last real column that column ``c`` may attend to (itself for real and pad columns).
    ``sel[b]``: prediction columns, ``max_drafts + 1`` anchors then the ``groups * n_masks`` mask columns.
    """

    ids: list[list[int]]
    slot: list[list[int]]
    positions: list[list[int]]
    anchors: list[list[int]]
    sel: list[list[int]]
    width: int
    n_masks: int
    groups: int
    max_drafts: int

    @property
    def length(self) -> int:
        return self.width + self.groups * self.n_masks

    @property
    def mask_columns(self) -> int:
        return self.groups * self.n_masks


def block_layout(pending: list[list[int]], drafts: list[int], starts: list[int], *, n_masks: int,
                 group_anchors: Sequence[int | None] = (None,), mask_id: int, filler: int = 0) -> Layout:
    """The columns of one pass.

    Args:
        pending: per row, the real tokens to feed (non-empty); the last ``drafts[b]`` of them are drafts.
        drafts: per row, ``m_b >= 0``.
        starts: per row, the position id of its first pending token (= real tokens already cached).
        n_masks: ``g``, masks per group.
        group_anchors: per group, the provisional token it follows (``0 <= j <= max(drafts)``) or ``None`` (the
            row's last real token); a lone int group needs ``max(drafts) == 0`` (else it is not causal attention).
        mask_id, filler: ids of masks and of pad slots (a pad's id never matters: nothing attends to it).
    """
    width, max_drafts = max(map(len, pending)), max(drafts)
    check_group_anchors(group_anchors, max_drafts=max_drafts)
    groups, has_last = len(group_anchors), None in group_anchors
    length = width + groups * n_masks
    out = Layout([], [], [], [], [], width, n_masks, groups, max_drafts)
    for p, m, s in zip(pending, drafts, starts):
        n, pad = len(p), width - len(p)
        ids, slot = p + [filler] * pad + [mask_id] * (groups * n_masks), [1] * n + [0] * pad
        positions, anchors = list(range(s, s + n)) + [s] * pad, list(range(width))
        for j in group_anchors:
            anchor = n - 1 if j is None else n - m - 1 + min(j, m)
            slot += [int(j is None or j < m or (j == m and not has_last))] * n_masks
            positions += range(s + anchor + 1, s + anchor + 1 + n_masks)
            anchors += [anchor] * n_masks
        out.ids.append(ids)
        out.slot.append(slot)
        out.positions.append(positions)
        out.anchors.append(anchors)
        out.sel.append([n - m - 1 + min(j, m) for j in range(max_drafts + 1)] + list(range(width, length)))
    return out


def check_group_anchors(group_anchors: Sequence[int | None], *, max_drafts: int) -> None:
    """Refuse group anchors :func:`block_layout` cannot lay out (see its ``group_anchors``)."""
    ints = [j for j in group_anchors if j is not None]
    if not group_anchors or len(set(group_anchors)) != len(group_anchors) or any(
            isinstance(j, bool) or not isinstance(j, int) or not 0 <= j <= max_drafts for j in ints):
        raise ValueError(f"group anchors must be distinct ints in [0, {max_drafts}] or None, got {group_anchors}")
    if len(group_anchors) == 1 and ints and max_drafts > 0:
        raise ValueError(f"a lone group anchored at provisional token {ints[0]} with drafts fed needs the grouped "
                         "attention pattern; anchor it after the last real token (None)")


def group_pattern(anchors: torch.Tensor, *, width: int, groups: int, n_masks: int) -> torch.Tensor:
    """Which block column each block column may attend to (before the slot mask removes pads and pad groups).

    Real and pad columns: real columns up to their anchor (causal). A mask of group ``j``: real columns up to the
    group's anchor, and the masks of group ``j`` up to itself.

    Args:
        anchors: ``long[B, L]`` (:attr:`Layout.anchors`).

    Returns:
        ``bool[B, L, L]`` (query, key).
    """
    length = anchors.shape[1]
    device = anchors.device
    col = torch.arange(length, device=device)
    group = torch.cat([torch.full((width,), -1, device=device),
                       torch.arange(groups, device=device).repeat_interleave(n_masks)])
    offset = torch.cat([torch.zeros(width, dtype=torch.long, device=device),
                        torch.arange(n_masks, device=device).repeat(groups)])
    real_key = (group == -1)[None, None, :] & (col[None, None, :] <= anchors[:, :, None])
    same_group = (group[:, None] == group[None, :]) & (group[:, None] >= 0) & (offset[None, :] <= offset[:, None])
    return real_key | same_group[None]


def model_pass_mask(model, slot_mask: torch.Tensor, query_len: int, *, pattern: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """The attention mask handed to ``model`` for a pass of ``query_len`` queries.

    Its own 4-D mask (:func:`pass_attention_mask`) for more than one query under sdpa/eager; else the 2-D
    ``slot_mask`` ``[B, K]`` as is: one query is transformers' cheap path, and e.g. flash attention takes 2-D only
    (a ``pattern`` needs the 4-D mask).
    """
    impl = getattr(model.config, "_attn_implementation", None)
    if (query_len > 1 or pattern is not None) and impl in DENSE_MASK_IMPLEMENTATIONS:
        return pass_attention_mask(slot_mask, query_len, attn_implementation=impl, dtype=model.dtype,
                                   pattern=pattern)
    if pattern is not None:
        raise ValueError(f"attn_implementation {impl!r} cannot take the grouped mask pattern; use sdpa or eager")
    return slot_mask


def pass_attention_mask(slot_mask: torch.Tensor, query_len: int, *, attn_implementation: str,
                        dtype: torch.dtype, pattern: torch.Tensor | None = None) -> torch.Tensor:
    """The 4-D attention mask of one pass, built here so the model does not rebuild it from the 2-D one.

    The last ``query_len`` slots are this pass's queries; query ``i`` may attend key slot ``j`` iff
    ``slot_mask[b, j]`` is 1 and ``j`` is a cache slot or a block slot that ``pattern`` allows (default: ``j`` is
    not after ``i``, causal by slot, exactly what ``transformers`` derives from a 2-D mask).

    Args:
        slot_mask: ``[B, K]``, 1 (or True) for the key slots a row may see: cache slots, then this pass's.
        query_len: ``q <= K``.
        attn_implementation: ``"sdpa"`` (boolean mask, True = attend) or ``"eager"`` (additive float mask).
        dtype: the model's dtype, for the eager mask.
        pattern: ``bool[B, q, q]`` over the block's own slots (:func:`group_pattern`), or ``None`` (causal).

    Returns:
        ``bool[B, 1, q, K]`` (sdpa) or ``dtype[B, 1, q, K]`` (eager).
    """
    batch, keys = slot_mask.shape
    if pattern is None:
        causal = torch.ones(query_len, keys, dtype=torch.bool, device=slot_mask.device).tril(keys - query_len)[None]
    else:
        cached = torch.ones(batch, query_len, keys - query_len, dtype=torch.bool, device=slot_mask.device)
        causal = torch.cat([cached, pattern], dim=-1)
    allowed = causal[:, None] & slot_mask.bool()[:, None, None, :]
    return dense_mask_for(allowed, attn_implementation=attn_implementation, dtype=dtype)
