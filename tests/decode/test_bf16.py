"""bf16 decoding runs with every strategy (the configs and README use bf16), on CPU (training steps in bf16:
tests/train/test_bf16_steps.py).

Rule for "lossless" in bf16 (README, docs/results.md): a multi-token pass rounds differently from a one-token
pass, so lossless output is as exact as bf16 greedy itself; here it must equal bf16 ``generate`` on at least as many
prompts as bf16 ``generate`` equals fp32 ``generate``, less one.
"""

import torch

from selfdistill.decode.decoder import mtp_generate
from selfdistill.models.loader import load_model
from support import attach_random_adapter

PROMPTS = [f"Question: Tom has {i} apples and gets {i + 3} more. How many apples does he have?\nAnswer:"
           for i in range(6)]
STRATEGIES = [dict(strategy="static", k=2), dict(strategy="conf_adapt", threshold=0.9, k_max=4),
              dict(strategy="verify", k_max=4), dict(strategy="quadratic", k_max=4),
              dict(strategy="hedged", k_max=4)]


def _greedy(model, ids, n=24):
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def test_the_tiny_student_decodes_in_bf16_with_every_strategy_and_lossless_keeps_to_the_rule():
    fp32, tok = load_model("tiny-student", dtype="float32")
    bf16, _ = load_model("tiny-student", dtype="bfloat16")
    prompts = [tok(p, add_special_tokens=False).input_ids for p in PROMPTS]
    greedy16 = [_greedy(bf16, p) for p in prompts]
    floor = sum(a == b for a, b in zip(greedy16, [_greedy(fp32, p) for p in prompts]))
    for options in STRATEGIES:
        out = mtp_generate(bf16, prompts, max_new_tokens=24, eos_token_id=[], **options)
        assert all(len(s) == 24 for s in out.sequences), options
        if options["strategy"] in ("verify", "quadratic", "hedged"):
            same = sum(a == b for a, b in zip(out.sequences, greedy16))
            assert same >= floor - 1, (options, same, floor)


def test_a_gated_model_decodes_in_bf16():
    model, tok = load_model("tiny-teacher", dtype="bfloat16")
    vocab = model.get_input_embeddings().weight.shape[0]
    attach_random_adapter(model, tok, base_vocab_size=vocab, std=0.05)
    prompts = [tok(p, add_special_tokens=False).input_ids for p in PROMPTS[:2]]
    for options in STRATEGIES:
        out = mtp_generate(model.eval(), prompts, max_new_tokens=12, eos_token_id=[], **options)
        assert all(len(s) == 12 for s in out.sequences), options

