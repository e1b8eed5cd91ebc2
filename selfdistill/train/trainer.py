"""Online self-distillation with ``transformers.Trainer``: :class:`DistillTrainer`.

The trainer overrides only :meth:`DistillTrainer.compute_loss` (the two-pass step of
:func:`selfdistill.train.distill_step.distill_step`), :meth:`DistillTrainer.log` (MTP metrics), the guards that
stop a diverging run, and, for gated LoRA, saving and resuming the adapter alone; optimisation, mixed precision,
DDP/FSDP/DeepSpeed, checkpointing (safetensors) and ``resume_from_checkpoint`` are Trainer's own.

The teacher is a frozen copy of the student's initial weights (after the mask token was added), in ``eval()``
mode, ``requires_grad_(False)``, never given to the optimizer, and put on the right device: a plain device copy
under DDP/single device, wrapped with the accelerator's FSDP/DeepSpeed settings otherwise (a teacher left on
CPU, or unsharded beside a sharded student, is the classic FSDP pitfall). With ``adapter: gated_lora`` the teacher
is the student itself with its adapters off (:class:`selfdistill.models.gated_lora.BaseModelView`).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import time

import torch
from transformers import Trainer, TrainerCallback

from selfdistill.models.adapter_files import adapter_weights
from selfdistill.models.gated_lora import (WEIGHTS_FILE, BaseModelView, gated_state, load_adapter_tensors,
                                          pop_new_rows, save_gated_lora)
from selfdistill.models.loader import resolve_dtype
from selfdistill.models.mask_token import mask_token_id_from
from selfdistill.train.config import DistillConfig, sample_chunk_and_offset
from selfdistill.train.distill_step import distill_step
from selfdistill.train.guards import check_loss_items, check_step_finite
from selfdistill.train.layout import build_layout
from selfdistill.train.shared_prefix import supports_shared_prefix
from selfdistill.train.sharding import gathered_for_reading
from selfdistill.train.run_dir import METRICS_FILE, ConfigInCheckpointCallback

logger = logging.getLogger(__name__)

@functools.lru_cache(maxsize=4096)
def device_layout(seq_len: int, k: int, num_regions: int, offset: int, device: torch.device):
    """The layout on ``device``, built and moved once per shape (layouts are immutable and there are at most
    ``(k_max - k_min + 1) * P`` of them): a step copies no index tensor to the device."""
    return build_layout(seq_len, k, num_regions, offset=offset).to(device)


def frozen_teacher(model, *, dtype: torch.dtype | None = None):
    """A frozen deep copy of ``model`` (its current = initial weights), in eval mode with no grad.

    With ``dtype``, each floating tensor is copied straight into ``dtype`` (no full-precision copy first: for an 8B
    fp32 student that transient would be ~32 GB per rank); tied weights stay tied."""
    if any(hasattr(p, "ds_id") for p in model.parameters()):
        raise ValueError("the student is already partitioned by DeepSpeed ZeRO-3, so a deep copy would hold empty "
                         "shards. Keep zero3_init_flag: false, and create your model before the DistillConfig (a "
                         "TrainingArguments with a DeepSpeed config makes from_pretrained/from_config partition "
                         "weights), or let run_distillation load it from model_name_or_path; or pass the teacher")
    memo = {}
    if dtype is not None:
        for t in (*model.parameters(), *model.buffers()):
            if t.is_floating_point() and id(t) not in memo:
                copied = t.detach().to(dtype=dtype, copy=True)
                memo[id(t)] = torch.nn.Parameter(copied, requires_grad=False) if isinstance(
                    t, torch.nn.Parameter) else copied
    teacher = copy.deepcopy(model, memo)
    teacher.eval().requires_grad_(False)
    return teacher


def teacher_dtype_for(args) -> torch.dtype | None:
    """The full-fine-tune teacher's dtype: ``teacher_dtype`` when set, else the run's mixed precision (bf16 / fp16:
    the teacher only runs forward, and autocast would round its matmuls to that precision anyway), else the
    student's (``None``)."""
    if args.teacher_dtype != "auto":
        return resolve_dtype(args.teacher_dtype)
    return torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None


class JsonlLogCallback(TrainerCallback):
    """Append every log record (training and evaluation) as one JSON line to ``<output_dir>/metrics.jsonl``."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            os.makedirs(args.output_dir, exist_ok=True)
            with open(os.path.join(args.output_dir, METRICS_FILE), "a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


def checkpoints_activations(args, accelerator) -> bool:
    """Activation (gradient) checkpointing by the training argument or by FSDP's own (``fsdp_config`` or the
    accelerate config's ``fsdp_activation_checkpointing``): HF then turns off the KV cache the shared-prefix step
    needs."""
    plugin = getattr(getattr(accelerator, "state", None), "fsdp_plugin", None)
    return bool(args.gradient_checkpointing or getattr(args, "activation_checkpointing", False)
                or (getattr(args, "fsdp_config", None) or {}).get("activation_checkpointing")
                or getattr(plugin, "activation_checkpointing", False))


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
            teacher = BaseModelView(model) if self.gated else frozen_teacher(model, dtype=teacher_dtype_for(args))
        super().__init__(model=model, args=args, **kwargs)
        self.loss_is_scaled_for_ga = False  # per-micro-batch mean: Trainer divides by the accumulation steps
        own_weights = teacher is None or isinstance(teacher, BaseModelView)  # nothing to freeze, move or shard
        self.teacher = teacher if own_weights else self._prepare_teacher(teacher)
        self._shared_prefix = (self.gated and args.gated_shared_prefix
                               and not checkpoints_activations(args, self.accelerator)
                               and supports_shared_prefix(model, self.teacher))
        self.stop_token_ids = () if args.packing else self._stop_ids(kwargs.get("processing_class"), model)
        self._metric_names = self._metric_names_for(args)
        self._metric_index = {name: i for i, name in enumerate(self._metric_names)}
        self._index_rows: dict[tuple, torch.Tensor] = {}
        self._acc = {"train": self._zero_acc(), "eval": self._zero_acc()}
        self._last_log_time = time.perf_counter()
        self._micro = (-1, 0)  # (global step, micro-batches seen in it)
        self._step_losses: list[torch.Tensor] = []  # this optimizer step's micro-batch losses, checked at its end
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
        """Per-metric sums and counts: ``device`` for the step's stats (added there, read back only at log time),
        ``host`` for what the layout already says (k, offset); ``items`` on the device too."""
        n, device = len(self._metric_names), self.args.device
        zeros = lambda dev: torch.zeros(2, n, dtype=torch.float64, device=dev)  # noqa: E731
        return {"device": zeros(device), "host": zeros("cpu"), "tokens": 0,
                "items": torch.zeros((), dtype=torch.float64, device=device)}

    # ------------------------------------------------------------------ gated LoRA: save and resume the adapter only
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Gated LoRA: the adapter folder, in every checkpoint and at the end, whatever the sharding. Every rank
        gathers the adapter tensors (FSDP2 DTensors and ZeRO-3 partitions need all of them), the main one writes."""
        if not self.gated:
            return super().save_model(output_dir, _internal_call)
        model = self.accelerator.unwrap_model(self.model)
        with gathered_for_reading(self, model):
            weights = adapter_weights(model)
        if self.args.should_save:
            save_gated_lora(model, self.processing_class, output_dir or self.args.output_dir,
                            base_model=self.args.model_name_or_path, weights=weights)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        # Under FSDP2 the checkpoint's sharded model state (save_fsdp_model) restores the adapters into their
        # shards; DeepSpeed resumes through its own engine checkpoint and never calls this.
        if not self.gated or self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from safetensors.torch import load_file

        weights = load_file(os.path.join(resume_from_checkpoint, WEIGHTS_FILE))
        pop_new_rows(weights)  # rebuilt identically by the seeded prepare_student
        load_adapter_tensors(model or self.model, weights)

    # ------------------------------------------------------------------ the step
    def _layout_for(self, training: bool):
        device = self.args.device
        if not training:
            return device_layout(self.args.seq_len, self.args.eval_k or self.args.k_max, self.args.num_regions, 0,
                                 device)
        step = self.state.global_step
        last, seen = self._micro
        micro = seen if last == step else 0
        self._micro = (step, micro + 1)
        k, offset = sample_chunk_and_offset(self.args, step=step, micro_step=micro,
                                            rank=self.args.process_index)
        return device_layout(self.args.seq_len, k, self.args.num_regions, offset, device)

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
                           count_mean=self._count_mean if training and self.args.world_size > 1 else None,
                           shared_prefix=self._shared_prefix)
        self._accumulate("train" if training else "eval", out.stats, layout, inputs["input_ids"].shape[0])
        return (out.loss, out) if return_outputs else out.loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Trainer's step; its loss is kept (on the device) for this step's finiteness check at the gradient norm."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._step_losses.append(loss.detach())
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        # Trainer's one place between backward and optimizer.step: stop here, on every rank, while the weights
        # (and so every saved checkpoint) are still finite.
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        losses, self._step_losses = self._step_losses, []
        check_step_finite(self, losses=losses, grad_norm=grad_norm)
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
        acc, index = self._acc[which], self._metric_index
        names = tuple(name for name in stats if name in index)
        rows = self._index_rows.get(names)
        if rows is None:  # one small index tensor per set of stats, on the device once
            rows = self._index_rows[names] = torch.tensor([index[n] for n in names], device=acc["device"].device)
        pairs = torch.stack([torch.stack(stats[n]).to(acc["device"]) for n in names], dim=1)  # [2, m]
        acc["device"].index_add_(1, rows, pairs)
        host = acc["host"]
        for name, value in (("k_mean", layout.k), ("offset_mean", layout.offset)):
            host[:, index[name]] += torch.tensor([value, 1], dtype=torch.float64)
        if f"k_count_{layout.k}" in index:
            host[0, index[f"k_count_{layout.k}"]] += 1
        acc["tokens"] += batch_size * layout.seq_len
        acc["items"] += stats["kept_regions"][0].to(acc["items"]) * (batch_size * layout.num_regions)
        if "ntp_loss" in stats:
            acc["items"] += stats["ntp_loss"][1].to(acc["items"])

    def _flush(self, which: str, prefix: str = "") -> dict[str, float]:
        """The metrics since the last log, summed over ranks: the one read of the accumulators."""
        acc, n = self._acc[which], len(self._metric_names)
        device = acc["device"].device
        extra = torch.tensor([acc["tokens"]], dtype=torch.float64, device=device)
        packed = torch.cat([(acc["device"] + acc["host"].to(device)).reshape(-1), acc["items"][None], extra])
        if self.args.world_size > 1:
            packed = self.accelerator.reduce(packed, reduction="sum")
        values = packed.tolist()
        sums, counts, (items, tokens) = values[:n], values[n:2 * n], values[2 * n:]
        logs = {prefix + "loss_items": int(round(items))}
        for i, name in enumerate(self._metric_names):
            if name.startswith("k_count_"):
                logs[prefix + name] = int(sums[i])
            elif counts[i] > 0:
                logs[prefix + name] = sums[i] / counts[i]
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
