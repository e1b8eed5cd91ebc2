"""How a boolean attention pattern is handed to a Hugging Face model as a custom dense mask.

Shared by the training layout (:mod:`selfdistill.train.layout`) and the decoder (:mod:`selfdistill.decode`), so
both give ``sdpa`` and ``eager`` exactly the same mask for the same pattern.
"""

from __future__ import annotations

import torch

#: Attention implementations whose kernels take an arbitrary dense 4-D mask (flash-attention kernels do not).
DENSE_MASK_IMPLEMENTATIONS = ("sdpa", "eager")


def dense_mask_for(allowed: torch.Tensor, *, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True = may attend), any shape, in the form ``attn_implementation`` reads a custom mask.

    ``sdpa`` takes it as is; ``eager`` adds the mask to the scores, so it gets an additive float mask (0 where
    allowed, ``finfo(dtype).min`` where not). Other implementations (flash kernels) cannot take a dense mask.
    """
    if attn_implementation == "sdpa":
        return allowed
    if attn_implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed,
                                                                                         torch.finfo(dtype).min)
    raise ValueError(f"attn_implementation {attn_implementation!r} cannot take a dense custom mask; "
                     f"use one of {DENSE_MASK_IMPLEMENTATIONS}")
