"""Rows that share one KV cache, and one forward pass over them.

Exact batching: each row keeps its own 2-D slot mask over the shared cache slots and explicit ``position_ids``
(its count of real tokens). Pad slots, rejected drafts and slots a row never had stay in the cache as holes with
mask 0, so attention over slots plus that mask is exactly each row's own attention. Rows leave
(``DynamicCache.batch_select_indices``, then slots that are holes in every remaining row are compacted away) and
join (:meth:`SlotBatch.extend`: the two caches are left-padded with holes to one length and stacked), so a row's
output never depends on which other rows share its passes.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from selfdistill.decode.blocks import Layout, group_pattern, model_pass_mask
from selfdistill.decode.rows import RowState
from selfdistill.decode.strategies import Fed
from selfdistill.models.gated_lora import trailing_masks


def new_cache(model) -> DynamicCache:
    """An empty cache for ``model``; sliding-window and linear-attention layers are refused."""
    cache = DynamicCache(config=model.config)
    if any(cache.is_sliding) or any(getattr(cache, "is_linear", [])):
        raise ValueError("the decoder needs full-attention layers; this model's cache has sliding/linear layers")
    return cache


class SlotBatch:
    """``rows`` (in batch order), their shared ``cache`` and ``slot`` mask ``long[B, S]`` (1 = the row sees it)."""

    def __init__(self, model, rows: list[RowState] | None = None):
        self.model = model
        self.device = model.get_input_embeddings().weight.device
        self.rows: list[RowState] = list(rows or [])
        self.cache = new_cache(model)
        self.slot = torch.zeros(len(self.rows), 0, dtype=torch.long, device=self.device)

    def __len__(self) -> int:
        return len(self.rows)

    def keep(self, indices: list[int]) -> None:
        """Keep rows ``indices`` (in that order), then compact slots that are holes in every remaining row."""
        if not indices:
            self.__init__(self.model)
            return
        if indices == list(range(len(self.rows))):
            return
        index = torch.tensor(indices, dtype=torch.long, device=self.device)
        self.rows = [self.rows[i] for i in indices]
        self.cache.batch_select_indices(index)
        self.slot = self.slot[index]
        used = self.slot.any(dim=0)
        if not bool(used.all()):
            slots = used.nonzero().squeeze(-1)
            for layer in self.cache.layers:
                layer.keys = layer.keys.index_select(-2, slots)
                layer.values = layer.values.index_select(-2, slots)
            self.slot = self.slot[:, slots]

    def extend(self, other: SlotBatch) -> None:
        """Append ``other``'s rows and cache (holes fill the shorter cache on the left)."""
        if not other.rows:
            return
        if not self.rows:
            self.rows, self.cache, self.slot = other.rows, other.cache, other.slot
            return
        length = max(self.slot.shape[1], other.slot.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([_left_pad(mine.keys, length), _left_pad(theirs.keys, length)])
            mine.values = torch.cat([_left_pad(mine.values, length), _left_pad(theirs.values, length)])
        self.slot = torch.cat([_left_pad(self.slot, length), _left_pad(other.slot, length)])
        self.rows += other.rows

    def forward(self, layout: Layout, *, mask_columns: int, clock=None) -> tuple[torch.Tensor, Fed, float]:
        """Run ``layout`` through the model; drop the mask KV; return the logits at each row's prediction columns
        ``[B, len(sel[0]), V]``, the :class:`Fed` for the acceptance rule and the seconds the model call took by
        ``clock`` (0 without). :meth:`settle` then marks which of the block's real slots stay."""
        t = _PassTensors(layout, self.rows, self.device)
        slot_block = t.plane(1, layout.length)
        slot = torch.cat([self.slot, slot_block], dim=1)
        pattern = None
        if layout.groups > 1:
            pattern = group_pattern(t.plane(5, layout.length), width=layout.width, groups=layout.groups,
                                    n_masks=layout.n_masks)
        mask = model_pass_mask(self.model, slot, layout.length, pattern=pattern)
        start = clock() if clock else 0.0
        with trailing_masks(self.model, layout.mask_columns):  # masks always trail: the adapters slice, no search
            logits = self.model(input_ids=t.plane(0, layout.length), attention_mask=mask,
                                position_ids=t.plane(2, layout.length), cache=self.cache, use_cache=True,
                                logits_to_keep=t.keep).logits
        seconds = clock() - start if clock else 0.0
        if mask_columns:
            self.cache.crop(-mask_columns)  # mask KV entries are never kept (METHOD.md step 4)
        if t.checks:  # draft precision: the model's own greedy token after each re-fed mask token's predecessor
            greedy = logits.argmax(dim=-1).tolist()
            for row, where, cols in zip(self.rows, greedy, t.checks):
                row.record_checks([where[t.where[c]] for c in cols])
        if t.gather:
            sel = t.plane(3, t.n_sel)
            logits = logits.gather(1, sel[:, :, None].expand(-1, -1, logits.shape[-1]))
        self._block_slots = slot_block[:, :layout.width]
        m = layout.max_drafts
        info = t.plane(4, 2 + m)
        fed = Fed(layout, [r.pending for r in self.rows], [r.drafts for r in self.rows], info[:, 2:2 + m],
                  info[:, 0], info[:, 1])
        return logits, fed, seconds

    def settle(self, kept: list[int]) -> None:
        """After the acceptance: of this pass's real slots, row ``b`` keeps its first ``kept[b]``."""
        block = self._block_slots
        if any(k < len(r.pending) for k, r in zip(kept, self.rows)):
            cols = torch.arange(block.shape[1], device=self.device)
            block = block * (cols < torch.tensor(kept, device=self.device)[:, None])
        self.slot = torch.cat([self.slot, block], dim=1)


class _PassTensors:
    """A layout's lists, shipped to the device as one ``long`` tensor of planes (one transfer per pass):
    0 ids, 1 slot mask, 2 positions, 3 prediction columns among the kept logits, 4 ``[m, reach, drafts...]``,
    5 anchors (grouped layouts), last: the columns whose logits are kept. ``keep`` is the model's
    ``logits_to_keep`` (those columns); ``gather`` whether rows need their own columns of the kept logits; ``checks``
    per row the columns whose argmax checks a re-fed mask token (:meth:`RowState.check_columns`), or ``None``."""

    def __init__(self, layout: Layout, rows: list[RowState], device):
        checks = [r.check_columns() for r in rows]
        self.checks = checks if any(checks) else None
        needed = sorted({c for row in layout.sel for c in row} | {c for cols in checks for c in cols})
        self.where = where = {c: i for i, c in enumerate(needed)}
        sel = [[where[c] for c in row] for row in layout.sel]
        self.n_sel = len(sel[0])
        self.gather = any(r != sel[0] for r in sel) or sel[0] != list(range(len(needed)))
        m = layout.max_drafts
        info = [[r.drafts, r.reach] + r.pending[len(r.pending) - r.drafts:] + [-1] * (m - r.drafts) for r in rows]
        planes = [layout.ids, layout.slot, layout.positions, sel, info]
        if layout.groups > 1:
            planes.append(layout.anchors)
        planes.append([needed] * len(rows))
        width = max(len(row) for plane in planes for row in plane)
        self.planes = torch.tensor([[row + [0] * (width - len(row)) for row in plane] for plane in planes],
                                   dtype=torch.long).to(device, non_blocking=True)
        # Indices, never an int: for an int n transformers feeds the LM head hidden[:, -n:], a view whose batch
        # stride is not n * hidden, and torch's CPU bf16 linear then copies the whole head weight (25-35x the
        # cost of the head on a fresh tensor: docs/decoding.md). Indexing makes the fresh tensor.
        self.keep = self.planes[-1, 0, :len(needed)]

    def plane(self, index: int, length: int) -> torch.Tensor:
        return self.planes[index, :, :length]


def _left_pad(x: torch.Tensor, length: int) -> torch.Tensor:
    """``x`` (slots on dim -2 for KV ``[B, H, S, D]``, dim -1 for a slot mask ``[B, S]``) padded with zeros."""
    dim = -1 if x.ndim == 2 else -2
    missing = length - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)
