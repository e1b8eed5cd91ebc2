"""The replicated masked-region training layout (METHOD.md section 2) and its attention mask.

One packed sequence of ``S`` slots holds ``M`` multi-token-prediction problems. Region ``b`` shows ``P = S/M - K``
real source tokens followed by ``K = k - 1`` mask slots standing for the next ``K`` source tokens; those hidden
tokens reappear as real tokens at the start of region ``b + 1``. With a random offset ``o`` the layout is shifted
left by ``o``: the first region keeps only ``P - o`` real tokens and ``o`` real tokens trail the last region.

Everything is expressed by source index (``src_index[s]`` = which raw token slot ``s`` shows or stands for), so
gathering a batch is ``raw[:, src_index]`` and the targets of any slot are ``raw[:, src_index + 1]``.

Worked example (S=18, k=3, M=3, offset 0)::

    slot : 0 1 2 3 4 5 4 5 6 7  8  9  8  9 10 11 12 13   <- src_index
    mask : . . . . M M . . . .  M  M  .  .  .  .  M  M
    pred : . . . P P P . . . P  P  P  .  .  .  P  P  P
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from selfdistill.models.attention import dense_mask_for

@dataclass(frozen=True)
class Layout:
    """Index tensors of one layout (built on the CPU; :meth:`to` moves them once, and the trainer keeps one per shape
    on its device, so a step copies nothing and reads nothing back).

    Attributes:
        src_index: long[S], source index shown at (real) or stood for by (mask) each slot.
        is_mask: bool[S], slot is a mask slot.
        is_pred: bool[S], slot is a prediction slot (last real token of a region or one of its masks).
        position_ids: long[S], position id of each slot (= ``src_index``).
        region: long[S], region of each slot; ``-1`` for the trailing real tokens of an offset layout.
        attention: bool[S, S], ``attention[q, kv]`` is True when query slot ``q`` may attend key slot ``kv``.
        pred_slots: long[R, k], the prediction slots of each region in chunk order.
        mask_slots: long[R, K], the mask slots of each region in order (``K = k - 1``, may be 0 wide).
        real_slots: long[L], the real slots in order (their sources are ``0..L-1``): index tensors, not boolean
            masks, so gathers need no ``nonzero`` (a host sync on a GPU).
        num_source_tokens: raw tokens the layout reads, including the shifted target of the last slot.
        k: chunk size; ``offset``: the shift ``o``; ``real_per_region``: ``P``.
    """

    src_index: torch.Tensor
    is_mask: torch.Tensor
    is_pred: torch.Tensor
    position_ids: torch.Tensor
    region: torch.Tensor
    attention: torch.Tensor
    pred_slots: torch.Tensor
    mask_slots: torch.Tensor
    real_slots: torch.Tensor
    num_source_tokens: int
    k: int
    offset: int
    real_per_region: int

    def to(self, device) -> Layout:
        """This layout with every tensor on ``device``."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if torch.is_tensor(getattr(self, f.name))})

    @property
    def real_len(self) -> int:
        """``L``, the real slots (metadata: no read of a tensor's values)."""
        return int(self.real_slots.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.src_index.shape[0])

    @property
    def num_regions(self) -> int:
        return int(self.pred_slots.shape[0])

    @property
    def target_index(self) -> torch.Tensor:
        """long[S]: source index of each slot's next-token target (``src_index + 1``)."""
        return self.src_index + 1


def region_geometry(seq_len: int, k: int, num_regions: int) -> tuple[int, int]:
    """``(W, P)``: region width ``S/M`` and real tokens per region ``W - (k-1)``, validated.

    Raises:
        ValueError: when the geometry cannot hold a ``k``-token problem per region.
    """
    if k < 1:
        raise ValueError(f"chunk size k must be >= 1, got {k}")
    if num_regions < 1:
        raise ValueError(f"num_regions must be >= 1, got {num_regions}")
    if seq_len < 1 or seq_len % num_regions:
        raise ValueError(f"seq_len={seq_len} must be a positive multiple of num_regions={num_regions}")
    width = seq_len // num_regions
    if k - 1 >= width:
        raise ValueError(
            f"k={k} needs {k - 1} mask slots per region but a region is only {width} slots wide "
            f"(seq_len={seq_len} / num_regions={num_regions}); at least one real token per region is required"
        )
    return width, width - (k - 1)


def num_source_tokens_needed(seq_len: int, k_min: int, num_regions: int) -> int:
    """Raw tokens a data window must hold so every layout with ``k >= k_min`` and any offset fits.

    The need is largest for the smallest ``k`` at offset 0: ``M*P + K + 1``.
    """
    _, p = region_geometry(seq_len, k_min, num_regions)
    return num_regions * p + (k_min - 1) + 1


def build_layout(seq_len: int, k: int, num_regions: int, *, offset: int = 0) -> Layout:
    """Build the layout of METHOD.md section 2 for chunk size ``k`` and shift ``offset``.

    Args:
        seq_len: ``S``, slots in the packed sequence (a multiple of ``num_regions``).
        k: chunk size; each region carries ``k - 1`` masks and ``k`` prediction slots.
        num_regions: ``M``.
        offset: ``o`` in ``[0, P-1]``; the first region's prefix has ``P - o`` real tokens and ``o`` real
            tokens trail the sequence.

    Returns:
        A :class:`Layout`; its tensors have ``S`` (or ``[M, k]``, ``[M, k-1]``, ``[S, S]``) entries.
    """
    width, p = region_geometry(seq_len, k, num_regions)
    if not 0 <= offset < p:
        raise ValueError(f"offset must be in [0, {p - 1}] for seq_len={seq_len}, k={k}, num_regions={num_regions}; "
                         f"got {offset}")
    n_masks = k - 1
    src, is_mask, region = [], [], []
    pred_slots, mask_slots = [], []
    for b in range(num_regions):
        first_real = max(0, b * p - offset)  # source index of the region's first real token
        end_real = b * p + p - offset  # one past its last real token = first hidden token
        start_slot = len(src)
        src.extend(range(first_real, end_real))
        is_mask.extend([False] * (end_real - first_real))
        src.extend(range(end_real, end_real + n_masks))
        is_mask.extend([True] * n_masks)
        region.extend([b] * (len(src) - start_slot))
        last_real_slot = start_slot + (end_real - first_real) - 1
        pred_slots.append(list(range(last_real_slot, last_real_slot + k)))
        mask_slots.append(list(range(last_real_slot + 1, last_real_slot + k)))
    # The trailing real tokens continue the real stream after the last region's real tokens.
    tail_start = num_regions * p - offset
    src.extend(range(tail_start, tail_start + offset))
    is_mask.extend([False] * offset)
    region.extend([-1] * offset)
    assert len(src) == seq_len, (len(src), seq_len)

    src_t = torch.tensor(src, dtype=torch.long)
    mask_t = torch.tensor(is_mask, dtype=torch.bool)
    region_t = torch.tensor(region, dtype=torch.long)
    pred_t = torch.tensor(pred_slots, dtype=torch.long).reshape(num_regions, k)
    mslots_t = torch.tensor(mask_slots, dtype=torch.long).reshape(num_regions, n_masks)
    is_pred = torch.zeros(seq_len, dtype=torch.bool)
    is_pred[pred_t.reshape(-1)] = True

    slot = torch.arange(seq_len)
    causal = slot[None, :] <= slot[:, None]  # [q, kv]
    real = ~mask_t
    same_region = region_t[:, None] == region_t[None, :]
    # Real queries see earlier real keys only; masks see earlier real keys and their own region's earlier masks.
    attention = causal & (real[None, :] | (mask_t[:, None] & mask_t[None, :] & same_region))

    return Layout(src_index=src_t, is_mask=mask_t, is_pred=is_pred, position_ids=src_t.clone(), region=region_t,
                  attention=attention, pred_slots=pred_t, mask_slots=mslots_t,
                  real_slots=torch.tensor([i for i, m in enumerate(is_mask) if not m], dtype=torch.long),
                  num_source_tokens=max(src) + 2, k=k, offset=offset, real_per_region=p)


def attention_mask_4d(attention: torch.Tensor, *, attn_implementation: str, dtype: torch.dtype,
                      batch_size: int) -> torch.Tensor:
    """Turn a boolean ``[S, S]`` pattern into the 4-D ``attention_mask`` a Hugging Face model takes as-is.

    ``transformers`` (5.x ``masking_utils._preprocess_mask_arguments``) passes any 4-D mask straight to the
    attention kernel. ``sdpa`` reads a boolean mask as "True = attend"; ``eager`` *adds* the mask to the scores,
    so it needs an additive float mask (0 where allowed, ``finfo(dtype).min`` where not).

    Args:
        attention: bool[S, S], True where query may attend key.
        attn_implementation: ``"sdpa"`` or ``"eager"`` (the model's ``config._attn_implementation``).
        dtype: the model's compute dtype (used for the eager additive mask).
        batch_size: ``B``; the result is an expanded view, no copy per sample.

    Returns:
        ``bool[B, 1, S, S]`` for sdpa, ``dtype[B, 1, S, S]`` for eager.
    """
    if attention.dtype != torch.bool or attention.ndim != 2 or attention.shape[0] != attention.shape[1]:
        raise ValueError(f"attention must be a square bool matrix, got {attention.dtype} {tuple(attention.shape)}")
    mask = dense_mask_for(attention, attn_implementation=attn_implementation, dtype=dtype)
    return mask[None, None].expand(batch_size, 1, *attention.shape)
