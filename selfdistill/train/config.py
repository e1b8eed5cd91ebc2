"""The configuration of a distillation run: :class:`DistillConfig` (``TrainingArguments`` plus the MTP fields,
checked before any model loads) and the stateless per-step draw of ``k`` and the layout offset.

Per optimizer step, ``k ~ UniformInt[k_min, k_max]`` and the offset ``o ~ UniformInt[0, P-1]`` are drawn from a
generator seeded by ``(seed, global_step, micro_step[, rank])``: every rank agrees (unless ``k_sampling:
per_rank``) and a resumed run draws exactly what the uninterrupted run drew, with no hidden RNG state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
from transformers import TrainingArguments

from selfdistill.models.gated_lora import DEFAULT_TARGETS, GatedLoRAConfig
from selfdistill.models.loader import DTYPES
from selfdistill.train.layout import num_source_tokens_needed, region_geometry
from selfdistill.train.losses import LOSS_MODES

K_SAMPLING = ("shared", "per_rank")
ADAPTERS = ("none", "gated_lora")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


def gpu_visible() -> bool:
    """Whether this process can train on a CUDA GPU (else the run is a CPU run: ``use_cpu`` is set for it)."""
    import torch

    return torch.cuda.is_available()


def default_bf16(*, use_cpu: bool, fp16: bool = False, cuda: bool | None = None, cuda_bf16: bool | None = None,
                 env=None) -> bool:
    """Whether a run that does not set ``bf16`` trains in bf16 mixed precision (autocast, the model_dtype weights):
    yes on a CUDA GPU with bf16 (Ampere and later), no on the CPU (asked with ``use_cpu`` or by accelerate's
    ``ACCELERATE_USE_CPU``, or no GPU visible), no with ``fp16``. On CPUs bf16 pays only with bf16 units and a
    measurement: set ``bf16: true`` there. ``cuda``/``cuda_bf16``/``env`` replace torch's answers and ``os.environ``.
    """
    import os

    import torch

    env = os.environ if env is None else env
    if use_cpu or fp16 or env.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes"):
        return False
    if not (torch.cuda.is_available() if cuda is None else cuda):
        return False
    return bool(torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16)


@dataclass(kw_only=True)
class DistillConfig(TrainingArguments):
    """``TrainingArguments`` plus the multi-token-prediction distillation fields (METHOD.md sections 2-4)."""

    model_name_or_path: str = field(default="tiny-teacher", metadata={
        "help": "HF model id or local path; 'tiny-teacher' is the checkpoint shipped in the package."})
    dataset: str = field(default="synthetic", metadata={
        "help": "'synthetic', 'metamathqa[:path-or-hub-id]', 'gsm8k[:path]', 'onpolicy:<folder>' "
                "(scripts/onpolicy_data.py) or a local file in the normalised schema."})
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
    k_sampling: str = field(default="shared",
                            metadata={"help": f"One of {K_SAMPLING}: one k for all ranks or one each."})
    eval_k: int | None = field(default=None, metadata={"help": "Fixed k for evaluation (default k_max), offset 0."})
    model_dtype: str = field(default="float32", metadata={
        "help": f"Student weight dtype, one of {tuple(DTYPES)}; use bf16: true for mixed precision."})
    teacher_dtype: str = field(default="auto",
                               metadata={"help": f"Teacher dtype, one of {tuple(DTYPES)} (auto: bf16/fp16 with "
                                                 "bf16/fp16 mixed precision, else the student's)."})
    attn_implementation: str = field(default="sdpa", metadata={"help": f"One of {ATTN_IMPLEMENTATIONS}."})
    chat_template: bool = field(default=False, metadata={"help": "Wrap prompts in the tokenizer's chat template."})
    completion_only_loss: bool = field(default=False, metadata={
        "help": "Only regions whose first target is on a row's target side count (as SFT's completion-only loss); "
                "for teachers that never learnt to model prompts. Off: every region (METHOD.md)."})
    packing: bool = field(default=False, metadata={
        "help": "Concatenate rows (EOS-separated) into full windows; off: one row per window, regions after its EOS "
                "pruned."})
    num_reserved_mask_tokens: int = field(default=32, metadata={"help": "Mask ids reserved (the first is used)."})
    pad_vocab_to_multiple_of: int | None = field(default=None,
                                                 metadata={"help": "Pad the resized vocab (authors: 128)."})
    adapter: str = field(default="none", metadata={
        "help": f"One of {ADAPTERS}: 'none' fine-tunes every weight against a frozen copy; 'gated_lora' freezes the "
                "base, adds adapters active only at mask tokens, and the teacher is the same weights, adapters off."})
    lora_rank: int = field(default=32, metadata={"help": "Gated LoRA rank r."})
    lora_alpha: float = field(default=64.0, metadata={"help": "Gated LoRA alpha (scale alpha / r)."})
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS), metadata={
        "help": "Linear layers to adapt, by module name."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapters' input."})
    init_adapter: str | None = field(default=None, metadata={
        "help": "Gated LoRA: continue from this adapter (an alias such as smollm2-135m-mtp, or an adapter folder) "
                "with a fresh optimizer and schedule (warmup_steps); its rank, alpha, targets and mask token must be "
                "this run's. The run record chains the adapter's lineage."})
    gated_shared_prefix: bool = field(default=True, metadata={
        "help": "Gated LoRA: run the real tokens once (no grad) and the student's and teacher's mask slots over their "
                "cached K/V (train/shared_prefix.py): the same loss and gradients up to rounding, about half the "
                "compute. Off: the packed step over all S slots twice. Not used with gradient checkpointing."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Start afresh in a used output_dir, deleting its checkpoints and metrics; without it (and without "
                "resume_from_checkpoint) a used output_dir is refused."})
    bf16: bool | None = field(default=None, metadata={
        "help": "bf16 mixed precision (autocast over the model_dtype weights). Default: on when training on a CUDA GPU "
                "with bf16, off on the CPU and with fp16 (train.config.default_bf16); true/false overrides."})
    # Trainer defaults that do not fit this trainer: the batch has no columns the model's forward takes by name.
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False (raw windows + valid)."})
    logging_nan_inf_filter: bool = field(default=False, metadata={
        "help": "Must stay False: a non-finite loss stops the run (TrainingDivergedError), it is never logged as 0."})

    def __post_init__(self):
        if self.bf16 is None:  # resolved once, here: the saved config and the run record hold true or false
            self.bf16 = default_bf16(use_cpu=self.use_cpu, fp16=self.fp16)
        self.use_cpu = self.use_cpu or not gpu_visible()  # TrainingArguments refuses CPU bf16 without it
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
        if self.init_adapter is not None and self.adapter != "gated_lora":
            raise ValueError(f"init_adapter continues a gated LoRA adapter; set adapter: gated_lora (got adapter="
                             f"{self.adapter!r})")
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
