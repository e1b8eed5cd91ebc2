"""Training runs side by side at equal steps: binned means of their logged metrics (the recipe:
``selfdistill.train.compare_runs``).

    python scripts/compare_runs.py --runs runs/a runs/b --labels a b
    python scripts/compare_runs.py --runs 9f8dacf:selfdistill/assets/smollm2_135m_mtp/metrics.jsonl \\
        selfdistill/assets/smollm2_135m_mtp --labels k2-16 k2-5 --out results/ablations/smollm2_k_range.md
"""

if __name__ == "__main__":
    from selfdistill.cli import parse_config
    from selfdistill.train.compare_runs import CompareConfig, check_config, run_compare_runs

    run_compare_runs(parse_config(CompareConfig, check=check_config, prog="compare_runs.py",
                                  description=__doc__.split("\n\n")[0]))
