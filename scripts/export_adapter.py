"""Copy a gated-LoRA adapter folder (a finished run's ``output_dir``) with its tensors in bf16, beside its run
record, config and metrics, so it can be committed and continued elsewhere (``init_adapter``).

    python scripts/export_adapter.py runs/smollm2_k5_cont1 results/smollm2_k5_cont1/adapter
"""

from __future__ import annotations

import argparse

import torch

from selfdistill.models.gated_lora import export_adapter

RUN_FILES = ("run_record.json", "distill_config.yaml", "metrics.jsonl")

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source")
    p.add_argument("destination")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    args = p.parse_args()
    out = export_adapter(args.source, args.destination, dtype=getattr(torch, args.dtype), extra_files=RUN_FILES)
    print(f"wrote {out}")
