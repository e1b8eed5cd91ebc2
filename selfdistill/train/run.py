"""Building a distillation run from a :class:`~selfdistill.train.config.DistillConfig`: model path and data checked
first, then the student (mask token, adapters), the datasets, training and the final save."""

from __future__ import annotations

import contextlib
import os

from selfdistill.train.config import DistillConfig
from selfdistill.train.run_dir import prepare_output_dir
from selfdistill.train.trainer import DistillTrainer


def load_student(cfg: DistillConfig):
    """``(model, tokenizer)`` from ``cfg.model_name_or_path`` with the ``<mtp>`` mask token added (seeded init)."""
    from selfdistill.models.loader import load_model

    model, tokenizer = load_model(cfg.model_name_or_path, dtype=cfg.model_dtype,
                                  attn_implementation=cfg.attn_implementation)
    return prepare_student(cfg, model, tokenizer)


@contextlib.contextmanager
def _whole_weights_unless_zero3_init(cfg: DistillConfig):
    """Load (and resize) the student with whole weights when DeepSpeed ZeRO-3 runs with ``zero3_init_flag: false``.

    TrainingArguments registers accelerate's DeepSpeed config with transformers whatever ``zero3_init_flag`` says,
    so ``from_pretrained`` would partition the student under ``deepspeed.zero.Init``; the teacher, a deep copy of
    the student, would then copy empty ZeRO-3 shards and fail in its first forward.
    """
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    plugin = getattr(cfg, "deepspeed_plugin", None)
    if plugin is None or plugin.is_zero3_init_enabled() or not is_deepspeed_zero3_enabled():
        yield
        return
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()  # Trainer needs it back (engine setup, ZeRO-3 saving)


def prepare_student(cfg: DistillConfig, model, tokenizer):
    """Give ``tokenizer`` a pad token if it lacks one, add the mask token (the new embedding rows are drawn under
    ``cfg.seed`` so a resumed run rebuilds the very same teacher), record ``cfg.k_max`` as the trained k_max and,
    with ``adapter: gated_lora``, the adapters."""
    from transformers import set_seed

    from selfdistill.models.mask_token import add_mask_token, set_trained_k_max

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    set_seed(cfg.seed)
    base_vocab = model.get_input_embeddings().weight.shape[0]
    mask_id = add_mask_token(model, tokenizer, num_reserved=cfg.num_reserved_mask_tokens,
                             pad_to_multiple_of=cfg.pad_vocab_to_multiple_of)
    set_trained_k_max(model, cfg.k_max)
    model.config._attn_implementation = cfg.attn_implementation
    if cfg.adapter == "gated_lora":
        from selfdistill.models.gated_lora import apply_gated_lora

        apply_gated_lora(model, cfg.gated_lora_config(), mask_token_id=mask_id, base_vocab_size=base_vocab)
        if cfg.init_adapter:
            from selfdistill.models.gated_lora import warm_start
            from selfdistill.models.loader import resolve_model_path

            warm_start(model, resolve_model_path(cfg.init_adapter))
    return model, tokenizer


def check_init_adapter(cfg: DistillConfig) -> None:
    """``init_adapter`` names a gated-LoRA adapter folder of this run's rank, alpha and targets: checked before any
    model loads (the mask token and vocabulary are checked again once the student is built)."""
    from selfdistill.models.gated_lora import CONFIG_FILE, config_differences, read_adapter_config
    from selfdistill.models.loader import resolve_model_path

    folder = resolve_model_path(cfg.init_adapter)
    if not os.path.isfile(os.path.join(folder, CONFIG_FILE)):
        raise FileNotFoundError(f"init_adapter {cfg.init_adapter!r}: {folder} holds no {CONFIG_FILE}; it is not a "
                                "gated LoRA adapter folder")
    meta = read_adapter_config(folder)
    want = cfg.gated_lora_config()
    differ = config_differences(meta, {"rank": want.rank, "alpha": want.alpha, "targets": list(want.targets)})
    if differ:
        raise ValueError(f"init_adapter {cfg.init_adapter!r} has another shape than this run's gated LoRA "
                         f"(adapter's, run's): {differ}")


def load_splits(cfg: DistillConfig) -> dict:
    """``{"train": rows, "validation": rows or None}`` of ``cfg.dataset`` in the normalised schema, read before
    any model loads: a missing, empty or malformed file or a bad split fails in seconds, not after the load."""
    from selfdistill.data.sources import load_rows

    def rows(split):
        found = load_rows(cfg.dataset, split=split, seed=cfg.seed, validation_fraction=cfg.validation_fraction,
                          synthetic_rows_per_subtask=cfg.synthetic_rows_per_subtask)
        if not len(found):
            raise ValueError(f"dataset {cfg.dataset!r} has no {split} rows")
        return found

    return {"train": rows("train"), "validation": rows("validation") if cfg.eval_strategy != "no" else None}


def build_datasets(cfg: DistillConfig, tokenizer, rows: dict | None = None):
    """``(train, eval or None)`` windows of ``cfg.window_tokens`` raw tokens from ``rows`` (default:
    :func:`load_splits`)."""
    from selfdistill.train.data import training_windows

    rows = load_splits(cfg) if rows is None else rows

    def windows(split):
        ds = training_windows(rows[split], tokenizer, window=cfg.window_tokens, packing=cfg.packing,
                              chat_template=cfg.chat_template)
        if split == "validation" and cfg.max_eval_windows is not None:
            ds = ds.select(range(min(len(ds), cfg.max_eval_windows)))
        return ds

    return windows("train"), windows("validation") if rows["validation"] is not None else None


def run_distillation(cfg: DistillConfig, *, model=None, tokenizer=None, train_dataset=None, eval_dataset=None
                     ) -> DistillTrainer:
    """Build (or take) student, tokenizer and data, train (resuming if asked) and save the final checkpoint.

    Before anything loads, :func:`selfdistill.train.run_dir.prepare_output_dir` refuses a used ``output_dir``
    (unless resuming or ``overwrite_output_dir``) and a resume with changed settings, and writes the config.

    The saved checkpoint is an ordinary HF one: the student, the tokenizer with ``<mtp>``, and
    ``mtp_mask_token_id`` in ``config.json`` and ``generation_config.json``.
    """
    prepare_output_dir(cfg)  # one run per folder; resume checked, tidied; distill_config.yaml written
    if "wandb" in (cfg.report_to or []):
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", cfg.output_dir)
    if model is not None and tokenizer is None:
        raise ValueError("pass the tokenizer together with the model")
    if model is None:
        from selfdistill.models.loader import resolve_model_path

        resolve_model_path(cfg.model_name_or_path)  # a missing checkpoint fails now, before the data is read
    if cfg.init_adapter:
        check_init_adapter(cfg)
    rows = load_splits(cfg) if train_dataset is None else None  # before the model: bad data fails in seconds
    with _whole_weights_unless_zero3_init(cfg):  # the teacher is a deep copy of the whole student
        if model is None:
            model, tokenizer = load_student(cfg)
        else:
            model, tokenizer = prepare_student(cfg, model, tokenizer)
    if train_dataset is None:
        train_dataset, built_eval = build_datasets(cfg, tokenizer, rows)
        eval_dataset = eval_dataset if eval_dataset is not None else built_eval
    trainer = DistillTrainer(model, cfg, train_dataset=train_dataset, eval_dataset=eval_dataset,
                             processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    if trainer.is_fsdp_enabled:
        # Trainer.save_model writes nothing under FSDP's SHARDED_STATE_DICT (what the intermediate checkpoints use,
        # and what configs/accelerate/fsdp_multi_gpu.yaml sets): gather a full one for the final HF checkpoint.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(cfg.output_dir)
    return trainer
