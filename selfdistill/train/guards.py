"""Stops for a run that would otherwise end with exit status 0 and a wrong result.

- :func:`check_step_finite`: a non-finite loss or gradient norm stops training *before* the optimizer step, so
  the weights, and every checkpoint saved so far, are still finite (the newest one is the last good one).
- :func:`check_loss_items`: a run whose steps so far held no loss item at all (every region pruned) trains
  nothing; it stops at its first log, naming the likely causes.

Both decide on values that are the same on every rank (the global gradient norm; flags and counts reduced over
the data-parallel group), so all ranks stop together instead of one hanging in the next collective.
"""

from __future__ import annotations

import math
import os

import torch
from transformers.trainer_utils import get_last_checkpoint


class TrainingDivergedError(FloatingPointError):
    """A non-finite loss or gradient: training stopped before the optimizer step that would have used it."""


class NoLossItemsError(ValueError):
    """Every region of every step so far was pruned: the run would train on nothing."""


def newest_checkpoint(output_dir: str) -> str | None:
    """The highest-numbered ``checkpoint-N`` folder in ``output_dir`` (``None`` if there is none)."""
    return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None


def check_step_finite(trainer, *, losses: list[torch.Tensor], grad_norm) -> None:
    """Raise :class:`TrainingDivergedError` if a micro-batch loss of this step (``losses``, kept on the device) or
    the gradient norm is not finite on any rank. One read of device values per step, whatever the accumulation."""
    device = trainer.args.device
    stacked = torch.stack([t.detach().reshape(()).double() for t in losses]).to(device) if losses else None
    norm = torch.as_tensor(0.0 if grad_norm is None else grad_norm, dtype=torch.float64).reshape(()).to(device)
    bad_loss = (~torch.isfinite(stacked)).any() if stacked is not None else torch.zeros((), dtype=torch.bool,
                                                                                          device=device)
    flags = torch.stack([bad_loss.double(), (~torch.isfinite(norm)).double()])
    if trainer.args.world_size > 1:
        flags = trainer.accelerator.reduce(flags, reduction="sum")
    loss_flag, norm_flag = flags.tolist()
    if not (loss_flag or norm_flag):
        return
    args = trainer.args
    here = [v for v in (stacked.tolist() if stacked is not None else []) if not math.isfinite(v)]
    loss = here[0] if here else ("finite (non-finite on another rank)" if loss_flag else "finite")
    raise TrainingDivergedError(
        f"training diverged at step {trainer.state.global_step + 1}: loss {loss}, gradient norm {float(norm)}. "
        f"Stopped before the optimizer step: the weights were not updated, and the newest checkpoint "
        f"({newest_checkpoint(args.output_dir) or 'none saved yet'}) is the last good one. Lower learning_rate "
        f"(now {args.learning_rate}), keep max_grad_norm > 0 (now {args.max_grad_norm}), or check the data and dtype.")


def check_loss_items(trainer, *, seen: int) -> None:
    """Raise :class:`NoLossItemsError` if no loss item (kept region or NTP target) was seen since training began."""
    if seen > 0:
        return
    args = trainer.args
    causes = ["every region was pruned in every step so far (kept_regions 0), so the run trains nothing."]
    if args.completion_only_loss:
        causes.append(f"With completion_only_loss, a region counts only if its first target is on a row's target "
                      f"side: the prompts{' (wrapped in the chat template)' if args.chat_template else ''} are "
                      f"probably longer than the {args.window_tokens}-token window. Raise seq_len, turn packing on, "
                      "or set completion_only_loss false.")
    if not args.packing:
        causes.append("Without packing, regions after a row's first EOS/pad are dropped: check that rows are not "
                      "empty and that the tokenizer's EOS/pad ids are not ordinary text tokens.")
    raise NoLossItemsError(" ".join(causes))
