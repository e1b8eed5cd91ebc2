"""Distillation losses on per-region chunk logits (METHOD.md section 3.5).

Every function takes logits shaped ``[..., k, V]`` (usually ``[R, k, V]`` or ``[B*R, k, V]``) and an optional
slot weight ``[..., k]`` (0 for slots pruned after EOS, 1 otherwise). Losses are averaged over the weighted slots,
so a batch of ``R`` full regions averages over ``R*k`` slots. Teacher tensors are always detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_MODES = ("hard_ce", "soft_kl", "kl_ce", "gt_ce", "reward_weighted")
#: ``kl_ce``'s weight of the hard CE term beside the soft KL (PARD-2's mix).
KL_CE_WEIGHT = 0.1


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` over entries with nonzero ``weight`` (same shape); 0 when every weight is 0.

    An all-pruned batch yields a zero that still carries a graph, so backward works on every rank.
    """
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    # float32 at least: bf16 log-softmax over a 128k vocabulary is too coarse for a loss
    return F.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=-1)


def token_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy ``-log softmax(logits)[target]``: ``[..., V], [...] -> [...]``."""
    return -_log_probs(logits).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def hard_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, weight: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Main recipe: CE of the student at each slot against the teacher's argmax there. ``[..., k, V] -> []``."""
    return weighted_mean(token_ce(student_logits, teacher_logits.detach().argmax(-1)), weight)


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, weight: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Per-slot forward ``KL(P_T || P_S)``, averaged over slots. ``[..., k, V] -> []``; 0 when they are equal."""
    log_t = _log_probs(teacher_logits.detach())
    log_s = _log_probs(student_logits)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    return weighted_mean(kl, weight)


def kl_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, weight: torch.Tensor | None = None, *,
          ce_weight: float = KL_CE_WEIGHT) -> torch.Tensor:
    """``soft_kl + ce_weight * hard_ce`` (PARD-2's mix: the teacher's distribution, sharpened toward its argmax).
    ``[..., k, V] -> []``."""
    return soft_kl(student_logits, teacher_logits, weight) + ce_weight * hard_ce(student_logits, teacher_logits, weight)


def gt_ce(student_logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Offline MTP: CE against the ground-truth tokens. ``[..., k, V], [..., k] -> []``."""
    return weighted_mean(token_ce(student_logits, targets), weight)


def chunk_log_likelihood(logits: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
    """``sum_j log softmax(logits[..., j, :])[chunk[..., j]]``: ``[..., k, V], [..., k] -> [...]``, as the chosen logit
    minus the log-sum-exp (no ``[..., V]`` log-softmax is materialised; half precision is computed in float32)."""
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    return (x.gather(-1, chunk.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, dim=-1)).sum(-1)


def reward_weighted(student_logits: torch.Tensor, teacher_logits: torch.Tensor, chunk: torch.Tensor,
                    weight: torch.Tensor | None = None) -> torch.Tensor:
    """``-P_T(y'|x) * log P_S(y'_j|x)`` averaged over slots: the teacher's chunk likelihood is a detached reward.

    Args:
        student_logits: ``[..., k, V]``.
        teacher_logits: ``[..., k, V]``, teacher's scores of the student-forced chunk (slot j saw ``y'_<j``).
        chunk: ``[..., k]`` the student's proposals ``y'``.
        weight: ``[..., k]`` slot weights.
    """
    reward = chunk_log_likelihood(teacher_logits.detach(), chunk).exp()  # [...]
    per_slot = reward.unsqueeze(-1) * token_ce(student_logits, chunk)
    return weighted_mean(per_slot, weight)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of ``softmax(logits)`` in nats: ``[..., V] -> [...]``."""
    log_p = _log_probs(logits)
    return -(log_p.exp() * log_p).sum(-1)


def distill_loss(mode: str, student_logits: torch.Tensor, *, teacher_logits: torch.Tensor | None = None,
                 chunk: torch.Tensor | None = None, targets: torch.Tensor | None = None,
                 weight: torch.Tensor | None = None, entropy_beta: float = 0.0) -> torch.Tensor:
    """Dispatch to one of :data:`LOSS_MODES`, plus ``entropy_beta * H(P_S)`` averaged over the same slots."""
    if mode == "hard_ce":
        loss = hard_ce(student_logits, _need(teacher_logits, "teacher_logits", mode), weight)
    elif mode == "soft_kl":
        loss = soft_kl(student_logits, _need(teacher_logits, "teacher_logits", mode), weight)
    elif mode == "kl_ce":
        loss = kl_ce(student_logits, _need(teacher_logits, "teacher_logits", mode), weight)
    elif mode == "gt_ce":
        loss = gt_ce(student_logits, _need(targets, "targets", mode), weight)
    elif mode == "reward_weighted":
        loss = reward_weighted(student_logits, _need(teacher_logits, "teacher_logits", mode),
                               _need(chunk, "chunk", mode), weight)
    else:
        raise ValueError(f"unknown loss mode {mode!r}; choose from {LOSS_MODES}")
    if entropy_beta:
        loss = loss + entropy_beta * weighted_mean(entropy(student_logits), weight)
    return loss


def _need(value, name: str, mode: str):
    if value is None:
        raise ValueError(f"loss mode {mode!r} needs {name}")
    return value
