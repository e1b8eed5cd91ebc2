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

Adapter folder (:func:`save_gated_lora` / :func:`load_gated_lora`): ``gated_lora_config.json`` (format and version,
base model reference, rank, alpha, targets, dropout, mask token id, vocabulary sizes and, optional, the trained
k_max), ``gated_lora.safetensors``
(the adapter matrices, the mask embedding, and the embedding rows added for the mask tokens) and the tokenizer.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

FORMAT, FORMAT_VERSION = "selfdistill-gated-lora", 1
CONFIG_FILE, WEIGHTS_FILE = "gated_lora_config.json", "gated_lora.safetensors"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STATE_ATTR = "gated_lora"
NEW_ROWS_KEY = "new_embedding_rows"
NEW_OUTPUT_ROWS_KEY = "new_output_rows"  # only for untied output embeddings


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


class Gate(NamedTuple):
    """The mask positions of the current forward: the input's ``[B, T]`` shape and the flat indices
    ``long[n]`` (row-major, ``n >= 1``) of its mask tokens. Found once per forward (one ``nonzero``), so an adapted
    layer gathers and scatters its rows with no boolean indexing (three ``nonzero`` syncs per layer)."""

    shape: torch.Size
    rows: torch.Tensor


class GatedLoRAState(nn.Module):
    """Per-model state: the trainable mask embedding, and the :class:`Gate` of the current forward (``None`` when
    no input token is a mask)."""

    def __init__(self, mask_row: torch.Tensor, *, mask_token_id: int, config: GatedLoRAConfig, base_vocab_size: int):
        super().__init__()
        self.base_vocab_size = int(base_vocab_size)
        self.mask_embedding = nn.Parameter(mask_row.detach().to(_master_dtype(mask_row.dtype)).clone())
        self.mask_token_id, self.config = int(mask_token_id), config
        self.gate: Gate | None = None
        self.enabled = True

    def embed_hook(self, module, args, output):
        """Forward hook of the input embedding: set the gate, put the mask embedding at gated positions."""
        ids = args[0] if args else None
        self.gate = None
        if self.enabled and torch.is_tensor(ids):
            rows = (ids == self.mask_token_id).reshape(-1).nonzero().squeeze(1)
            self.gate = Gate(ids.shape, rows) if len(rows) else None
        if self.gate is None:
            return output
        rows = self.gate.rows
        fill = self.mask_embedding.to(output.dtype).expand(len(rows), -1)
        return output.reshape(-1, output.shape[-1]).index_copy(0, rows, fill).view_as(output)

    def reset_hook(self, module, args, kwargs):
        """Forward pre-hook of the model: no gate until the embedding has seen this forward's ids."""
        self.gate = None


class GatedLoRALinear(nn.Module):
    """``base(x)``, plus ``scale * B A dropout(x)`` at the rows the shared gate marks: ``[..., in] -> [..., out]``."""

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        gate = self._state[0].gate
        if gate is None:
            return out
        if gate.shape != x.shape[:-1]:
            raise RuntimeError(f"gated LoRA: gate {tuple(gate.shape)} does not match input {tuple(x.shape)}")
        rows = self.dropout(x.reshape(-1, x.shape[-1]).index_select(0, gate.rows))
        delta = (rows.to(self.lora_A.dtype) @ self.lora_A.T) @ self.lora_B.T * self.scale
        return out.reshape(-1, out.shape[-1]).index_add(0, gate.rows, delta.to(out.dtype)).view_as(out)


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
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, GatedLoRALinear(module, state=state))
    model.add_module(STATE_ATTR, state)
    embed.register_forward_hook(state.embed_hook)
    model.register_forward_pre_hook(state.reset_hook, with_kwargs=True)
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


def adapter_tensors(model) -> dict[str, torch.Tensor]:
    """The trainable tensors by state-dict name (adapter matrices and the mask embedding), detached, on CPU."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()
            if "lora_" in name or name == f"{STATE_ATTR}.mask_embedding"}


def save_gated_lora(model, tokenizer, directory: str | os.PathLike, *, base_model: str) -> Path:
    """Write the adapter folder (see the module docstring); each file is replaced atomically. ``base_model``: how
    :func:`selfdistill.models.loader.load_model` finds the base again (an alias, a path or a hub id)."""
    from safetensors.torch import save_file

    from selfdistill.models.mask_token import trained_k_max_from

    state = gated_state(model)
    if state is None:
        raise ValueError("the model has no gated LoRA adapters to save")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    weights = adapter_tensors(model) | _new_rows(model, state.base_vocab_size)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "base_model": base_model,
            "mask_token_id": state.mask_token_id, "base_vocab_size": state.base_vocab_size,
            "vocab_size": int(model.get_input_embeddings().weight.shape[0]), **asdict(state.config)}
    if (k_max := trained_k_max_from(model)) is not None:
        meta["trained_k_max"] = k_max  # optional key: adapters saved before it existed load without it
    tmp = out / f".{WEIGHTS_FILE}.tmp"
    save_file(weights, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / WEIGHTS_FILE)
    tmp = out / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, out / CONFIG_FILE)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def _untied_output(model) -> torch.Tensor | None:
    out = model.get_output_embeddings()
    if out is None or out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr():
        return None
    return out.weight


def _new_rows(model, base_vocab_size: int) -> dict[str, torch.Tensor]:
    """The embedding (and untied output) rows added for the mask tokens, which the adapter carries."""
    rows = {NEW_ROWS_KEY: model.get_input_embeddings().weight[base_vocab_size:]}
    if _untied_output(model) is not None:
        rows[NEW_OUTPUT_ROWS_KEY] = _untied_output(model)[base_vocab_size:]
    return {k: v.detach().cpu().contiguous() for k, v in rows.items()}


def pop_new_rows(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split the added-row tensors off a loaded adapter's tensors (in place)."""
    return {k: weights.pop(k) for k in (NEW_ROWS_KEY, NEW_OUTPUT_ROWS_KEY) if k in weights}


def read_adapter_config(directory: str | os.PathLike) -> dict:
    """The adapter folder's config, checked for format and version."""
    path = Path(directory) / CONFIG_FILE
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} adapter (format {meta.get('format')!r}, "
                         f"version {meta.get('format_version')!r})")
    return meta


def attach_saved_adapter(model, directory: str | os.PathLike) -> GatedLoRAState:
    """Resize ``model`` (the base) to the adapter's vocabulary, restore the mask rows, apply and load the adapter;
    every saved tensor must match a parameter exactly (names and shapes)."""
    from safetensors.torch import load_file

    from selfdistill.models.mask_token import set_mask_token_id, set_trained_k_max

    meta = read_adapter_config(directory)
    weights = load_file(str(Path(directory) / WEIGHTS_FILE))
    if model.get_input_embeddings().weight.shape[0] != meta["base_vocab_size"]:
        raise ValueError(f"base model vocabulary {model.get_input_embeddings().weight.shape[0]} != the adapter's "
                         f"base_vocab_size {meta['base_vocab_size']}: wrong base model {meta['base_model']!r}?")
    model.resize_token_embeddings(meta["vocab_size"], mean_resizing=False)
    rows = pop_new_rows(weights)
    with torch.no_grad():
        for key, matrix in ((NEW_ROWS_KEY, model.get_input_embeddings().weight),
                            (NEW_OUTPUT_ROWS_KEY, _untied_output(model))):
            if (key in rows) != (matrix is not None):
                raise ValueError(f"adapter and base model disagree on tied embeddings ({key})")
            if matrix is not None:
                matrix[meta["base_vocab_size"]:] = rows[key].to(matrix.dtype)
    set_mask_token_id(model, meta["mask_token_id"])
    if "trained_k_max" in meta:
        set_trained_k_max(model, int(meta["trained_k_max"]))
    config = GatedLoRAConfig(rank=meta["rank"], alpha=meta["alpha"], targets=meta["targets"], dropout=meta["dropout"])
    state = apply_gated_lora(model, config, mask_token_id=meta["mask_token_id"],
                             base_vocab_size=meta["base_vocab_size"])
    load_adapter_tensors(model, weights)
    return state


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
