"""Online self-distillation of a causal LM into a multi-token predictor (METHOD.md sections 1-4).

Launch (the YAML gives every field of :class:`selfdistill.train.config.DistillConfig`; CLI flags override it;
with no ``--config`` the CPU demo ``configs/tiny.yaml`` is used)::

    python scripts/online_distill.py                                   # tiny teacher, synthetic data, CPU
    python scripts/online_distill.py --config configs/tiny.yaml --max_steps 50 --output_dir runs/tiny
    accelerate launch --config_file configs/accelerate/cpu_ddp_2proc.yaml scripts/online_distill.py \\
        --config configs/tiny.yaml
    accelerate launch --config_file configs/accelerate/fsdp_multi_gpu.yaml scripts/online_distill.py \\
        --config configs/llama31_8b_magpie.yaml
    accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml scripts/online_distill.py \\
        --config configs/qwen3_4b_instruct.yaml
    # resume exactly where a run stopped (a checkpoint, or true: the newest in output_dir):
    accelerate launch ... scripts/online_distill.py --config configs/X.yaml \\
        --resume_from_checkpoint runs/X/checkpoint-2000

A used ``output_dir`` is refused unless resuming or ``--overwrite_output_dir true``; a non-finite loss or gradient
stops the run with exit status 1 (docs/training.md: what is checked before the model loads, what resume accepts).

The resolved configuration is written to ``<output_dir>/distill_config.yaml``; metrics go to
``<output_dir>/metrics.jsonl`` (and to wandb, offline unless ``WANDB_MODE`` says otherwise, when
``report_to: wandb``). The final checkpoint in ``output_dir`` loads with ``AutoModelForCausalLM``. At the end,
``<output_dir>/run_record.json`` holds the command, the commit the run started from, hardware, versions, wall
time, steps and the first and last logged metrics.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from selfdistill.train.run_dir import RUN_RECORD
from selfdistill.train.config import DistillConfig
from selfdistill.train.run import run_distillation

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"


def parse_config(argv: list[str] | None = None) -> DistillConfig:
    """``DistillConfig`` from ``--config X.yaml`` (default :data:`DEFAULT_CONFIG`) plus CLI overrides; a bad value
    is a usage error (exit 2) before anything loads."""
    from selfdistill.cli import parse_config as parse

    return parse(DistillConfig, argv, default_config=DEFAULT_CONFIG, prog="online_distill.py",
                 description=__doc__.split("\n\n")[0])


def write_run_record(cfg: DistillConfig, trainer, record: dict, wall_time_s: float) -> Path:
    """``record`` (provenance taken when the run started) plus wall time, steps and the first and last logged
    metrics, written atomically to ``<output_dir>/run_record.json`` by the main process."""
    path = Path(cfg.output_dir) / RUN_RECORD
    if trainer.is_world_process_zero():
        logged = [h for h in trainer.state.log_history if "loss" in h]
        record = record | {"wall_time_s": round(wall_time_s, 1), "steps": trainer.state.global_step,
                           "first_logged": logged[0] if logged else None,
                           "last_logged": logged[-1] if logged else None}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
    return path


def main(cfg: DistillConfig):
    from selfdistill.provenance import provenance

    record = provenance()  # now, so the commit is the one the run started from
    start = time.perf_counter()
    trainer = run_distillation(cfg)
    write_run_record(cfg, trainer, record, time.perf_counter() - start)
    return trainer


if __name__ == "__main__":
    from selfdistill.train.guards import NoLossItemsError, TrainingDivergedError
    from selfdistill.train.run_dir import ResumeMismatchError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        main(parse_config())
    except (TrainingDivergedError, NoLossItemsError, ResumeMismatchError, FileExistsError, FileNotFoundError) as err:
        raise SystemExit(f"online_distill.py: error: {err}") from None
