"""Pretrain the tiny teacher from scratch on the synthetic world (tokenizer included), on CPU.

    python scripts/pretrain_tiny.py                                   # the shipped checkpoint's recipe
    python scripts/pretrain_tiny.py --max_steps 50 --output_dir /tmp/t  # a quick smoke run
    python scripts/pretrain_tiny.py --init_from selfdistill/assets/tiny_teacher --seed 1 ...  # continue training

Writes an ordinary Hugging Face checkpoint (``model.safetensors``, ``config.json``, ``tokenizer.json``...)
plus ``pretrain_record.json`` (command, seed, wall time, hardware, final loss) into ``--output_dir``
(default: the package's ``selfdistill/assets/tiny_teacher``, which is what ships).
Loss is on the completion only: the model learns to answer, not to write prompts.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                          TrainingArguments)

from selfdistill.data.prompts import render_training_text
from selfdistill.provenance import provenance
from selfdistill.run_folder import RunFolder, provenance_record
from selfdistill.train.config import default_bf16, gpu_visible
from selfdistill.data.synthetic import synthetic_dataset
from selfdistill.models.tiny import ASSET_DIR, TinyModelShape, build_tiny_llama, train_tokenizer


@dataclass(kw_only=True)
class PretrainConfig:
    output_dir: str = field(default=str(ASSET_DIR), metadata={"help": "where the checkpoint is written"})
    n_per_subtask: int = field(default=16000, metadata={"help": "synthetic training rows per subtask"})
    seed: int = 0
    max_steps: int = 2400
    batch_size: int = 32
    learning_rate: float = 1.5e-3
    warmup_steps: int = 100
    num_threads: int = 2
    bf16: bool | None = field(default=None, metadata={
        "help": "bf16 autocast, fp32 weights (~1.5x faster on AVX512-BF16 CPUs); default: on a CUDA GPU with bf16, "
                "off on the CPU"})
    use_cpu: bool = field(default=False, metadata={"help": "train on the CPU even where a GPU is visible"})
    init_from: str = field(default="", metadata={"help": "continue from this checkpoint (its tokenizer is kept)"})


def tokenize_rows(rows, tokenizer, *, max_length: int) -> list[dict]:
    """Prompt + target + EOS per row, labels ``-100`` on the prompt. Rows longer than ``max_length`` raise."""
    examples = []
    for row in rows:
        prompt, target = render_training_text(row)
        p_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        t_ids = tokenizer(target, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        ids = p_ids + t_ids
        if len(ids) > max_length:
            raise ValueError(f"row {row['id']} is {len(ids)} tokens, over the model's {max_length}")
        examples.append({"input_ids": ids, "labels": [-100] * len(p_ids) + t_ids})
    return examples


def run_pretrain_tiny(cfg: PretrainConfig, shape: TinyModelShape = TinyModelShape()) -> Path:
    """Train (or, with ``init_from``, continue training) the tiny teacher; ``shape`` is ignored when continuing."""
    torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.output_dir)
    started = time.time()
    run_provenance = provenance()  # now: the checkpoint written into the tree would make it "+dirty" later
    rows = synthetic_dataset("train", n_per_subtask=cfg.n_per_subtask, seed=cfg.seed)
    earlier_stages = []
    if cfg.init_from:
        tokenizer = AutoTokenizer.from_pretrained(cfg.init_from)
        model = AutoModelForCausalLM.from_pretrained(cfg.init_from, dtype=torch.float32)
        earlier = json.loads((Path(cfg.init_from) / "pretrain_record.json").read_text())
        earlier_stages = earlier.pop("earlier_stages", []) + [earlier]
    else:
        tokenizer = train_tokenizer((p + t for p, t in map(render_training_text, rows)),
                                    vocab_size=shape.vocab_size)
        model = build_tiny_llama(shape, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                 seed=cfg.seed)
    train = tokenize_rows(rows, tokenizer, max_length=shape.max_positions)
    print(f"tiny teacher: {sum(p.numel() for p in model.parameters()):,} parameters, {len(train):,} rows")

    args_bf16 = default_bf16(use_cpu=cfg.use_cpu) if cfg.bf16 is None else cfg.bf16
    args = TrainingArguments(
        output_dir=str(out / "_trainer"), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=cfg.warmup_steps,
        weight_decay=0.01, adam_beta2=0.98, max_grad_norm=1.0, logging_steps=50, save_strategy="no",
        report_to="none", seed=cfg.seed, data_seed=cfg.seed, use_cpu=cfg.use_cpu or not gpu_visible(),
        dataloader_num_workers=0,
        bf16=args_bf16,
        train_sampling_strategy="group_by_length", disable_tqdm=False)
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
    result = trainer.train()

    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / "_trainer", ignore_errors=True)
    record = provenance_record(run_provenance, **{
        "config": asdict(cfg) | {"bf16": args_bf16, "shape": asdict(shape) if not cfg.init_from else "from init_from"},
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_rows": len(train),
        "final_train_loss": result.training_loss,
        "loss_history": [h for h in trainer.state.log_history if "loss" in h],
        "wall_time_s": round(time.time() - started, 1),
        "total_wall_time_s": round(time.time() - started + sum(e["wall_time_s"] for e in earlier_stages), 1),
        "earlier_stages": earlier_stages,
    })
    RunFolder(out).write_json("pretrain_record.json", record)
    print(json.dumps({k: v for k, v in record.items() if k not in ("loss_history", "earlier_stages")}, indent=1))
    return out
