"""The gated-LoRA adapter folder (METHOD.md 1b): what :func:`save_gated_lora` writes and every loader reads.

Folder: ``gated_lora_config.json`` (format and version, base model reference, rank, alpha, targets, dropout, mask
token id, vocabulary sizes and, optional, the trained k_max), ``gated_lora.safetensors`` (the adapter matrices,
the mask embedding, and the embedding rows added for the mask tokens) and the tokenizer. Each file is written
atomically; a missing, truncated or corrupt file is an error that names it. The format is not PEFT's: PEFT's LoRA
layers have no per-token gate, and its loaders would apply the adapter at every position.

Loading applies the adapter to its base (:func:`attach_saved_adapter`); a new run continues one
(:func:`warm_start`, ``init_adapter``); :func:`export_adapter` copies one in bf16 to commit it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from selfdistill.models.gated_lora import (GatedLoRAConfig, GatedLoRAState, apply_gated_lora, gated_state,
                                           is_adapter_param, load_adapter_tensors)
from selfdistill.paths import atomic_file, write_text_atomic

FORMAT, FORMAT_VERSION = "selfdistill-gated-lora", 1
CONFIG_FILE, WEIGHTS_FILE = "gated_lora_config.json", "gated_lora.safetensors"
NEW_ROWS_KEY = "new_embedding_rows"
NEW_OUTPUT_ROWS_KEY = "new_output_rows"  # only for untied output embeddings


def save_gated_lora(model, tokenizer, directory: str | os.PathLike, *, base_model: str,
                    weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the adapter folder (see the module docstring); each file is replaced atomically. ``base_model``: how
    :func:`selfdistill.models.loader.load_model` finds the base again (an alias, a path or a hub id).

    ``weights``: the folder's tensors, :func:`adapter_weights` of ``model`` taken already (on every rank, where the
    parameters are sharded and only one rank writes); default: taken here."""
    from safetensors.torch import save_file

    from selfdistill.models.mask_token import trained_k_max_from

    state = gated_state(model)
    if state is None:
        raise ValueError("the model has no gated LoRA adapters to save")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    weights = adapter_weights(model) if weights is None else weights
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "base_model": base_model,
            "mask_token_id": state.mask_token_id, "base_vocab_size": state.base_vocab_size,
            "vocab_size": int(model.get_input_embeddings().weight.shape[0]), **asdict(state.config)}
    if (k_max := trained_k_max_from(model)) is not None:
        meta["trained_k_max"] = k_max  # optional key: adapters saved before it existed load without it
    with atomic_file(out / WEIGHTS_FILE) as tmp:
        save_file(weights, str(tmp), metadata={"format": "pt"})
    write_text_atomic(out / CONFIG_FILE, json.dumps(meta, indent=1, sort_keys=True))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def _untied_output(model) -> torch.Tensor | None:
    out, inp = model.get_output_embeddings(), model.get_input_embeddings().weight
    if out is None or out.weight is inp:
        return None
    sharded = hasattr(inp, "placements") or hasattr(inp, "ds_id")  # FSDP2 DTensor, ZeRO-3: no storage to compare
    return None if not sharded and out.weight.data_ptr() == inp.data_ptr() else out.weight


def adapter_weights(model) -> dict[str, torch.Tensor]:
    """The tensors of the model's adapter folder, whole, on the CPU: the adapters and the mask row by state-dict
    name, and the embedding (and untied output) rows added for the mask tokens.

    FSDP2 parameters (DTensors) are gathered with ``full_tensor()``, a collective: under FSDP2 every rank calls this.
    DeepSpeed ZeRO-3 parameters must be gathered by the caller (``deepspeed.zero.GatheredParameters``)."""
    state = gated_state(model)
    whole = {name: _whole(p) for name, p in model.named_parameters() if is_adapter_param(name)}
    whole[NEW_ROWS_KEY] = _whole(model.get_input_embeddings().weight)[state.base_vocab_size:]
    if (untied := _untied_output(model)) is not None:
        whole[NEW_OUTPUT_ROWS_KEY] = _whole(untied)[state.base_vocab_size:]
    return {k: v.detach().cpu().contiguous() for k, v in whole.items()}


def _whole(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def pop_new_rows(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split the added-row tensors off a loaded adapter's tensors (in place)."""
    return {k: weights.pop(k) for k in (NEW_ROWS_KEY, NEW_OUTPUT_ROWS_KEY) if k in weights}


def read_adapter_config(directory: str | os.PathLike) -> dict:
    """The adapter folder's config, checked for format and version."""
    path = Path(directory) / CONFIG_FILE
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: not a {FORMAT} config (a JSON object)")
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} adapter (format {meta.get('format')!r}, "
                         f"version {meta.get('format_version')!r})")
    return meta


def attach_saved_adapter(model, directory: str | os.PathLike) -> GatedLoRAState:
    """Resize ``model`` (the base) to the adapter's vocabulary, restore the mask rows, apply and load the adapter;
    every saved tensor must match a parameter exactly (names and shapes)."""

    from selfdistill.models.mask_token import set_mask_token_id, set_trained_k_max

    meta = read_adapter_config(directory)
    weights = read_adapter_weights(directory)
    if model.get_input_embeddings().weight.shape[0] != meta["base_vocab_size"]:
        raise ValueError(f"base model vocabulary {model.get_input_embeddings().weight.shape[0]} != the adapter's "
                         f"base_vocab_size {meta['base_vocab_size']}: wrong base model {meta['base_model']!r}?")
    model.resize_token_embeddings(meta["vocab_size"], mean_resizing=False)
    restore_new_rows(model, pop_new_rows(weights), base_vocab_size=meta["base_vocab_size"])
    set_mask_token_id(model, meta["mask_token_id"])
    if "trained_k_max" in meta:
        set_trained_k_max(model, int(meta["trained_k_max"]))
    config = GatedLoRAConfig(rank=meta["rank"], alpha=meta["alpha"], targets=meta["targets"], dropout=meta["dropout"])
    state = apply_gated_lora(model, config, mask_token_id=meta["mask_token_id"],
                             base_vocab_size=meta["base_vocab_size"])
    load_adapter_tensors(model, weights)
    return state


def warm_start(model, directory: str | os.PathLike) -> dict:
    """Continue training from a saved adapter: copy its tensors and mask-token rows into ``model``, which already
    carries gated LoRA of the same shape (rank, alpha, targets) and the same mask token and vocabulary. Returns the
    adapter's config. Anything that differs is refused, naming it, before a tensor is copied."""
    meta = check_warm_start(model, directory)
    weights = read_adapter_weights(directory)
    restore_new_rows(model, pop_new_rows(weights), base_vocab_size=meta["base_vocab_size"])
    load_adapter_tensors(model, weights)
    return meta


def restore_new_rows(model, rows: dict[str, torch.Tensor], *, base_vocab_size: int) -> None:
    """Write an adapter's mask-token rows (:func:`pop_new_rows`) into ``model``'s embedding (and untied output)
    matrix from ``base_vocab_size`` on; refused if the adapter and the model disagree on tied embeddings."""
    with torch.no_grad():
        for key, matrix in ((NEW_ROWS_KEY, model.get_input_embeddings().weight),
                            (NEW_OUTPUT_ROWS_KEY, _untied_output(model))):
            if (key in rows) != (matrix is not None):
                raise ValueError(f"adapter and base model disagree on tied embeddings ({key})")
            if matrix is not None:
                matrix[base_vocab_size:] = rows[key].to(matrix.dtype)


def check_warm_start(model, directory: str | os.PathLike) -> dict:
    """The adapter folder's config, refused (``ValueError`` naming every difference) unless ``model``'s gated LoRA
    and vocabulary are what the adapter was trained as."""
    meta = read_adapter_config(directory)
    state = gated_state(model)
    if state is None:
        raise ValueError("init_adapter needs a model with gated LoRA (adapter: gated_lora)")
    mine = {"rank": state.config.rank, "alpha": state.config.alpha, "targets": list(state.config.targets),
            "mask_token_id": state.mask_token_id, "base_vocab_size": state.base_vocab_size,
            "vocab_size": int(model.get_input_embeddings().weight.shape[0])}
    differ = config_differences(meta, mine)
    if differ:
        raise ValueError(f"init_adapter {directory}: the adapter differs from this run's model (adapter's, run's): "
                         f"{differ}")
    return meta


def export_adapter(source: str | os.PathLike, destination: str | os.PathLike, *,
                   dtype: torch.dtype = torch.bfloat16, extra_files=()) -> Path:
    """Copy an adapter folder with its tensors stored in ``dtype`` (bf16 halves a float32 adapter, so a finished
    run's adapter can be committed), its config and tokenizer files as they are, and ``extra_files`` (names in
    ``source``, e.g. the run record) beside them. A float32 model loads it with its float32 masters rounded to
    ``dtype`` once. The folder is written beside ``destination`` and renamed into place."""
    import shutil

    from safetensors.torch import save_file

    src, dst = Path(source), Path(destination)
    read_adapter_config(src)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in read_adapter_weights(src).items()}
    save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    for f in src.iterdir():
        if f.is_file() and (f.name == CONFIG_FILE or f.name.startswith(("tokenizer", "special_tokens", "chat_template"))
                            or f.name in extra_files):
            shutil.copy2(f, tmp / f.name)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    return dst


def config_differences(meta: dict, expected: dict) -> dict:
    """``{key: (adapter's, expected)}`` for every key of ``expected`` where an adapter config ``meta`` differs."""
    return {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}


def read_adapter_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The adapter folder's tensors; a missing, truncated or corrupt file is an error that names it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_FILE
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: cannot read the adapter's weights ({err})") from None
