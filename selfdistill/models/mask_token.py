"""The ``<mtp>`` mask token: adding it to a model/tokenizer pair and finding it again later.

METHOD.md section 1: one new special token is appended to the vocabulary (a few more ids are reserved so
later variants need no second resize), the embedding and unembedding matrices are resized with mean
initialisation, and the mask id travels with the saved checkpoint in ``config`` and ``generation_config``
under the key :data:`CONFIG_KEY`, so a decoder finds it without being told. A trained model also carries the
largest chunk size it was trained on (:data:`TRAINED_K_KEY`): mask slots past it were never trained, and the
decoding engine warns when a strategy reads them.
"""

from __future__ import annotations

import re

MASK_TOKEN = "<mtp>"
CONFIG_KEY = "mtp_mask_token_id"
TRAINED_K_KEY = "mtp_trained_k_max"


def reserved_mask_tokens(num_reserved: int) -> list[str]:
    """``["<mtp>", "<mtp_1>", ..., "<mtp_{n-1}>"]``: the first is the mask used, the rest are reserved."""
    if num_reserved < 1:
        raise ValueError(f"num_reserved must be >= 1, got {num_reserved}")
    return [MASK_TOKEN] + [f"<mtp_{i}>" for i in range(1, num_reserved)]


def mask_token_ids(tokenizer) -> list[int]:
    """Ids of ``<mtp>`` and its reserved siblings (``<mtp_1>``, ...) that ``tokenizer`` carries: never text."""
    reserved = re.compile(re.escape(MASK_TOKEN) + r"|<mtp_\d+>")
    return sorted(i for t, i in tokenizer.get_added_vocab().items() if reserved.fullmatch(t))


def add_mask_token(model, tokenizer, *, num_reserved: int = 4, pad_to_multiple_of: int | None = None) -> int:
    """Add ``<mtp>`` (+ reserved ids) to ``tokenizer``, resize ``model``'s embeddings, record the id.

    Idempotent: a model/tokenizer that already carry the mask token are left as they are. The new embedding
    rows get ``transformers``' mean/covariance initialisation (``mean_resizing=True``).

    Returns:
        The mask token id.
    """
    existing = mask_token_id_from(model)
    if existing is not None:
        if tokenizer.convert_tokens_to_ids(MASK_TOKEN) != existing:
            raise ValueError(
                f"model config says the mask id is {existing} but the tokenizer maps {MASK_TOKEN!r} to "
                f"{tokenizer.convert_tokens_to_ids(MASK_TOKEN)}: model and tokenizer do not belong together"
            )
        return existing
    tokenizer.add_special_tokens({"additional_special_tokens": reserved_mask_tokens(num_reserved)},
                                 replace_extra_special_tokens=False)
    mask_id = tokenizer.convert_tokens_to_ids(MASK_TOKEN)
    new_size = max(len(tokenizer), model.get_input_embeddings().weight.shape[0])
    model.resize_token_embeddings(new_size, pad_to_multiple_of=pad_to_multiple_of, mean_resizing=True)
    set_mask_token_id(model, mask_id)
    return mask_id


def set_mask_token_id(model, mask_token_id: int) -> None:
    """Record the mask id in ``model.config`` and ``model.generation_config`` (both are saved with it)."""
    vocab = model.get_input_embeddings().weight.shape[0]
    if not 0 <= mask_token_id < vocab:
        raise ValueError(f"mask token id {mask_token_id} is outside the embedding matrix (size {vocab})")
    setattr(model.config, CONFIG_KEY, int(mask_token_id))
    if getattr(model, "generation_config", None) is not None:
        setattr(model.generation_config, CONFIG_KEY, int(mask_token_id))


def set_trained_k_max(model, k_max: int) -> None:
    """Record in ``model.config`` that slots ``1..k_max`` were trained (saved with the checkpoint)."""
    if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 1:
        raise ValueError(f"trained k_max must be an int >= 1, got {k_max!r}")
    setattr(model.config, TRAINED_K_KEY, k_max)


def trained_k_max_from(model) -> int | None:
    """The largest chunk size the model was trained on, or ``None`` when it does not say (e.g. a base model)."""
    value = getattr(getattr(model, "config", None), TRAINED_K_KEY, None)
    return None if value is None else int(value)


def _first_mask_id(*configs) -> int | None:
    for cfg in configs:
        value = getattr(cfg, CONFIG_KEY, None) if cfg is not None else None
        if value is not None:
            return int(value)
    return None


def mask_token_id_from(model) -> int | None:
    """The mask id stored in the model's config or generation config, or ``None`` if it has none."""
    return _first_mask_id(getattr(model, "config", None), getattr(model, "generation_config", None))


def require_mask_token(source, *, needed_by: str, remedy: str) -> None:
    """The one check that a model can be fed ``<mtp>`` masks: ``source`` is a loaded model or a local checkpoint or
    adapter folder (read without loading weights; a hub id is left to the check after loading). A ``ValueError``
    names what needs the masks (``needed_by``) and what to do instead (``remedy``)."""
    from pathlib import Path

    if isinstance(source, (str, Path)):
        if not Path(source).is_dir() or mask_token_id_in_checkpoint(str(source)) is not None:
            return
        where = f"{source} has no <mtp> mask token ({CONFIG_KEY} missing from its config)"
    elif mask_token_id_from(source) is not None:
        return
    else:
        where = f"{getattr(source.config, '_name_or_path', None) or 'the model'} has no <mtp> mask token"
    raise ValueError(f"{where}, so {needed_by} cannot feed masks: {remedy}")


def mask_token_id_in_checkpoint(path_or_name: str) -> int | None:
    """The mask id a saved checkpoint carries, read from its ``config.json`` without loading any weights.

    A gated-LoRA adapter folder answers from its ``gated_lora_config.json``. Otherwise only ``config.json`` is
    consulted: transformers 5.x drops unknown keys when it loads a generation config, so the copy in
    ``generation_config.json`` never survives a reload.
    """
    from pathlib import Path

    from transformers import AutoConfig

    from selfdistill.models import gated_lora

    if (Path(path_or_name) / gated_lora.CONFIG_FILE).is_file():  # an adapter folder carries its own mask id
        return int(gated_lora.read_adapter_config(path_or_name)["mask_token_id"])
    return _first_mask_id(AutoConfig.from_pretrained(path_or_name))
