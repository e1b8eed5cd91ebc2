"""Online self-distillation with ``transformers.Trainer``: :class:`DistillConfig` and :class:`DistillTrainer`.

The trainer overrides only :meth:`DistillTrainer.compute_loss` (the two-pass step of
:func:`selfdistill.train.distill_step.distill_step`) and :meth:`DistillTrainer.log` (MTP metrics); optimisation,
mixed precision, DDP/FSDP/DeepSpeed, checkpointing (safetensors) and ``resume_from_checkpoint`` are Trainer's own.

Per optimizer step, ``k ~ UniformInt[k_min, k_max]`` and the offset ``o ~ UniformInt[0, P-1]`` are drawn from a
generator seeded by ``(seed, global_step, micro_step[, rank])``: every rank agrees (unless ``k_sampling:
per_rank``) and a resumed run draws exactly what the uninterrupted run drew, with no hidden RNG state.

The teacher is a frozen copy of the student's initial weights (after the mask token was added), in ``eval()``
mode, ``requires_grad_(False)``, never given to the optimizer, and put on the right device: a plain device copy
under DDP/single device, wrapped with the accelerator's FSDP/DeepSpeed settings otherwise (a teacher left on
CPU, or unsharded beside a sharded student, is the classic FSDP pitfall).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from selfdistill.train.distill_step import distill_step
from selfdistill.train.layout import build_layout, num_source_tokens_needed, region_geometry
from selfdistill.train.losses import LOSS_MODES
from selfdistill.models.gated_lora import (DEFAULT_TARGETS, WEIGHTS_FILE, BaseModelView, GatedLoRAConfig, gated_state,
                                          load_adapter_tensors, pop_new_rows, save_gated_lora)
from selfdistill.models.loader import DTYPES, resolve_dtype
from selfdistill.models.mask_token import mask_token_id_from
from selfdistill.train.guards import check_loss_items, check_step_finite
from selfdistill.train.run_dir import METRICS_FILE, ConfigInCheckpointCallback, prepare_output_dir

logger = logging.getLogger(__name__)

K_SAMPLING = ("shared", "per_rank")
ADAPTERS = ("none", "gated_lora")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
#: Layouts are immutable and there are at most (k_max - k_min + 1) * P of them: build each once per process.
cached_layout = functools.lru_cache(maxsize=4096)(build_layout)


@dataclass(kw_only=True)
class DistillConfig(TrainingArguments):
    """``TrainingArguments`` plus the multi-token-prediction distillation fields (METHOD.md sections 2-4)."""

    model_name_or_path: str = field(default="tiny-teacher", metadata={
        "help": "HF model id or local path; 'tiny-teacher' is the checkpoint shipped in the package."})
    dataset: str = field(default="synthetic", metadata={
        "help": "'synthetic', 'metamathqa[:path-or-hub-id]', 'gsm8k[:path]' or a local file in the normalised schema."})
    validation_fraction: float = field(default=0.01, metadata={"help": "Held-out fraction of seed-question groups."})
    synthetic_rows_per_subtask: int = field(default=500, metadata={"help": "Rows per synthetic subtask."})
    max_eval_windows: int | None = field(default=256, metadata={"help": "Cap on evaluation windows (None: all)."})
    k_min: int = field(default=2, metadata={"help": "Smallest chunk size k drawn per step."})
    k_max: int = field(default=16, metadata={"help": "Largest chunk size k drawn per step."})
    num_regions: int = field(default=5, metadata={"help": "M, masked regions per sequence."})
    seq_len: int = field(default=160, metadata={"help": "S, slots per packed sequence (multiple of num_regions)."})
    loss_mode: str = field(default="hard_ce", metadata={"help": f"One of {LOSS_MODES}."})
    ntp_weight: float = field(default=0.0, metadata={"help": "Weight of the prefix next-token CE on real slots."})
    entropy_beta: float = field(default=0.0, metadata={"help": "Weight of the student-entropy penalty."})
    random_offset: bool = field(default=True, metadata={"help": "Shift the layout by a random offset each step."})
    k_sampling: str = field(default="shared", metadata={"help": f"One of {K_SAMPLING}: one k for all ranks or one each."})
    eval_k: int | None = field(default=None, metadata={"help": "Fixed k for evaluation (default k_max), offset 0."})
    model_dtype: str = field(default="float32", metadata={
        "help": f"Student weight dtype, one of {tuple(DTYPES)}; use bf16: true for mixed precision."})
    teacher_dtype: str = field(default="auto", metadata={"help": f"Teacher dtype, one of {tuple(DTYPES)} (auto: student's)."})
    attn_implementation: str = field(default="sdpa", metadata={"help": f"One of {ATTN_IMPLEMENTATIONS}."})
    chat_template: bool = field(default=False, metadata={"help": "Wrap prompts in the tokenizer's chat template."})
    completion_only_loss: bool = field(default=False, metadata={
        "help": "Only regions whose first target is on a row's target side count (as SFT's completion-only loss); "
                "for teachers that never learnt to model prompts. Off: every region (METHOD.md)."})
    packing: bool = field(default=False, metadata={
        "help": "Concatenate rows (EOS-separated) into full windows; off: one row per window, regions after its EOS pruned."})
    num_reserved_mask_tokens: int = field(default=32, metadata={"help": "Mask ids reserved (the first is used)."})
    pad_vocab_to_multiple_of: int | None = field(default=None, metadata={"help": "Pad the resized vocab (authors: 128)."})
    adapter: str = field(default="none", metadata={
        "help": f"One of {ADAPTERS}: 'none' fine-tunes every weight against a frozen copy; 'gated_lora' freezes the "
                "base, adds adapters active only at mask tokens, and the teacher is the same weights, adapters off."})
    lora_rank: int = field(default=32, metadata={"help": "Gated LoRA rank r."})
    lora_alpha: float = field(default=64.0, metadata={"help": "Gated LoRA alpha (scale alpha / r)."})
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS), metadata={
        "help": "Linear layers to adapt, by module name."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapters' input."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Start afresh in a used output_dir, deleting its checkpoints and metrics; without it (and without "
                "resume_from_checkpoint) a used output_dir is refused."})
    # Trainer defaults that do not fit this trainer: the batch has no columns the model's forward takes by name.
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False (raw windows + valid)."})
    logging_nan_inf_filter: bool = field(default=False, metadata={
        "help": "Must stay False: a non-finite loss stops the run (TrainingDivergedError), it is never logged as 0."})

    def __post_init__(self):
        self.validate_distill_fields()
        super().__post_init__()

    def validate_distill_fields(self) -> None:
        """Fail fast, before any model is loaded, on settings that cannot work together."""
        not_finite = {f.name: value for f in fields(self)
                      if isinstance(value := getattr(self, f.name), float) and not math.isfinite(value)}
        if not_finite:
            raise ValueError(f"these settings must be finite numbers: {not_finite}")
        if not 1 <= self.k_min <= self.k_max:
            raise ValueError(f"need 1 <= k_min <= k_max, got k_min={self.k_min}, k_max={self.k_max}")
        try:
            region_geometry(self.seq_len, self.k_max, self.num_regions)
        except ValueError as err:
            raise ValueError(f"seq_len/num_regions cannot fit k_max={self.k_max}: {err}") from None
        if self.eval_k is not None and not 1 <= self.eval_k <= self.k_max:
            raise ValueError(f"eval_k must be in [1, k_max={self.k_max}], got {self.eval_k}")
        for name, value, allowed in (("loss_mode", self.loss_mode, LOSS_MODES),
                                     ("k_sampling", self.k_sampling, K_SAMPLING),
                                     ("model_dtype", self.model_dtype, tuple(DTYPES)),
                                     ("teacher_dtype", self.teacher_dtype, tuple(DTYPES)),
                                     ("attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {allowed}")
        if self.ntp_weight < 0 or self.entropy_beta < 0:
            raise ValueError(f"ntp_weight and entropy_beta must be >= 0, got {self.ntp_weight}, {self.entropy_beta}")
        if self.remove_unused_columns:
            raise ValueError("remove_unused_columns must be False: the trainer reads 'input_ids' and 'valid' itself")
        if self.adapter not in ADAPTERS:
            raise ValueError(f"adapter={self.adapter!r} is not one of {ADAPTERS}")
        if self.adapter == "gated_lora":
            self.gated_lora_config()  # validates rank, alpha, targets, dropout
            if self.k_min < 2 or self.ntp_weight > 0:
                raise ValueError("adapter gated_lora trains only what mask tokens compute: every real position is the "
                                 "frozen base model, so k_min must be >= 2 (k=1 feeds no mask) and ntp_weight 0 (got "
                                 f"k_min={self.k_min}, ntp_weight={self.ntp_weight})")
        if self.logging_nan_inf_filter:
            raise ValueError("logging_nan_inf_filter must be False: a non-finite loss stops the run instead of being "
                             "hidden in the logged average")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.synthetic_rows_per_subtask < 1 or (self.max_eval_windows is not None and self.max_eval_windows < 1):
            raise ValueError(f"synthetic_rows_per_subtask and max_eval_windows must be >= 1, got "
                             f"{self.synthetic_rows_per_subtask}, {self.max_eval_windows}")
        if self.num_reserved_mask_tokens < 1:
            raise ValueError(f"num_reserved_mask_tokens must be >= 1, got {self.num_reserved_mask_tokens}")

    def gated_lora_config(self) -> GatedLoRAConfig:
        return GatedLoRAConfig(rank=self.lora_rank, alpha=self.lora_alpha, targets=tuple(self.lora_targets),
                               dropout=self.lora_dropout)

    @property
    def window_tokens(self) -> int:
        """Raw tokens per data window: enough for the smallest k at offset 0."""
        return num_source_tokens_needed(self.seq_len, self.k_min, self.num_regions)


def sample_chunk_and_offset(cfg: DistillConfig, *, step: int, micro_step: int = 0, rank: int = 0
                            ) -> tuple[int, int]:
    """``(k, offset)`` for one micro-batch, a pure function of ``(seed, step, micro_step, rank if per_rank)``."""
    rank_key = rank if cfg.k_sampling == "per_rank" else 0
    state = np.random.SeedSequence([cfg.seed, step, micro_step, rank_key]).generate_state(2)
    k = cfg.k_min + int(state[0]) % (cfg.k_max - cfg.k_min + 1)
    _, p = region_geometry(cfg.seq_len, k, cfg.num_regions)
    offset = int(state[1]) % p if cfg.random_offset else 0
    return k, offset


def frozen_teacher(model, *, dtype: torch.dtype | None = None):
    """A frozen deep copy of ``model`` (its current = initial weights), in eval mode with no grad."""
    if any(hasattr(p, "ds_id") for p in model.parameters()):
        raise ValueError("the student is already partitioned by DeepSpeed ZeRO-3, so a deep copy would hold empty "
                         "shards. Keep zero3_init_flag: false, and create your model before the DistillConfig (a "
                         "TrainingArguments with a DeepSpeed config makes from_pretrained/from_config partition "
                         "weights), or let run_distillation load it from model_name_or_path; or pass the teacher")
    teacher = copy.deepcopy(model)
    if dtype is not None:
        teacher = teacher.to(dtype)
    teacher.eval().requires_grad_(False)
    return teacher


class JsonlLogCallback(TrainerCallback):
    """Append every log record (training and evaluation) as one JSON line to ``<output_dir>/metrics.jsonl``."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            os.makedirs(args.output_dir, exist_ok=True)
            with open(os.path.join(args.output_dir, METRICS_FILE), "a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class DistillTrainer(Trainer):
    """``Trainer`` whose loss is the online self-distillation step. Batches: ``input_ids`` long[B, N], ``valid``.

    Args:
        model: the student, already carrying the mask token (:func:`selfdistill.models.mask_token.add_mask_token`).
        args: a :class:`DistillConfig`.
        teacher: optional frozen teacher; by default a frozen copy of ``model`` as given (its initial weights).
        **kwargs: passed to ``Trainer`` (``train_dataset``, ``eval_dataset``, ``processing_class``, ...).
    """

    def __init__(self, model, args: DistillConfig, *, teacher=None, **kwargs):
        if not isinstance(args, DistillConfig):
            raise TypeError(f"args must be a DistillConfig, got {type(args).__name__}")
        self.mask_token_id = mask_token_id_from(model)
        if self.mask_token_id is None:
            raise ValueError("the model has no mask token id in its config; call selfdistill.models.mask_token."
                             "add_mask_token(model, tokenizer) first")
        self.gated = gated_state(model) is not None
        if teacher is None and args.loss_mode != "gt_ce":
            teacher = BaseModelView(model) if self.gated else frozen_teacher(
                model, dtype=None if args.teacher_dtype == "auto" else resolve_dtype(args.teacher_dtype))
        super().__init__(model=model, args=args, **kwargs)
        self.loss_is_scaled_for_ga = False  # per-micro-batch mean: Trainer divides by the accumulation steps
        own_weights = teacher is None or isinstance(teacher, BaseModelView)  # nothing to freeze, move or shard
        self.teacher = teacher if own_weights else self._prepare_teacher(teacher)
        self.stop_token_ids = () if args.packing else self._stop_ids(kwargs.get("processing_class"), model)
        self._metric_names = self._metric_names_for(args)
        self._acc = {"train": self._zero_acc(), "eval": self._zero_acc()}
        self._last_log_time = time.perf_counter()
        self._micro = (-1, 0)  # (global step, micro-batches seen in it)
        self._bad_loss: float | None = None  # a non-finite micro-batch loss of the current step
        self._loss_items_seen = 0  # loss items (kept regions + NTP targets, all ranks) since train() started
        self.add_callback(JsonlLogCallback())
        self.add_callback(ConfigInCheckpointCallback())

    # ------------------------------------------------------------------ setup
    def _prepare_teacher(self, teacher):
        teacher.eval().requires_grad_(False)
        if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not self.is_fsdp_enabled:
            # accelerate 1.15 keeps FSDP only on GPU-like devices; on CPU it quietly runs plain DDP instead.
            logger.warning("the accelerate config asks for FSDP but this run is %s (accelerate enables FSDP only on "
                           "GPU-like devices): student and teacher are replicated, not sharded",
                           self.accelerator.distributed_type)
        if self.is_deepspeed_enabled:
            from trl.models.utils import prepare_deepspeed

            return prepare_deepspeed(teacher, self.accelerator)
        if self.is_fsdp_enabled:
            from trl.models.utils import prepare_fsdp

            return prepare_fsdp(teacher, self.accelerator)
        return teacher.to(self.args.device)

    @staticmethod
    def _stop_ids(tokenizer, model) -> tuple[int, ...]:
        src = tokenizer if tokenizer is not None else model.config
        ids = {getattr(src, "eos_token_id", None), getattr(src, "pad_token_id", None)}
        flat = set()
        for i in ids:
            flat.update(i if isinstance(i, (list, tuple)) else [i])
        return tuple(sorted(int(i) for i in flat if i is not None))

    @staticmethod
    def _metric_names_for(args: DistillConfig) -> list[str]:
        # Fixed order and size on every rank, whatever k this rank drew, so one all-reduce covers them all.
        names = [f"agree_slot{j}" for j in range(1, args.k_max + 1)]
        names += ["agree_run", "kept_regions", "teacher_chunk_loglik", "ntp_loss", "k_mean", "offset_mean"]
        names += [f"k_count_{k}" for k in range(args.k_min, args.k_max + 1)]
        return names

    def _zero_acc(self) -> dict:
        return {"sums": torch.zeros(len(self._metric_names), dtype=torch.float64),
                "counts": torch.zeros(len(self._metric_names), dtype=torch.float64), "tokens": 0, "items": 0.0}

    # ------------------------------------------------------------------ gated LoRA: save and resume the adapter only
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.gated:
            return super()._save(output_dir, state_dict)
        if self.args.should_save:
            save_gated_lora(self.accelerator.unwrap_model(self.model), self.processing_class,
                            output_dir or self.args.output_dir, base_model=self.args.model_name_or_path)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if not self.gated:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from safetensors.torch import load_file

        weights = load_file(os.path.join(resume_from_checkpoint, WEIGHTS_FILE))
        pop_new_rows(weights)  # rebuilt identically by the seeded prepare_student
        load_adapter_tensors(model or self.model, weights)

    # ------------------------------------------------------------------ the step
    def _layout_for(self, training: bool):
        if not training:
            return cached_layout(self.args.seq_len, self.args.eval_k or self.args.k_max, self.args.num_regions)
        step = self.state.global_step
        last, seen = self._micro
        micro = seen if last == step else 0
        self._micro = (step, micro + 1)
        k, offset = sample_chunk_and_offset(self.args, step=step, micro_step=micro,
                                            rank=self.args.process_index)
        return cached_layout(self.args.seq_len, k, self.args.num_regions, offset=offset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The two-pass distillation loss on one micro-batch: its mean over every process's share in training
        (``distill_step``'s ``count_mean``), this process's mean in evaluation. ``num_items_in_batch`` is unused:
        under gradient accumulation each micro-batch's mean weighs the same."""
        training = model.training
        if self.args.completion_only_loss and "completion" not in inputs:
            raise ValueError("completion_only_loss needs a 'completion' column in the batches (training_windows "
                             "writes one); this dataset has only " + ", ".join(inputs))
        layout = self._layout_for(training)
        out = distill_step(model, self.teacher, inputs["input_ids"], layout=layout, mask_token_id=self.mask_token_id,
                           loss_mode=self.args.loss_mode, ntp_weight=self.args.ntp_weight,
                           entropy_beta=self.args.entropy_beta, stop_token_ids=self.stop_token_ids,
                           valid=inputs.get("valid"),
                           target_mask=inputs.get("completion") if self.args.completion_only_loss else None,
                           stop_mask=inputs.get("completion") if self.args.chat_template else None,
                           count_mean=self._count_mean if training and self.args.world_size > 1 else None)
        self._accumulate("train" if training else "eval", out.stats, layout, inputs["input_ids"].shape[0])
        return (out.loss, out) if return_outputs else out.loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Trainer's step; a non-finite loss is remembered and stops the run at this step's gradient check."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss):
            self._bad_loss = float(loss)
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        # Trainer's one place between backward and optimizer.step: stop here, on every rank, while the weights
        # (and so every saved checkpoint) are still finite.
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        check_step_finite(self, loss=self._bad_loss, grad_norm=grad_norm)
        return grad_norm

    def _count_mean(self, counts: torch.Tensor) -> torch.Tensor:
        # Loss items per process, averaged over the data-parallel group (see distill_step's count_mean).
        return self.accelerator.reduce(counts.to(self.args.device), reduction="mean").to(counts.device)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ metrics
    def _accumulate(self, which: str, stats: dict, layout, batch_size: int) -> None:
        acc = self._acc[which]
        index = {n: i for i, n in enumerate(self._metric_names)}
        for name, (total, count) in stats.items():
            if name in index:
                acc["sums"][index[name]] += float(total)
                acc["counts"][index[name]] += float(count)
        for name, value in (("k_mean", layout.k), ("offset_mean", layout.offset)):
            acc["sums"][index[name]] += value
            acc["counts"][index[name]] += 1
        if f"k_count_{layout.k}" in index:
            acc["sums"][index[f"k_count_{layout.k}"]] += 1
        acc["tokens"] += batch_size * layout.seq_len
        acc["items"] += float(stats["kept_regions"][0]) * batch_size * layout.num_regions
        if "ntp_loss" in stats:
            acc["items"] += float(stats["ntp_loss"][1])

    def _flush(self, which: str, prefix: str = "") -> dict[str, float]:
        acc = self._acc[which]
        totals = torch.tensor([float(acc["tokens"]), acc["items"]], dtype=torch.float64)
        packed = torch.cat([acc["sums"], acc["counts"], totals])
        if self.args.world_size > 1:
            packed = self.accelerator.reduce(packed.to(self.args.device), reduction="sum").cpu()
        n = len(self._metric_names)
        sums, counts, tokens = packed[:n], packed[n:2 * n], float(packed[-2])
        logs = {prefix + "loss_items": int(round(float(packed[-1])))}
        for i, name in enumerate(self._metric_names):
            if name.startswith("k_count_"):
                logs[prefix + name] = int(sums[i])
            elif counts[i] > 0:
                logs[prefix + name] = float(sums[i] / counts[i])
        if which == "train":
            now = time.perf_counter()
            logs["tokens_per_second"] = tokens / max(now - self._last_log_time, 1e-9)
            self._last_log_time = now
        self._acc[which] = self._zero_acc()
        return logs

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the MTP metrics accumulated since the last log (reduced over ranks) to Trainer's record."""
        if "loss" in logs:
            logs.update(self._flush("train"))
            self._loss_items_seen += logs["loss_items"]
            check_loss_items(self, seen=self._loss_items_seen)
        elif any(key.startswith("eval_") for key in logs):
            logs.update(self._flush("eval", prefix="eval_"))
        super().log(logs, start_time)


# ---------------------------------------------------------------------- building a run from a config
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
    ``cfg.seed`` so a resumed run rebuilds the very same teacher) and, with ``adapter: gated_lora``, the adapters."""
    from transformers import set_seed

    from selfdistill.models.mask_token import add_mask_token

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    set_seed(cfg.seed)
    base_vocab = model.get_input_embeddings().weight.shape[0]
    mask_id = add_mask_token(model, tokenizer, num_reserved=cfg.num_reserved_mask_tokens,
                             pad_to_multiple_of=cfg.pad_vocab_to_multiple_of)
    model.config._attn_implementation = cfg.attn_implementation
    if cfg.adapter == "gated_lora":
        from selfdistill.models.gated_lora import apply_gated_lora

        apply_gated_lora(model, cfg.gated_lora_config(), mask_token_id=mask_id, base_vocab_size=base_vocab)
    return model, tokenizer


def load_splits(cfg: DistillConfig) -> dict:
    """``{"train": rows, "validation": rows or None}`` of ``cfg.dataset`` in the normalised schema, read before
    any model loads: a missing, empty or malformed file or a bad split fails in seconds, not after the load."""
    from selfdistill.train.data import load_rows

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
