"""Decoding speed benchmark: ``model.generate`` (greedy) vs the multi-token decoder, side by side.

Usage and options: ``python scripts/bench_decode.py --help``; the recipe is :mod:`selfdistill.eval.bench_decode`.
"""

from selfdistill.eval.bench_decode import parse_args, run_bench_decode

if __name__ == "__main__":
    run_bench_decode(parse_args())
