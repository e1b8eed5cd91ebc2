"""Gated-LoRA layers before and after a change, side by side in one process: the shipped SmolLM2 adapter applied
with today's layers and with the layers of an earlier commit (read from git), each timed on the decoder's pass
shape (``--real`` real tokens then ``--masks`` masks over a warm cache), interleaved, with the bare one-token and
all-real forwards beside them. Prints median ms and each relative to its one-token forward, and checks that both
give the same logits (the recipe: ``selfdistill.eval.bench_gated_layers``).

    python scripts/bench_gated_layers.py --before 989898b --dtype bfloat16 --out results/bench_decode/gated_layers_epyc
"""

if __name__ == "__main__":
    from selfdistill.eval.bench_gated_layers import run_bench_gated_layers

    run_bench_gated_layers()
