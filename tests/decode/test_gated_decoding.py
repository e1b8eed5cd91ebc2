"""Decoding with a gated adapter that accepts several tokens per pass (#32): gated LoRA trained briefly on the
tiny teacher (the demo recipe, 150 steps), in float64. ConfAdapt, static k, verify, quadratic and hedged each match
their independent no-cache reference (the masks gated by the model's own search of the ids, where the engine
declares them), each emits several tokens in some pass, and the lossless ones equal the base model's greedy
``generate`` (the adapter acts only at masks)."""

import pytest
from test_decoding import greedy_reference, naive_decode
from test_quadratic import naive_quadratic

from selfdistill.data.prompts import render_prompt
from selfdistill.data.synthetic import synthetic_dataset
from selfdistill.decode.decoder import mtp_generate
from selfdistill.models.loader import load_model
from selfdistill.models.mask_token import mask_token_id_from
from selfdistill.train.online_distill import parse_config, run_online_distill

NEW = 24  # tokens per completion


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """``(gated student, base teacher, mask id, eos id, prompts)`` in float64."""
    out = tmp_path_factory.mktemp("gated_tiny")
    run_online_distill(parse_config(["--output_dir", str(out), "--max_steps", "150", "--logging_steps", "50",
                                     "--synthetic_rows_per_subtask", "100", "--save_strategy", "no",
                                     "--eval_strategy", "no", "--disable_tqdm", "true", "--k_min", "2",
                                     "--k_max", "4", "--warmup_steps", "10"]))
    model, tok = load_model(str(out), dtype="float64")
    base, _ = load_model("tiny-teacher", dtype="float64")
    rows = synthetic_dataset("test", n_per_subtask=2, seed=5)
    prompts = [tok(render_prompt(row)).input_ids for row in rows]
    return model.eval(), base.eval(), mask_token_id_from(model), tok.eos_token_id, prompts


@pytest.mark.slow
@pytest.mark.parametrize("case", [dict(strategy="conf_adapt", k_max=4, threshold=0.6),
                                  dict(strategy="static", k=2), dict(strategy="verify", k_max=4, threshold=0.0)],
                         ids=["conf_adapt", "static", "verify"])
def test_engine_strategies_match_the_naive_reference_and_accept_runs(gated, case):
    model, base, mask, eos, prompts = gated
    longest = 0
    for prompt in prompts:
        ref, per_pass = naive_decode(model, prompt, max_new_tokens=NEW, eos=(eos,), mask_id=mask, **case)
        got = mtp_generate(model, [prompt], max_new_tokens=NEW, **case)
        assert got.sequences[0] == ref and got.tokens_per_pass[0] == per_pass
        if case["strategy"] == "verify":
            assert ref == greedy_reference(base, prompt, NEW)[:len(ref)]
        longest = max(longest, max(per_pass))
    assert longest >= 2  # several tokens in one pass


@pytest.mark.slow
@pytest.mark.parametrize("lead_groups", [None, 1], ids=["quadratic", "hedged"])
def test_quadratic_and_hedged_match_the_naive_reference_and_accept_runs(gated, lead_groups):
    model, base, mask, eos, prompts = gated
    strategy = "quadratic" if lead_groups is None else "hedged"
    extra = {} if lead_groups is None else {"lead_groups": lead_groups}
    longest = 0
    for prompt in prompts:
        ref, per_pass = naive_quadratic(model, prompt, k_max=4, threshold=0.0, max_new_tokens=NEW, eos=(eos,),
                                        mask_id=mask, lead_groups=lead_groups)
        got = mtp_generate(model, [prompt], strategy=strategy, k_max=4, threshold=0.0, max_new_tokens=NEW, **extra)
        assert got.sequences[0] == ref and got.tokens_per_pass[0] == per_pass
        assert ref == greedy_reference(base, prompt, NEW)[:len(ref)]  # lossless: the base model's greedy text
        longest = max(longest, max(per_pass))
    assert longest >= 2

