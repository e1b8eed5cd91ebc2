"""Gated LoRA (Apple, arXiv 2507.11851; METHOD.md section 1b): adapters that act only at mask-token positions.

Low-rank adapters are added to the chosen linear layers, and an adapter's output is added only where the input token
of the current forward is the ``<mtp>`` mask (the gate, ``input_ids == mask_token_id``); the mask token's input
embedding is a trainable vector; every base weight is frozen. So, by construction:

- at every real position the model computes exactly the base model (bitwise: the adapted layers leave those rows
  untouched, and attention at a real position never sees a mask in the training layout or in decoding);
- the distillation teacher is the same module with the gate off (:func:`adapters_disabled`): no second copy;
- the decoder needs no change: re-fed tokens run through the base path, appended masks through the adapters.

The gate is read from the input ids by a hook on the input embedding, once per forward, and held by the model's
:class:`GatedLoRAState` for the adapted layers; a forward given ``inputs_embeds`` runs the base path only.
A merged adapter would lose the gate, so there is no merging. The saved format is not PEFT's: PEFT's LoRA layers
have no per-token gate, and its loaders would silently apply the adapter at every position.

The adapter folder (save, load, warm start, export) is :mod:`selfdistill.models.adapter_files`; its public names
are re-exported here.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STATE_ATTR = "gated_lora"


@dataclass(frozen=True, kw_only=True)
class GatedLoRAConfig:
    """Adapter shape: rank ``r``, scale ``alpha / r``, the linear layers adapted (by name suffix), dropout."""

    rank: int = 32
    alpha: float = 64.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    dropout: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"gated LoRA rank must be an int >= 1, got {self.rank!r}")
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ValueError(f"gated LoRA alpha must be finite and > 0, got {self.alpha!r}")
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ValueError(f"gated LoRA targets must be non-empty module names, got {self.targets!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"gated LoRA dropout must be in [0, 1), got {self.dropout!r}")


#: Projections that read one input (by name suffix, within one parent module): they share one gather of that
#: input's mask rows and one stacked ``A`` matmul. Any other target is a group of its own. A model that feeds such
#: projections different inputs still computes exactly: the shared result is keyed by the input tensor itself.
SHARED_INPUTS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class Gate(NamedTuple):
    """The mask positions of the current forward over an input of shape ``[B, T]``: either the last ``tail``
    columns of every row (``rows`` is ``None``; decoding, where masks always trail, and the shared-prefix training
    pass, where every column is a mask), or the flat indices ``long[n]`` (row-major, ``n >= 1``) of the mask
    tokens (``tail`` 0; the packed training layout). A tail is a slice, not a gather."""

    shape: torch.Size
    rows: torch.Tensor | None
    tail: int = 0

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """The mask rows of ``x [B, T, d]``: ``[B, tail, d]`` (a view) or ``[n, d]``."""
        if self.rows is None:
            return x[:, x.shape[1] - self.tail:]
        return x.reshape(-1, x.shape[-1]).index_select(0, self.rows)

    def add(self, out: torch.Tensor, delta: torch.Tensor, *, alpha: float = 1.0) -> torch.Tensor:
        """``out [B, T, o]`` plus ``alpha * delta`` at the mask rows (``delta`` shaped as :meth:`take`'s result)."""
        if self.rows is None and self.tail == out.shape[1]:  # every column a mask: no view for autograd to track
            return out.add(delta, alpha=alpha)
        if self.rows is None:
            out[:, out.shape[1] - self.tail:].add_(delta, alpha=alpha)
            return out
        return out.reshape(-1, out.shape[-1]).index_add(0, self.rows, delta, alpha=alpha).view_as(out)

    def add_product_(self, out: torch.Tensor, h: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
        """In place, no autograd: ``out`` plus ``h @ weight_t`` at the mask rows (one fused op for a tail)."""
        if self.rows is None:
            tail = out[:, out.shape[1] - self.tail:]
            if h.dtype == out.dtype:
                tail.baddbmm_(h, weight_t.expand(h.shape[0], -1, -1))
            else:  # float32 adapter math in a half-precision model (see SharedInput.frozen)
                tail.add_(h @ weight_t)
        else:
            out.view(-1, out.shape[-1]).index_add_(0, self.rows, (h @ weight_t).to(out.dtype))
        return out


class GatedLoRAState(nn.Module):
    """Per-model state: the trainable mask embedding; the :class:`Gate` of the current forward (``None`` when
    no input token is a mask); ``declared_tail`` (see :func:`trailing_masks`); and ``shared``, the current forward's
    low-rank activations of each input group (cleared as every forward starts and ends)."""

    def __init__(self, mask_row: torch.Tensor, *, mask_token_id: int, config: GatedLoRAConfig, base_vocab_size: int):
        super().__init__()
        self.base_vocab_size = int(base_vocab_size)
        self.mask_embedding = nn.Parameter(mask_row.detach().to(_master_dtype(mask_row.dtype)).clone())
        self.mask_token_id, self.config = int(mask_token_id), config
        self.gate: Gate | None = None
        self.enabled = True
        self.declared_tail: int | None = None
        self.declared_slots: torch.Tensor | None = None
        self.shared: dict[int, tuple] = {}

    def embed_hook(self, module, args, output):
        """Forward hook of the input embedding: set the gate, put the mask embedding at gated positions."""
        self.gate = gate = self._find_gate(args[0] if args else None)
        if gate is None:
            return output
        if gate.rows is None:
            output[:, output.shape[1] - gate.tail:] = self.mask_embedding
            return output
        fill = self.mask_embedding.to(output.dtype).expand(len(gate.rows), -1)
        return output.reshape(-1, output.shape[-1]).index_copy(0, gate.rows, fill).view_as(output)

    def _find_gate(self, ids) -> Gate | None:
        if not self.enabled or not torch.is_tensor(ids):
            return None
        if self.declared_tail is not None:  # the caller's layout says where the masks are: no search, no sync
            return Gate(ids.shape, None, self.declared_tail) if self.declared_tail else None
        if self.declared_slots is not None:  # the same columns of every row: flat rows by arithmetic, no search
            b, t = ids.shape
            slots = self.declared_slots.to(ids.device)
            rows = (torch.arange(b, device=ids.device)[:, None] * t + slots[None]).reshape(-1)
            return Gate(ids.shape, rows) if rows.numel() else None
        rows = (ids == self.mask_token_id).reshape(-1).nonzero().squeeze(1)
        if not len(rows):
            return None
        return Gate(ids.shape, None, ids.shape[1]) if len(rows) == ids.numel() else Gate(ids.shape, rows)

    def reset_hook(self, module, args, kwargs):
        """Forward pre-hook of the model: no gate until the embedding has seen this forward's ids."""
        self.gate = None
        self.shared.clear()

    def done_hook(self, module, args, kwargs, output):
        """Forward hook of the model: drop the shared activations (they would hold this forward's inputs)."""
        self.shared.clear()


@contextlib.contextmanager
def trailing_masks(model, count: int):
    """Within: each forward of ``model`` takes the last ``count`` input columns of every row as its mask positions
    (``count`` 0: none), and does not search the ids for them (one ``nonzero`` and a host sync per forward less).
    The caller vouches that exactly those columns hold the mask token, as the decoder's layout does. A no-op for
    a model without gated LoRA."""
    state = gated_state(model)
    if state is None:
        yield model
        return
    saved, state.declared_tail = state.declared_tail, int(count)
    try:
        yield model
    finally:
        state.declared_tail = saved


@contextlib.contextmanager
def masks_at(model, slots: torch.Tensor):
    """Within: each forward of ``model`` takes columns ``slots`` (long[n], ascending) of every row as its mask
    positions and does not search the ids for them, as :func:`trailing_masks` does for trailing ones. The caller
    vouches that exactly those columns hold the mask token, as the packed training layout's ``mask_slots`` do. A
    no-op for a model without gated LoRA."""
    state = gated_state(model)
    if state is None:
        yield model
        return
    saved, state.declared_slots = state.declared_slots, slots.reshape(-1)
    try:
        yield model
    finally:
        state.declared_slots = saved


class SharedInput:
    """The gated projections of one module that read one input: one gather of its mask rows and one matmul by their
    stacked ``A`` (``[G * r, in]``), cached per forward and keyed by the input tensor itself.

    With grad (training) the stack is a ``cat`` of the members' ``lora_A`` (float32 masters) on every call. Without
    grad (decoding) the stacked ``A`` and each member's ``scale * B^T`` are kept in the input's dtype and device
    and rebuilt only when a weight changes (its version counter), so a pass pays no cast, transpose or scale."""

    def __init__(self, state: GatedLoRAState, members: list[GatedLoRALinear]):
        self._state, self.members = [state], members
        self._frozen: tuple | None = None
        for i, m in enumerate(members):
            m._group, m._index = self, i
            m._cols = slice(i * m.lora_A.shape[0], (i + 1) * m.lora_A.shape[0])

    def low_rank(self, x: torch.Tensor, gate: Gate) -> tuple[torch.Tensor, list | None]:
        """``(h, weights_t)``: ``h = take(x) @ A_stack^T`` (``[..., G * r]``), and without grad the members' cached
        ``scale * B^T`` (else ``None``)."""
        shared = self._state[0].shared
        hit = shared.get(id(self))
        if hit is not None and hit[0] is x:
            return hit[1], hit[2]
        head = self.members[0]
        if torch.is_grad_enabled() or (head.dropout.p and head.training):
            rows = head.dropout(gate.take(x))
            a = torch.cat([m.lora_A for m in self.members]) if len(self.members) > 1 else head.lora_A
            h, weights_t = nn.functional.linear(rows if rows.dtype == a.dtype else rows.to(a.dtype), a), None
        else:
            a, weights_t = self.frozen(x)
            rows = gate.take(x)
            h = nn.functional.linear(rows if rows.dtype == a.dtype else rows.to(a.dtype), a)
        shared[id(self)] = (x, h, weights_t)
        return h, weights_t

    def frozen(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The stacked ``A`` and the members' ``scale * B^T`` in :func:`adapter_compute_dtype` on ``x``'s device
        (cached)."""
        params = [p for m in self.members for p in (m.lora_A, m.lora_B)]
        key = (x.dtype, x.device, tuple((p._version, p.data_ptr()) for p in params))
        if self._frozen is None or self._frozen[0] != key:
            dtype = adapter_compute_dtype(x)
            with torch.no_grad():
                a = torch.cat([m.lora_A for m in self.members]).to(dtype)
                weights_t = [(m.lora_B.T * m.scale).to(dtype).contiguous() for m in self.members]
            self._frozen = (key, a, weights_t)
        return self._frozen[1], self._frozen[2]


class GatedLoRALinear(nn.Module):
    """``base(x)``, plus ``scale * B A dropout(x)`` at the rows the shared gate marks: ``[..., in] -> [..., out]``.
    ``A x`` comes from the projection's :class:`SharedInput` group (one matmul for q/k/v, one for gate/up)."""

    def __init__(self, base: nn.Linear, *, state: GatedLoRAState):
        super().__init__()
        cfg = state.config
        self.base, self.scale = base, cfg.alpha / cfg.rank
        like = dict(dtype=_master_dtype(base.weight.dtype), device=base.weight.device)
        self.lora_A = nn.Parameter(torch.empty(cfg.rank, base.in_features, **like))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, cfg.rank, **like))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as LoRA: B = 0, so training starts at the base
        self.dropout = nn.Dropout(cfg.dropout)
        self._state = [state]  # a list, so the state is not registered twice as a submodule
        SharedInput(state, [self])  # until apply_gated_lora groups it with its siblings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        gate = self._state[0].gate
        if gate is None:
            return out
        if gate.shape != x.shape[:-1]:
            raise RuntimeError(f"gated LoRA: gate {tuple(gate.shape)} does not match input {tuple(x.shape)}")
        h, weights_t = self._group.low_rank(x, gate)
        h = h[..., self._cols]
        if weights_t is None:  # autograd through A and B (float32 masters)
            delta = nn.functional.linear(h, self.lora_B)
            return gate.add(out, delta if delta.dtype == out.dtype else delta.to(out.dtype), alpha=self.scale)
        return gate.add_product_(out, h, weights_t[self._index])


def adapter_compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of the adapters' matmuls in decoding: the model's, except half precision on a CPU, where they run
    in float32. The adapters' matmuls are tiny (``rows x in x r``) and torch's CPU bf16 kernels cost 2-3x the
    float32 ones at that size (67 against 26 us for ``[4, 576] x [576, 96]`` on a 2-core AMD EPYC with
    AVX512-BF16, torch 2.13; docs/training.md), while the base projections stay in the model's dtype."""
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return x.dtype


def _master_dtype(dtype: torch.dtype) -> torch.dtype:
    """Trainable adapter weights: float32 (float64 for a float64 model), whatever the base computes in."""
    return torch.promote_types(dtype, torch.float32)


def gated_state(model) -> GatedLoRAState | None:
    """The model's gated-LoRA state, or ``None`` for a model without adapters."""
    return getattr(model, STATE_ATTR, None)


def apply_gated_lora(model, config: GatedLoRAConfig, *, mask_token_id: int,
                     base_vocab_size: int | None = None) -> GatedLoRAState:
    """Freeze ``model`` and wrap its target linear layers (in place); the mask embedding starts at the embedding
    row of ``mask_token_id``. ``base_vocab_size``: the vocabulary before the mask tokens were added (default: the
    current one), so a saved adapter can restore the added rows. Returns the state; raises if no layer matches."""
    if gated_state(model) is not None:
        raise ValueError("the model already has gated LoRA adapters")
    model.requires_grad_(False)
    embed = model.get_input_embeddings()
    vocab = embed.weight.shape[0] if base_vocab_size is None else base_vocab_size
    state = GatedLoRAState(embed.weight[mask_token_id], mask_token_id=mask_token_id, config=config,
                           base_vocab_size=vocab)
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in config.targets]
    if not targets:
        raise ValueError(f"no linear layer of {type(model).__name__} is named one of {config.targets}")
    siblings: dict[str, dict[str, GatedLoRALinear]] = {}
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        siblings.setdefault(parent_name, {})[child] = wrapped = GatedLoRALinear(module, state=state)
        setattr(model.get_submodule(parent_name), child, wrapped)
    for children in siblings.values():
        for names in SHARED_INPUTS:
            if len(members := [children[n] for n in names if n in children]) > 1:
                SharedInput(state, members)
    model.add_module(STATE_ATTR, state)
    embed.register_forward_hook(state.embed_hook)
    model.register_forward_pre_hook(state.reset_hook, with_kwargs=True)
    model.register_forward_hook(state.done_hook, with_kwargs=True)
    return state


@contextlib.contextmanager
def adapters_disabled(model):
    """Run ``model`` as its base model (the gate off everywhere), restoring the gate state afterwards."""
    state = gated_state(model)
    if state is None:
        yield model
        return
    saved = state.enabled, state.gate
    state.enabled = False
    try:
        yield model
    finally:
        state.enabled, state.gate = saved


class BaseModelView:
    """Calls ``model`` with its adapters off: the distillation teacher of a gated model, with no second copy.

    Not an ``nn.Module`` (it must not own, freeze or move the student's parameters); ``.module`` is the model, as
    for DDP/DeepSpeed wrappers, so code that unwraps a model finds its config and dtype.
    """

    def __init__(self, model):
        self.module = model

    def __call__(self, *args, **kwargs):
        with adapters_disabled(self.module):
            return self.module(*args, **kwargs)


def is_adapter_param(name: str) -> bool:
    """Whether the parameter ``name`` (a state-dict name) is the adapter's: an adapter matrix or the mask embedding."""
    return "lora_" in name or name == f"{STATE_ATTR}.mask_embedding"


def adapter_tensors(model) -> dict[str, torch.Tensor]:
    """The trainable tensors by state-dict name (adapter matrices and the mask embedding), detached, on CPU."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if is_adapter_param(name)}


def load_adapter_tensors(model, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``weights`` (from :func:`adapter_tensors`) into the model's adapter parameters, refusing any
    missing, extra or mis-shaped tensor."""
    params = dict(model.named_parameters())
    expected = set(adapter_tensors(model))
    if set(weights) != expected:
        raise ValueError(f"adapter tensors do not match the model: missing {sorted(expected - set(weights))[:5]}, "
                         f"unexpected {sorted(set(weights) - expected)[:5]}")
    with torch.no_grad():
        for name, value in weights.items():
            if params[name].shape != value.shape:
                raise ValueError(f"adapter tensor {name}: shape {tuple(value.shape)} != {tuple(params[name].shape)}")
            params[name].copy_(value)


# The adapter folder's format and I/O live in their own module; re-exported (imported last: it imports this one).
from selfdistill.models.adapter_files import (  # noqa: E402, F401  (public, re-exported)
    CONFIG_FILE, FORMAT, FORMAT_VERSION, NEW_OUTPUT_ROWS_KEY, NEW_ROWS_KEY, WEIGHTS_FILE, attach_saved_adapter,
    check_warm_start, config_differences, export_adapter, pop_new_rows, read_adapter_config, read_adapter_weights,
    restore_new_rows, save_gated_lora, warm_start)
