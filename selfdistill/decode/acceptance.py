"""Acceptance rules of the multi-token decoder (METHOD.md section 5, step 3, and the lossless "verify" mode).

Pure tensor functions, no model: given what one forward pass predicted, how many tokens does each row emit?
Shapes: ``B`` rows, ``n`` prediction positions (the last real token followed by the masks).
"""

from __future__ import annotations

import torch


def leading_run(flags: torch.Tensor) -> torch.Tensor:
    """Length of the leading run of ``True`` in each row.

    Args:
        flags: ``[B, n]`` bool.

    Returns:
        ``[B]`` long, in ``0..n``.
    """
    if flags.ndim != 2:
        raise ValueError(f"flags must be [B, n], got shape {tuple(flags.shape)}")
    # cumprod stays 1 until the first False and 0 afterwards, so its sum is the run length.
    return flags.to(torch.long).cumprod(dim=-1).sum(dim=-1)


def static_accept(num_positions: int, *, k: int) -> int:
    """Static k: emit the first ``k`` of ``num_positions`` predictions (checks ``1 <= k <= num_positions``)."""
    if not 1 <= k <= num_positions:
        raise ValueError(f"static k must be in 1..{num_positions} (the prediction positions), got {k}")
    return k


def conf_adapt_accept(top_probs: torch.Tensor, *, threshold: float) -> torch.Tensor:
    """ConfAdapt(tau): longest leading run of positions with top-1 probability >= ``threshold``, at least 1.

    Args:
        top_probs: ``[B, n]`` top-1 softmax probabilities (position 0 = the last real token).
        threshold: tau; a value above 1 accepts exactly one token per pass (plain greedy decoding).

    Returns:
        ``[B]`` long, in ``1..n``.
    """
    if top_probs.shape[-1] < 1:
        raise ValueError("conf_adapt_accept needs at least one prediction position")
    return leading_run(top_probs >= threshold).clamp(min=1)


def draft_lengths(top_probs: torch.Tensor, *, threshold: float) -> torch.Tensor:
    """How many mask predictions the verify mode proposes as drafts: the confident leading run, possibly 0.

    Args:
        top_probs: ``[B, n]`` top-1 probabilities at the mask positions only.

    Returns:
        ``[B]`` long, in ``0..n``.
    """
    return leading_run(top_probs >= threshold)


def verify_accept(draft: torch.Tensor, target_argmax: torch.Tensor, draft_len: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Lossless verification: how many leading drafts agree with the model's own next-token argmax.

    ``target_argmax[b, j]`` is the greedy token the model predicts after the prefix ending at draft ``j - 1``
    (``j = 0``: after the last verified token), so draft ``j`` is accepted iff it equals ``target_argmax[b, j]``
    and all earlier drafts were accepted. The token emitted after the ``a`` accepted drafts is the correction
    ``target_argmax[b, a]`` (the caller supplies ``n + 1`` targets for ``n`` drafts to have it).

    Args:
        draft: ``[B, n]`` proposed tokens (any value beyond ``draft_len``).
        target_argmax: ``[B, n]`` or ``[B, n + 1]`` greedy next tokens at the same positions.
        draft_len: ``[B]`` number of real drafts per row (default: all ``n``).

    Returns:
        ``[B]`` long, number of accepted drafts, in ``0..draft_len``.
    """
    n = draft.shape[-1]
    if target_argmax.shape[-1] < n or target_argmax.shape[0] != draft.shape[0]:
        raise ValueError(f"target_argmax {tuple(target_argmax.shape)} must cover draft {tuple(draft.shape)}")
    agree = draft == target_argmax[:, :n]
    if draft_len is not None:
        agree &= torch.arange(n, device=draft.device) < draft_len.unsqueeze(-1)
    return leading_run(agree)
