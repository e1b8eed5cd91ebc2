"""Cost of one training step, side by side in one run: plain next-token SFT, online distillation with a full

Usage and options: ``python scripts/bench_train.py --help``; the recipe is :mod:`selfdistill.train.bench`.
"""

from selfdistill.train.bench import parse_args, run_bench_train

if __name__ == "__main__":
    run_bench_train(parse_args())
