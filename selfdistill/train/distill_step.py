"""One online self-distillation step (METHOD.md section 3): two forward passes over the replicated layout.

1. gather the layout's slots from raw token windows (masks at mask slots);
2. student pass (with grad), logits at the ``[R, k]`` prediction slots;
3. greedy rollout ``y'`` and student forcing: each region's ``K`` mask slots are overwritten with ``y'_1..y'_K``
   (the k-th proposal is never fed back);
4. teacher pass (no grad) on the forced sequence with the same attention and positions: at slot ``j`` it has seen
   ``prefix + y'_<j``;
5. loss over the kept regions (regions after the first EOS/pad target are dropped) + metrics.

Data-parallel runs pass ``count_mean`` so the loss is the mean over the *global* batch: processes keep different
numbers of regions (EOS pruning, completion-only training), and averaging per-process means would weight every
process alike whatever its count.

``raw`` windows are ``long[B, N]`` with ``N >= layout.num_source_tokens``. Model calls pass a 4-D attention
mask and explicit position ids, so any HF decoder with ``sdpa``/``eager`` attention works unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from selfdistill.models.gated_lora import masks_at
from selfdistill.train.teacher_scores import agreement_run_length, chunk_log_likelihood
from selfdistill.train.layout import Layout, attention_mask_4d
from selfdistill.train.losses import LOSS_MODES, distill_loss, token_ce, weighted_mean
from selfdistill.train.shared_prefix import SharedPrefix, supports_shared_prefix


@dataclass
class StepOutput:
    """Result of :func:`distill_step` (``B`` windows, ``R`` regions, ``k`` slots).

    Attributes:
        loss: scalar, with grad through the student.
        student_logits: ``[B, R, k, V]`` at the prediction slots.
        teacher_logits: ``[B, R, k, V]`` on the student-forced sequence (``None`` for ``gt_ce``).
        proposals: long[B, R, k], the student's greedy chunk ``y'``.
        targets: long[B, R, k], the ground-truth tokens of each chunk.
        input_ids: long[B, S], the student's input; ``forced_ids``: the teacher's (``None`` for ``gt_ce``).
        keep: bool[B, R], regions that count in the loss.
        stats: name -> ``(sum, count)`` float tensors, so callers can average across micro-batches and ranks.
    """

    loss: torch.Tensor
    student_logits: torch.Tensor
    teacher_logits: torch.Tensor | None
    proposals: torch.Tensor
    targets: torch.Tensor
    input_ids: torch.Tensor
    forced_ids: torch.Tensor | None
    keep: torch.Tensor
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def gather_inputs(raw: torch.Tensor, layout: Layout, mask_token_id: int) -> torch.Tensor:
    """Student input ids ``long[B, S]``: ``raw`` at each slot's source index, the mask id at mask slots."""
    if raw.ndim != 2:
        raise ValueError(f"raw token windows must be [B, N], got shape {tuple(raw.shape)}")
    if raw.shape[1] < layout.num_source_tokens:
        raise ValueError(f"windows hold {raw.shape[1]} raw tokens but this layout (k={layout.k}, "
                         f"offset={layout.offset}) needs {layout.num_source_tokens}")
    ids = raw[:, layout.src_index.to(raw.device)]
    return torch.where(layout.is_mask.to(raw.device)[None], torch.full_like(ids, mask_token_id), ids)


def student_force(input_ids: torch.Tensor, layout: Layout, proposals: torch.Tensor) -> torch.Tensor:
    """Copy ``input_ids`` [B, S] and write ``proposals[:, r, :K]`` ([B, R, k]) into region r's mask slots."""
    forced = input_ids.clone()
    n_masks = layout.k - 1
    if n_masks:
        slots = layout.mask_slots.to(input_ids.device).reshape(-1)  # [R*K]
        forced[:, slots] = proposals[:, :, :n_masks].reshape(input_ids.shape[0], -1).to(forced.dtype)
    return forced


def first_stop_index(raw: torch.Tensor, *, stop_token_ids: tuple[int, ...] = (),
                     valid: torch.Tensor | None = None, stop_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per window, the first raw index ``t >= 1`` whose token is a stop id or invalid (padding); ``N`` if none.

    ``raw``: long[B, N]; ``valid``, ``stop_mask``: bool[B, N] or None. A stop id counts only where ``stop_mask``
    is True (chat rows: on the target side, since the turn ends inside a chat prompt are EOS-like ids that do not
    end the row). Returns long[B]. Index 0 is never a target.
    """
    stop = torch.zeros_like(raw, dtype=torch.bool)
    for tok in stop_token_ids:
        stop |= raw == tok
    if stop_mask is not None:
        stop &= stop_mask.bool()
    if valid is not None:
        stop |= ~valid.bool()
    stop[:, 0] = False
    n = raw.shape[1]
    idx = torch.arange(n, device=raw.device).expand_as(raw)
    return torch.where(stop, idx, torch.full_like(idx, n)).min(dim=1).values


def region_keep(layout: Layout, first_stop: torch.Tensor, target_mask: torch.Tensor | None = None) -> torch.Tensor:
    """bool[B, R]: region kept iff its first target comes no later than the first stop (METHOD.md 3.6).

    So the region whose chunk contains the first EOS/pad is kept and every later one is dropped. With
    ``target_mask`` (bool[B, N], e.g. True on completion tokens), a region also needs its first target there:
    completion-only training drops regions that would predict prompt text.
    """
    first_target = layout.target_index[layout.pred_slots[:, 0]].to(first_stop.device)  # [R]
    keep = first_target[None, :] <= first_stop[:, None]
    if target_mask is not None:
        keep &= target_mask.to(first_stop.device).bool()[:, first_target]
    return keep


def forward_slots(model, input_ids: torch.Tensor, layout: Layout, slots: torch.Tensor | None) -> torch.Tensor:
    """Run ``model`` on the layout and return logits ``[B, len(slots), V]`` (all ``S`` slots if ``slots`` is None).

    ``model`` may be wrapped (DDP/DeepSpeed ``.module``); the mask form follows its attention implementation.
    """
    config = _unwrap(model).config
    b = input_ids.shape[0]
    mask = attention_mask_4d(layout.attention.to(input_ids.device), attn_implementation=config._attn_implementation,
                             dtype=_unwrap(model).dtype, batch_size=b)
    positions = layout.position_ids.to(input_ids.device)[None].expand(b, -1)
    kwargs = {} if slots is None else {"logits_to_keep": slots.to(input_ids.device)}
    return model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False, **kwargs).logits


def student_chunk_logits(student, input_ids: torch.Tensor, layout: Layout, *, prefix: SharedPrefix | None,
                         all_slots: bool = False) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The student pass: ``(logits at all S slots or None, logits [B, R, k, V] at the prediction slots)``.

    All slots only with ``all_slots`` (the prefix NTP term wants the real ones); over ``prefix``'s cache when given.
    """
    b, r, k = input_ids.shape[0], layout.num_regions, layout.k
    if prefix is not None:
        return None, prefix.chunk_logits(student, input_ids[:, layout.mask_slots.reshape(-1).to(input_ids.device)])
    pred = layout.pred_slots.reshape(-1).to(input_ids.device)
    with masks_at(_unwrap(student), layout.mask_slots):  # the layout says where the masks are: no search
        if all_slots:
            all_logits = forward_slots(student, input_ids, layout, None)
            return all_logits, all_logits[:, pred].reshape(b, r, k, -1)
        return None, forward_slots(student, input_ids, layout, pred).reshape(b, r, k, -1)


def teacher_chunk_logits(teacher, forced: torch.Tensor, layout: Layout, *,
                         prefix: SharedPrefix | None) -> torch.Tensor:
    """The teacher pass on the student-forced ids ``[B, S]``: logits ``[B, R, k, V]`` (call under ``no_grad``)."""
    if prefix is not None:
        return prefix.chunk_logits(teacher, forced[:, layout.mask_slots.reshape(-1).to(forced.device)])
    pred = layout.pred_slots.reshape(-1)
    return forward_slots(teacher, forced, layout, pred).reshape(forced.shape[0], layout.num_regions, layout.k, -1)


def distill_step(student, teacher, raw: torch.Tensor, *, layout: Layout, mask_token_id: int,
                 loss_mode: str = "hard_ce", ntp_weight: float = 0.0, entropy_beta: float = 0.0,
                 stop_token_ids: tuple[int, ...] = (), valid: torch.Tensor | None = None,
                 target_mask: torch.Tensor | None = None, stop_mask: torch.Tensor | None = None,
                 count_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 shared_prefix: bool = False) -> StepOutput:
    """The full per-step computation of METHOD.md section 3 on one micro-batch.

    Args:
        student: trainable causal LM (possibly DDP-wrapped); called with grad enabled.
        teacher: frozen causal LM (ignored, may be None, for ``gt_ce``); called under ``torch.no_grad``.
        raw: long[B, N] raw token windows.
        layout: from :func:`selfdistill.train.layout.build_layout` for this step's ``k`` and offset.
        mask_token_id: the ``<mtp>`` id.
        loss_mode: one of :data:`selfdistill.train.losses.LOSS_MODES`.
        ntp_weight: weight of the prefix next-token CE on the real slots (0 = off).
        entropy_beta: weight of the student-entropy penalty on the prediction slots.
        stop_token_ids: EOS/pad ids after which regions are pruned (empty with packing, where EOS separates rows).
        valid: bool[B, N], False on padding; padding always prunes.
        target_mask: bool[B, N] or None; regions (and prefix-NTP targets) count only where it is True at their
            first target (completion-only training: True on the target side of each row).
        stop_mask: bool[B, N] or None; where a stop id ends a row (see :func:`first_stop_index`).
        count_mean: data-parallel training only. Maps this process's loss item counts, float64[2] (distillation
            slots, prefix-NTP targets), to their mean over the processes. Each loss term is then scaled by
            ``local count / mean count``, so the average over processes that DDP/FSDP/DeepSpeed take of the
            gradients is the gradient of the mean over the global batch. ``None``: one process, plain means.
        shared_prefix: gated LoRA only (``teacher`` = the student's :class:`BaseModelView`, ``ntp_weight`` 0): run
            the real tokens once and both mask passes over their cache (:mod:`selfdistill.train.shared_prefix`);
            same logits and gradients up to rounding, about half the compute.
    """
    if loss_mode not in LOSS_MODES:
        raise ValueError(f"unknown loss mode {loss_mode!r}; choose from {LOSS_MODES}")
    if teacher is None and loss_mode != "gt_ce":
        raise ValueError(f"loss mode {loss_mode!r} needs a teacher model")
    b, r, k = raw.shape[0], layout.num_regions, layout.k
    input_ids = gather_inputs(raw, layout, mask_token_id)
    pred = layout.pred_slots.reshape(-1)  # [R*k]
    targets = raw[:, layout.target_index[pred].to(raw.device)].reshape(b, r, k)
    first_stop = first_stop_index(raw, stop_token_ids=stop_token_ids, valid=valid, stop_mask=stop_mask)
    keep = region_keep(layout, first_stop, target_mask)  # [B, R]
    weight = keep[:, :, None].expand(b, r, k)

    prefix = None
    if shared_prefix:
        if ntp_weight or not supports_shared_prefix(student, teacher):
            raise ValueError("shared_prefix needs a gated-LoRA student whose teacher is its own base path "
                             "(BaseModelView) and ntp_weight 0")
        prefix = SharedPrefix(student, raw, layout)
    all_logits, student_logits = student_chunk_logits(student, input_ids, layout, prefix=prefix,
                                                      all_slots=bool(ntp_weight))
    proposals = student_logits.detach().argmax(-1)  # greedy rollout, no gradient

    teacher_logits = forced = None
    if loss_mode != "gt_ce":
        forced = student_force(input_ids, layout, proposals)
        with torch.no_grad():
            teacher_logits = teacher_chunk_logits(teacher, forced, layout, prefix=prefix)

    loss = distill_loss(loss_mode, student_logits, teacher_logits=teacher_logits, chunk=proposals, targets=targets,
                        weight=weight, entropy_beta=entropy_beta)
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    ntp, ntp_count = None, torch.zeros((), dtype=torch.float64, device=raw.device)
    if ntp_weight:
        ntp, ntp_count = prefix_ntp_loss(all_logits, raw, layout, first_stop=first_stop, target_mask=target_mask)
        stats["ntp_loss"] = (ntp.detach().double() * ntp_count, ntp_count)
    if count_mean is not None:
        scale = global_count_scale(torch.stack([weight.sum().double(), ntp_count]), count_mean)
        loss = loss * scale[0].to(loss.dtype)
        ntp = None if ntp is None else ntp * scale[1].to(ntp.dtype)
    if ntp is not None:
        loss = loss + ntp_weight * ntp
    stats.update(_metrics(proposals, teacher_logits, targets, keep, loss_mode))
    stats["loss"] = _pair(loss.detach(), 1)
    return StepOutput(loss=loss, student_logits=student_logits, teacher_logits=teacher_logits, proposals=proposals,
                      targets=targets, input_ids=input_ids, forced_ids=forced, keep=keep, stats=stats)


def prefix_ntp_loss(all_logits: torch.Tensor, raw: torch.Tensor, layout: Layout, *, first_stop: torch.Tensor,
                    target_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The prefix next-token CE over the layout's real slots: ``(mean loss, float64 count of targets)``.

    ``all_logits``: ``[B, S, V]`` at every slot; ``raw``: long[B, N]; ``first_stop``: long[B] (targets after it do
    not count); ``target_mask``: bool[B, N] or None (only targets where it is True count).
    """
    real = layout.real_slots.to(raw.device)
    tgt_idx = layout.target_index.to(raw.device)[real]  # [L]
    counted = tgt_idx[None, :] <= first_stop[:, None]
    if target_mask is not None:
        counted &= target_mask.bool()[:, tgt_idx]
    return weighted_mean(token_ce(all_logits[:, real], raw[:, tgt_idx]), counted), counted.sum().double()


def global_count_scale(counts: torch.Tensor, count_mean: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``local count / mean count over processes`` per loss term (0 where no process has items).

    ``counts``: float64[T], this process's item count per loss term; ``count_mean`` maps it to the mean over the
    processes. Scaling each local mean loss by it makes the data-parallel average of gradients the gradient of
    the mean over the global batch.
    """
    mean = count_mean(counts.detach())
    return torch.where(mean > 0, counts / mean.clamp_min(1e-30), torch.zeros_like(counts))


def _metrics(proposals, teacher_logits, targets, keep, loss_mode) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Sums and counts over kept regions: per-slot agreement, leading agreement run, teacher chunk log-lik.

    Agreement is with the teacher's argmax, or with the ground truth when no teacher ran (``gt_ce``).
    """
    reference = targets if teacher_logits is None else teacher_logits.argmax(-1)
    kept = keep.reshape(-1).double()  # weights, not a boolean index: no nonzero, no host sync
    n = kept.sum()
    k = proposals.shape[-1]
    agree = (proposals == reference).reshape(-1, k).double() * kept[:, None]
    out = {f"agree_slot{j + 1}": (agree[:, j].sum(), n) for j in range(k)}
    run = agreement_run_length(proposals, reference).reshape(-1).double() * kept
    out["agree_run"] = (run.sum(), n)
    out["kept_regions"] = _pair(kept.mean(), 1)
    if teacher_logits is not None:
        # a logged metric: in the logits' precision (at least float32), with no float64 copy of [R, k, V]
        ll = chunk_log_likelihood(teacher_logits, proposals).reshape(-1).double()
        out["teacher_chunk_loglik"] = (torch.where(kept > 0, ll, torch.zeros_like(ll)).sum(), n)
    return out


def _pair(value: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    return value.double(), torch.full((), float(count), dtype=torch.float64, device=value.device)


def _unwrap(model):
    # DDP and DeepSpeed engines keep the HF model in `.module`; FSDP2 keeps the class itself.
    return getattr(model, "module", model)
