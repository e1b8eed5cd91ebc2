"""How well the teacher scores the student's proposed chunks (METHOD.md section 3, steps 2-4).

Used both as training metrics and as the reward of the reward-weighted loss. Chunk tensors are ``[R, k]`` (any
leading shape works): ``R`` regions, ``k`` slots. Pure functions, no gradients needed.
"""

from __future__ import annotations

import torch

from selfdistill.train.losses import chunk_log_likelihood

__all__ = ["chunk_log_likelihood", "agreement_run_length", "per_slot_agreement"]


def agreement_run_length(student_argmax: torch.Tensor, teacher_argmax: torch.Tensor) -> torch.Tensor:
    """Length of the leading run of slots where student and teacher agree: ``[..., k], [..., k] -> long[...]``.

    This is how many tokens of the student's chunk the teacher would accept by greedy verification.
    """
    if student_argmax.shape != teacher_argmax.shape:
        raise ValueError(f"shape mismatch {tuple(student_argmax.shape)} vs {tuple(teacher_argmax.shape)}")
    agree = (student_argmax == teacher_argmax).long()
    return agree.cumprod(dim=-1).sum(dim=-1)


def per_slot_agreement(student_argmax: torch.Tensor, teacher_argmax: torch.Tensor,
                       valid: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of regions whose slot ``j`` agrees: ``[R, k], [R, k], bool[R]? -> float[k]``.

    ``valid`` drops regions (e.g. pruned after EOS); with no valid region every slot reports 0.
    """
    if student_argmax.shape != teacher_argmax.shape:
        raise ValueError(f"shape mismatch {tuple(student_argmax.shape)} vs {tuple(teacher_argmax.shape)}")
    agree = (student_argmax == teacher_argmax).double().reshape(-1, student_argmax.shape[-1])
    if valid is None:
        return agree.mean(0)
    w = valid.reshape(-1).double()
    return (agree * w[:, None]).sum(0) / w.sum().clamp_min(1.0)
