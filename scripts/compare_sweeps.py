"""Two decoding sweeps of the same prompts side by side, item by item, with paired standard errors (the recipe:
``selfdistill.eval.compare_sweeps``).

    python scripts/compare_sweeps.py --sweeps results/smollm2-135m-mtp-750 results/ablations/smollm2_nospace_750 \\
        --labels shipped nospace --task gsm8k --out results/ablations/smollm2_nospace_750.md
"""

if __name__ == "__main__":
    from selfdistill.cli import parse_config
    from selfdistill.eval.compare_sweeps import CompareSweepsConfig, check_config, run_compare_sweeps

    run_compare_sweeps(parse_config(CompareSweepsConfig, check=check_config, prog="compare_sweeps.py",
                                    description=__doc__.split("\n\n")[0]))
