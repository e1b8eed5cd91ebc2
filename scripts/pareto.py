"""Accuracy vs speed sweep of one model: ConfAdapt thresholds, static k, lossless verify and the plain
``model.generate`` baseline, over task suites; Pareto frontier per task. See docs/pareto.md.

    python scripts/pareto.py                      # the shipped tiny student: synthetic + bbh_learnt (CPU, <15 min)
    python scripts/pareto.py --model tiny-teacher --add_mask_token --name tiny_teacher_step0   # undistilled baseline
    python scripts/pareto.py --model tiny-teacher --static False --conf_adapt False --verify False --limit 100 \\
        --name tiny_teacher                           # plain greedy accuracy only (the teacher's record)
    python scripts/pareto.py --model path/to/ckpt --tasks gsm8k bbh --limit 200 --prompt_style few_shot \\
        --batch_size 1 --dtype float32 --device cuda --max_new_tokens 512 --name llama_gsm8k_bbh
    python scripts/pareto.py --tasks metamathqa --data_path meta-math/MetaMathQA ...   # hub copy (GPU machine)

Writes ``results/<name>/``: ``summary.csv``, ``summary.json`` (with command, commit, hardware, versions),
``frontier.md``, ``plots/<task>.png``, ``samples/<task>__<setting>.jsonl[.gz]`` and ``runs/`` (what makes a
re-run skip finished (task, setting) pairs; ``--overwrite`` redoes them).
"""

from selfdistill.cli import parse_config
from selfdistill.eval.pareto import ParetoConfig, check_config, run_pareto

if __name__ == "__main__":
    run_pareto(parse_config(ParetoConfig, check=check_config, prog="pareto.py", description=__doc__.split("\n\n")[0]))
