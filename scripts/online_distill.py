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
time, steps, tokens consumed and the first and last logged metrics, and for a warm start (``init_adapter``) the
lineage of runs behind the adapter with their totals (``selfdistill/train/run_record.py``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from selfdistill.train.config import DistillConfig
from selfdistill.train.run import run_distillation
from selfdistill.train.run_record import write_run_record

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"


def parse_config(argv: list[str] | None = None) -> DistillConfig:
    """``DistillConfig`` from ``--config X.yaml`` (default :data:`DEFAULT_CONFIG`) plus CLI overrides; a bad value
    is a usage error (exit 2) before anything loads."""
    from selfdistill.cli import parse_config as parse

    return parse(DistillConfig, argv, default_config=DEFAULT_CONFIG, prog="online_distill.py",
                 description=__doc__.split("\n\n")[0])


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
    except (TrainingDivergedError, NoLossItemsError, ResumeMismatchError, FileExistsError, FileNotFoundError,
            NotADirectoryError, PermissionError) as err:
        raise SystemExit(f"online_distill.py: error: {err}") from None
