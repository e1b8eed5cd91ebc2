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
``report_to: wandb``). The final checkpoint in ``output_dir`` loads with ``selfdistill.load_model`` (a gated LoRA
run saves an adapter folder; a full fine-tune also loads with ``AutoModelForCausalLM``). At the end,
``<output_dir>/run_record.json`` holds the command, the commit the run started from, hardware, versions, wall
time, steps, tokens consumed and the first and last logged metrics, and for a warm start (``init_adapter``) the
lineage of runs behind the adapter with their totals (``selfdistill/train/run_record.py``). The recipe:
``selfdistill.train.online_distill``.
"""

if __name__ == "__main__":
    from selfdistill.train.online_distill import main

    main(description=__doc__.split("\n\n")[0])
