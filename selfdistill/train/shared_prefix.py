"""The gated-LoRA distillation step with the real tokens run once: same logits, about half the compute.

With gated LoRA (METHOD.md 1b) every real position of the training layout computes the frozen base model, so
its keys and values depend on no trainable weight, and they are the same in the student pass and in the teacher
pass (which differ only at the mask slots). The packed step still runs all ``S`` slots twice and backpropagates
through every one of them. Here:

1. the real stream runs once, under ``no_grad`` with the adapters off: the layout's real slots are exactly the
   source tokens ``0 .. L-1`` (``L = M * P``) in order, at their own positions, under plain causal attention, so
   that is one ordinary causal forward of ``raw[:, :L]`` whose K/V cache is kept. Its logits at each region's
   last real token are slot 1 of the chunk for the student and for the teacher alike;
2. the student's ``R*K`` mask slots run with grad over that cache: a mask of region ``b`` attends to the cached
   real tokens before its hidden tokens and to its own region's earlier masks, as in the packed layout;
3. the teacher's forced slots (the student's proposals in place of the masks) run the same way, no grad.

The cache is cut back to ``L`` after each mask pass, so both passes see exactly the real tokens. Logits equal the
packed step's up to floating-point rounding (tests/train/test_shared_prefix.py, float64, Llama and Qwen3, sdpa
and eager); the saving is the backward and the teacher over the ``L`` real slots.
"""

from __future__ import annotations

import torch

from selfdistill.models.attention import dense_mask_for
from selfdistill.models.gated_lora import BaseModelView, adapters_disabled, gated_state, trailing_masks
from selfdistill.train.layout import Layout


def mask_pass_attention(layout: Layout) -> torch.Tensor:
    """bool[R*K, L + R*K]: what each mask slot (region by region, in order) may attend to, cached real tokens
    (columns ``0..L-1``, by source index) then the mask slots themselves.

    A mask slot of region ``b`` sees the real tokens before its region's first hidden token, and the masks of its
    own region up to itself: the rows of ``layout.attention`` at the mask slots, re-indexed.
    """
    real_slots = layout.real_slots  # in slot order = source order 0..L-1
    mask_slots = layout.mask_slots.reshape(-1)
    rows = layout.attention[mask_slots]  # [R*K, S]
    return torch.cat([rows[:, real_slots], rows[:, mask_slots]], dim=1)


def supports_shared_prefix(student, teacher) -> bool:
    """True when the student is gated and the teacher is its own base path, or absent (``gt_ce``): the real
    stream is then the same in every pass."""
    module = getattr(student, "module", student)
    own_base = teacher is None or (isinstance(teacher, BaseModelView) and teacher.module is module)
    return gated_state(module) is not None and own_base


class SharedPrefix:
    """The real stream of one layout, run once; :meth:`chunk_logits` scores the mask slots over its cache.

    Args:
        model: the gated student (possibly DDP-wrapped; the real stream runs on the unwrapped module).
        raw: long[B, N] raw windows, ``N >= layout.num_source_tokens``.
        layout: the step's layout.
    """

    def __init__(self, model, raw: torch.Tensor, layout: Layout):
        module = getattr(model, "module", model)
        self.layout, self.batch = layout, raw.shape[0]
        self.real_len = layout.real_len
        device = raw.device
        last_real = layout.src_index[layout.pred_slots[:, 0]].to(device)  # [R], source index = real position
        with torch.no_grad(), adapters_disabled(module):
            out = module(input_ids=raw[:, :self.real_len], use_cache=True, logits_to_keep=last_real)
        self.cache, self.first_logits = out.cache, out.logits  # first_logits: [B, R, V]
        impl, dtype = module.config._attn_implementation, module.dtype
        allowed = mask_pass_attention(layout).to(device)
        self.mask = dense_mask_for(allowed, attn_implementation=impl, dtype=dtype)[None, None].expand(
            self.batch, 1, *allowed.shape)
        self.positions = layout.src_index[layout.mask_slots.reshape(-1)].to(device)[None].expand(self.batch, -1)

    def chunk_logits(self, model, mask_slot_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, R, k, V]`` at the prediction slots: slot 1 from the real stream, slots ``2..k`` from
        running ``model`` on ``mask_slot_ids`` (long[B, R*K]: mask ids for the student, the forced proposals for
        the teacher) over the cached real tokens. Grad flows as ``model`` is called (none into the real stream)."""
        b, r, k = self.batch, self.layout.num_regions, self.layout.k
        if k == 1:
            return self.first_logits[:, :, None]
        try:  # every input is a mask slot for the student (the teacher's forced pass runs with adapters off)
            with trailing_masks(getattr(model, "module", model), mask_slot_ids.shape[1]):
                out = model(input_ids=mask_slot_ids, attention_mask=self.mask, position_ids=self.positions,
                            cache=self.cache, use_cache=True)
        finally:
            self.cache.crop(self.real_len - self.cache.get_seq_length())  # drop the mask K/V: back to the real stream
        rest = out.logits.reshape(b, r, k - 1, -1)
        return torch.cat([self.first_logits[:, :, None].to(rest.dtype), rest], dim=2)
