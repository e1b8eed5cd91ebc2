"""Online self-distillation of a causal LM into a multi-token predictor (METHOD.md sections 1-4).

Launch (the YAML gives every field of :class:`selfdistill.distill_trainer.DistillConfig`; CLI flags override it;
with no ``--config`` the CPU demo ``configs/tiny.yaml`` is used)::

    python scripts/online_distill.py                                   # tiny teacher, synthetic data, CPU
    python scripts/online_distill.py --config configs/tiny.yaml --max_steps 50 --output_dir runs/tiny
    accelerate launch --config_file configs/accelerate/cpu_ddp_2proc.yaml scripts/online_distill.py --config configs/tiny.yaml
    accelerate launch --config_file configs/accelerate/fsdp_multi_gpu.yaml scripts/online_distill.py \\
        --config configs/llama31_8b_magpie.yaml
    accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml scripts/online_distill.py \\
        --config configs/qwen3_4b_instruct.yaml
    # resume exactly where a run stopped:
    accelerate launch ... scripts/online_distill.py --config configs/X.yaml --resume_from_checkpoint runs/X/checkpoint-2000

The resolved configuration is written to ``<output_dir>/distill_config.yaml``; metrics go to
``<output_dir>/metrics.jsonl`` (and to wandb, offline unless ``WANDB_MODE`` says otherwise, when
``report_to: wandb``). The final checkpoint in ``output_dir`` loads with ``AutoModelForCausalLM``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

from selfdistill.distill_trainer import DistillConfig, run_distillation

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
RESOLVED_CONFIG = "distill_config.yaml"


def parse_config(argv: list[str] | None = None) -> DistillConfig:
    """``DistillConfig`` from ``--config X.yaml`` (default :data:`DEFAULT_CONFIG`) plus CLI overrides."""
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:
        argv = ["--config", str(DEFAULT_CONFIG)] + argv
    (cfg,) = TrlParser((DistillConfig,)).parse_args_and_config(argv)
    return cfg


def save_resolved_config(cfg: DistillConfig) -> Path:
    """Write every field of ``cfg`` to ``<output_dir>/distill_config.yaml`` (main process only)."""
    path = Path(cfg.output_dir) / RESOLVED_CONFIG
    if cfg.process_index == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(json.loads(cfg.to_json_string()), sort_keys=True))
    return path


def main(cfg: DistillConfig):
    save_resolved_config(cfg)
    return run_distillation(cfg)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(parse_config())
