"""On-policy training text: the base model's own greedy answers to a dataset's train questions

Usage and options: ``python scripts/onpolicy_data.py --help``; the recipe is :mod:`selfdistill.data.onpolicy_run`.
"""

from selfdistill.data.onpolicy_run import parse_args, run_onpolicy_data

if __name__ == "__main__":
    run_onpolicy_data(parse_args())
