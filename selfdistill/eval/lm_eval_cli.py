"""Run lm-evaluation-harness with our decoder: registers the ``selfdistill`` model, adds the ``sd_*`` task YAMLs,
calls ``lm_eval.simple_evaluate``, prints lm-eval's table with tokens per forward pass beside the metrics, and
writes the results JSON (with provenance) to ``--output_path``.

    python -m selfdistill.lm_eval --model_args pretrained=tiny-student,strategy=conf_adapt,threshold=0.9 \\
        --tasks sd_synthetic,sd_bbh_learnt --limit 20
    python -m selfdistill.lm_eval --model_args pretrained=path/to/ckpt,strategy=static,k=1,dtype=float32 \\
        --tasks sd_gsm8k_cot --batch_size 1 --device cuda --output_path results/lm_eval
    python -m selfdistill.lm_eval --model_args pretrained=path/to/ckpt,strategy=conf_adapt,threshold=0.9 \\
        --tasks gsm8k_cot --device cuda   # lm-eval's own task (hub data, its own prompts and metrics)

Offline data: the ``sd_*`` tasks read ``../shared/data`` (or ``$SELFDISTILL_DATA_DIR``); ``--metadata
'{"gsm8k_path": "openai/gsm8k", "bbh_path": "lukaemon/bbh", "metamathqa_path": "meta-math/MetaMathQA"}'``
switches them to hub copies.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(kw_only=True)
class LmEvalConfig:
    tasks: str = field(metadata={"help": "comma-separated task names (sd_* are ours, offline)"})
    model: str = field(default="selfdistill", metadata={"help": "lm-eval model name (default: our decoder)"})
    model_args: str = field(default="pretrained=tiny-student", metadata={
        "help": "pretrained=...,strategy=<registry name>,<its options: threshold=,k=,k_max=,mask_margin=,"
                "lead_groups=>,dtype=,..."})
    limit: float | None = field(default=None, metadata={"help": "first n documents per task (<1: a fraction)"})
    batch_size: str | None = field(default=None, metadata={"help": "overrides model_args batch_size"})
    device: str | None = field(default=None, metadata={"help": "overrides model_args device"})
    num_fewshot: int | None = None
    gen_kwargs: str | None = field(default=None, metadata={
        "help": "overrides of the tasks' generation kwargs, e.g. max_gen_toks=64"})
    apply_chat_template: bool = False
    include_path: list[str] = field(default_factory=list, metadata={"help": "extra task YAML folders"})
    metadata: str = field(default="{}", metadata={"help": "JSON passed to the tasks (data paths)"})
    output_path: str | None = field(default=None, metadata={"help": "folder for results_<time>.json (and samples)"})
    log_samples: bool = False
    seed: int = 0


def check_args(args: LmEvalConfig) -> None:
    """Option errors, raised before lm-eval, the tasks or the model load: bad JSON, no tasks, an output path that
    is a file or cannot be created, a ``pretrained=`` checkpoint that does not exist."""
    from selfdistill.cli import check_output_folder
    from selfdistill.models.loader import resolve_model_path

    try:
        json.loads(args.metadata)
    except json.JSONDecodeError as err:
        raise ValueError(f"--metadata is not valid JSON: {err}") from None
    if not [t for t in args.tasks.split(",") if t]:
        raise ValueError("--tasks is empty")
    if args.output_path is not None:
        check_output_folder(args.output_path, flag="--output_path")
    pretrained = dict(kv.split("=", 1) for kv in args.model_args.split(",") if "=" in kv).get("pretrained")
    if args.model == "selfdistill" and pretrained:
        resolve_model_path(pretrained)


def main(argv: list[str] | None = None) -> dict:
    from selfdistill.cli import parse_config

    args = parse_config(LmEvalConfig, argv, check=check_args, prog="python -m selfdistill.lm_eval",
                        description=__doc__.split("\n\n")[0])
    metadata = json.loads(args.metadata)
    tasks = [t for t in args.tasks.split(",") if t]

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable, make_table

    from selfdistill.eval.harness import TASKS_DIR, add_decode_metrics  # registers the "selfdistill" model
    from selfdistill.run_folder import RunFolder
    from selfdistill.provenance import provenance

    ours = {p.stem for p in TASKS_DIR.glob("*.yaml")}
    manager = TaskManager(include_path=[str(TASKS_DIR), *args.include_path],
                          include_defaults=not set(tasks) <= ours, metadata=metadata)
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    results = simple_evaluate(model=args.model, model_args=args.model_args, tasks=tasks, limit=limit,
                              batch_size=args.batch_size, device=args.device, num_fewshot=args.num_fewshot,
                              gen_kwargs=args.gen_kwargs, apply_chat_template=args.apply_chat_template,
                              task_manager=manager,
                              log_samples=args.log_samples, random_seed=args.seed, numpy_random_seed=args.seed,
                              torch_random_seed=args.seed, fewshot_random_seed=args.seed)
    if results is None:  # not the main rank
        return {}
    add_decode_metrics(results)
    results["selfdistill_provenance"] = provenance(["-m", "selfdistill.lm_eval", *(argv or sys.argv[1:])])
    print(make_table(results))
    if args.output_path:
        out = Path(args.output_path)
        out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        samples = results.pop("samples", None)
        RunFolder(out).write_text(f"results_{stamp}.json",
                                  json.dumps(results, indent=2, default=handle_non_serializable))
        if samples:
            for task, rows in samples.items():
                with open(out / f"samples_{task}_{stamp}.jsonl", "w") as f:
                    for row in rows:
                        f.write(json.dumps(row, default=handle_non_serializable) + "\n")
            results["samples"] = samples
        print(f"wrote {out / f'results_{stamp}.json'}")
    return results


if __name__ == "__main__":
    main()
