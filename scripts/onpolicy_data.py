"""On-policy training text: the base model's own greedy answers to a dataset's train questions (or to user turns it
writes itself, ``--dataset magpie``), as a folder the trainer reads with ``dataset: onpolicy:<folder>`` (the recipe:
``selfdistill.eval.onpolicy_data``).

    python scripts/onpolicy_data.py --model smollm2-135m-instruct --dataset gsm8k --limit 1000 \\
        --chat_template true --out runs/data/gsm8k_onpolicy_smollm2
    python scripts/onpolicy_data.py --model smollm2-135m-instruct --dataset magpie --limit 1000 \\
        --chat_template true --out runs/data/magpie_smollm2
    python scripts/online_distill.py --config configs/smollm2_135m_gated_k5_onpolicy.yaml
"""

if __name__ == "__main__":
    from selfdistill.cli import parse_config
    from selfdistill.eval.onpolicy_data import OnPolicyConfig, check_config, run_onpolicy_data

    run_onpolicy_data(parse_config(OnPolicyConfig, check=check_config, prog="onpolicy_data.py",
                                   description=__doc__.split("\n\n")[0]))
