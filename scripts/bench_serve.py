"""Serving benchmark: the OpenAI-compatible server under real HTTP load, plain decoding vs multi-token settings.

Usage and options: ``python scripts/bench_serve.py --help``; the recipe is :mod:`selfdistill.serve.bench`.
"""

from selfdistill.serve.bench import run_bench_serve

if __name__ == "__main__":
    run_bench_serve()
