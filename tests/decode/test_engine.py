"""Continuous batching is exact: every request's output equals decoding its prompt alone (float64, Llama and Qwen3,
sdpa and eager, every engine strategy), with prompts of different lengths, rows finishing at different times, more
prompts than slots, requests joining mid-flight and requests cancelled."""

import pytest
import torch
from test_decoding import ARCHS, ATTNS, NO_EOS, collapsed_model, make_prompts, peaked_model

from selfdistill.decode.decoder import mtp_generate
from selfdistill.decode.engine import DecodeEngine, generate_many
from selfdistill.decode.registry import make_strategy, strategy_class, strategy_names

CASES = [dict(strategy="static", k=1), dict(strategy="static", k=3),
         dict(strategy="conf_adapt", k_max=8, threshold=0.5), dict(strategy="conf_adapt", k_max=16, threshold=0.7,
                                                                   mask_margin=1),
         dict(strategy="verify", k_max=4, threshold=0.0), dict(strategy="verify", k_max=8, threshold=0.0,
                                                               mask_margin=1)]


def alone(model, prompt, case, *, max_new_tokens, eos):
    out = mtp_generate(model, [prompt], max_new_tokens=max_new_tokens, eos_token_id=eos, **case)
    return out.sequences[0], out.tokens_per_pass[0]


def _eos_for(model, prompts, case):
    """A token that ends some rows early and leaves others running (rows finish at different times)."""
    free = mtp_generate(model, prompts, max_new_tokens=12, eos_token_id=NO_EOS, **case).sequences
    for tok in free[0][2:8]:
        if not all(tok in s for s in free):
            return tok
    return free[0][3]


def check_engine(model, cases, *, slots=3, n=7, seed=21):
    prompts = make_prompts(n, seed=seed, lo=2, hi=12)
    budgets = [6 + (3 * i) % 9 for i in range(n)]  # different budgets too
    for case in cases:
        eos = _eos_for(model, prompts, case)
        engine = DecodeEngine(model, case["strategy"], max_batch=slots, eos_token_id=eos,
                              **{k: v for k, v in case.items() if k != "strategy"})
        ids = [engine.add(p, max_new_tokens=b) for p, b in zip(prompts, budgets)]
        first_step, done, steps = {}, {}, 0
        while engine.has_work:
            steps += 1
            for u in engine.step():
                first_step.setdefault(u.request_id, steps)
                if u.finished:
                    done[u.request_id] = u.completion
            assert engine.running <= slots
        for rid, p, b in zip(ids, prompts, budgets):
            seq, per_pass = alone(model, p, case, max_new_tokens=b, eos=eos)
            assert done[rid].tokens == seq, (case, rid)
            assert done[rid].tokens_per_pass == per_pass, (case, rid)
        assert len({len(c.tokens) for c in done.values()}) > 1, "rows should finish at different times"
        assert max(first_step.values()) > 1, "later prompts should join while others are in flight"


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_continuous_batching_matches_one_at_a_time(arch, attn):
    check_engine(peaked_model(arch, attn), CASES)


@pytest.mark.parametrize("attn", ATTNS)
def test_continuous_batching_with_accepted_drafts(attn):
    """Collapsed model: verify drafts are accepted in part, so rejected-draft holes travel through refills."""
    check_engine(collapsed_model("qwen3", attn, 0.5), [c for c in CASES if c["strategy"] == "verify"], slots=2)


def test_generate_many_keeps_input_order_and_equals_generate():
    model = peaked_model("llama", "sdpa")
    prompts = make_prompts(5, seed=22, lo=2, hi=10)
    out = generate_many(model, prompts, "verify", batch_size=2, max_new_tokens=9, threshold=0.0, k_max=4)
    base = generate_many(model, prompts, "generate", batch_size=2, max_new_tokens=9)
    assert out.sequences == base.sequences
    assert base.forward_passes == [len(s) for s in base.sequences]
    singles = [mtp_generate(model, [p], strategy="verify", threshold=0.0, k_max=4, max_new_tokens=9) for p in prompts]
    assert out.tokens_per_pass == [s.tokens_per_pass[0] for s in singles]


def test_requests_join_and_leave_without_disturbing_others():
    model = peaked_model("qwen3", "sdpa")
    prompts = make_prompts(5, seed=23, lo=3, hi=9)
    case = dict(strategy="conf_adapt", k_max=8, threshold=0.5)
    engine = DecodeEngine(model, "conf_adapt", k_max=8, threshold=0.5, max_batch=2, eos_token_id=NO_EOS)
    first = [engine.add(p, max_new_tokens=12) for p in prompts[:3]]
    updates = engine.step() + engine.step()
    assert engine.running == 2 and engine.waiting == 1
    assert engine.cancel(first[1]) and engine.cancel(first[2])  # one running, one waiting
    assert not engine.cancel(999)
    late = [engine.add(p, max_new_tokens=12) for p in prompts[3:]]  # join while first[0] is in flight
    streamed = {}
    for u in updates:
        streamed.setdefault(u.request_id, []).extend(u.new_tokens)
    done = {}
    while engine.has_work:
        for u in engine.step():
            streamed.setdefault(u.request_id, []).extend(u.new_tokens)
            if u.finished:
                done[u.request_id] = u.completion
    assert set(done) == {first[0], *late}
    for rid, p in zip([first[0], *late], [prompts[0], *prompts[3:]]):
        assert done[rid].tokens == alone(model, p, case, max_new_tokens=12, eos=NO_EOS)[0]
        assert streamed[rid] == done[rid].tokens  # the updates stream exactly the completion


def test_bad_requests_raise_before_any_forward():
    model = peaked_model("llama", "sdpa")
    engine = DecodeEngine(model, "static", k=2, max_batch=2)
    for prompt, budget, match in (([], 3, "empty prompt"), ([1], 0, "max_new_tokens"), ([1] * 600, 1,
                                                                                         "max_position_embeddings")):
        with pytest.raises(ValueError, match=match):
            engine.add(prompt, max_new_tokens=budget)
    assert not engine.has_work and engine.model_calls == 0
    with pytest.raises(ValueError, match="max_batch"):
        DecodeEngine(model, "static", max_batch=0)
    with pytest.raises(ValueError, match="baseline"):
        DecodeEngine(model, "generate")
    with pytest.raises(ValueError, match="empty prompt in row"):
        generate_many(model, [[1, 2], []], "static", max_new_tokens=3)


@pytest.mark.parametrize("bad", [float("nan"), -0.1, float("inf"), "0.9", True, 1.5, 2])
def test_one_threshold_validation_everywhere(bad):
    from selfdistill.eval.evaluation import DecodeSetting

    model = peaked_model("llama", "sdpa")
    for strategy in ("conf_adapt", "verify"):
        with pytest.raises(ValueError, match="threshold"):
            make_strategy(strategy, threshold=bad)
        with pytest.raises(ValueError, match="threshold"):
            mtp_generate(model, [[1, 2]], strategy=strategy, threshold=bad, max_new_tokens=3)
        with pytest.raises(ValueError, match="threshold"):
            DecodeSetting(strategy=strategy, threshold=bad)


def test_registry_declares_every_strategy():
    names = strategy_names()
    assert names[:6] == ("generate", "generate_cb", "static", "conf_adapt", "verify", "quadratic")
    assert len({strategy_class(name)().setting_name for name in names}) == len(names)  # defaults named apart
    for name in names:
        unit = strategy_class(name)()
        assert unit.needs_mask_token == (unit.num_masks > 0)
    from selfdistill.eval.measured import BENCH_POINTS, SWEEPS

    assert set(BENCH_POINTS) <= set(names) and set(SWEEPS) <= set(names)  # measured strategies are registered
    for name, points in BENCH_POINTS.items():
        for point in points:
            strategy_class(name)(**point)  # the benchmark's points are valid option sets
    assert make_strategy("static", k=3).setting_name == "static_k3"
    assert make_strategy("conf_adapt", threshold=0.9, mask_margin=2).setting_name == "conf_adapt_0.9_kmax16_margin2"
    assert not make_strategy("static").needs_mask_token and make_strategy("static", k=2).needs_mask_token
    assert make_strategy("verify").threshold == 0.0 and make_strategy("conf_adapt").threshold == 0.9
    # a lossless mode names a draft threshold other than its default (every mask prediction drafted)
    assert make_strategy("verify", k_max=5).setting_name == "verify_kmax5"
    assert make_strategy("verify", k_max=5, threshold=0.9).setting_name == "verify_kmax5_t0.9"
    assert make_strategy("hedged", k_max=5, threshold=0.5, lead_groups=2).setting_name == "hedged2_kmax5_t0.5"
    with pytest.raises(ValueError, match="takes no option k"):
        make_strategy("conf_adapt", k=2)
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("beam")
    with pytest.raises(AttributeError):
        make_strategy("static").k = 2
    assert make_strategy("static", k=2) == make_strategy("static", k=2) != make_strategy("static", k=3)
    assert make_strategy("quadratic", k_max=4).lossless and make_strategy("quadratic").group_anchors(3) == (0, 1, 2, 3)


def test_sweep_reads_the_registry():
    from selfdistill.eval.sweep import SweepGrid, sweep_settings, sweep_strategies

    assert "quadratic" in sweep_strategies() and "generate_cb" not in sweep_strategies()
    grid = SweepGrid(static_k=(2,), thresholds=(0.9,), k_max=4)
    assert [s.name for s in sweep_settings(grid=grid)] == ["generate", "static_k2", "conf_adapt_0.9_kmax4",
                                                           "verify_kmax4"]
    assert [s.name for s in sweep_settings(["quadratic", "verify"], grid=grid)] == ["verify_kmax4",
                                                                                    "quadratic_kmax4"]
    with pytest.raises(ValueError, match="unknown sweep strategies"):
        sweep_settings(["generate_cb"], grid=grid)


@pytest.mark.parametrize("case, warns", [(dict(strategy="conf_adapt", k_max=6), True),
                                         (dict(strategy="conf_adapt", k_max=5), False),
                                         (dict(strategy="verify", k_max=8), True), (dict(strategy="static", k=6), True),
                                         (dict(strategy="static", k=5), False),
                                         (dict(strategy="quadratic", k_max=5), False)])
def test_reading_slots_past_the_trained_k_max_warns(case, warns):
    import copy
    import warnings

    from selfdistill.models.mask_token import set_trained_k_max

    model = copy.deepcopy(peaked_model("llama", "sdpa"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DecodeEngine(model, **case)  # a model that does not say what it was trained on: no warning
    set_trained_k_max(model, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = DecodeEngine(model, **case)
    positions = case.get("k_max", case.get("k"))
    assert [str(w.message) for w in caught if "untrained" in str(w.message)] == (
        [f"{engine.strategy!r} reads {positions} positions per pass but this model was trained on chunks of at most "
         "5 tokens (config.mtp_trained_k_max): slots past 5 are untrained; pass k_max=5 (static: k <= 5)"]
        if warns else [])


def test_an_unset_k_max_is_the_models_trained_one():
    """make_strategy(trained_k_max=...) and every engine entry point: a model that records its trained k_max is
    decoded at that k_max unless the caller says otherwise; strategies without k_max are unaffected."""
    import copy
    import warnings

    from selfdistill.decode.registry import make_strategy
    from selfdistill.models.mask_token import set_trained_k_max

    assert make_strategy("conf_adapt", trained_k_max=5).k_max == 5
    assert make_strategy("verify", k_max=8, trained_k_max=5).k_max == 8  # the caller's value wins
    assert make_strategy("conf_adapt", trained_k_max=None).k_max == make_strategy("conf_adapt").k_max == 16
    assert make_strategy("static", k=3, trained_k_max=5).k == 3  # takes no k_max: nothing to fill in
    model = copy.deepcopy(peaked_model("llama", "sdpa"))
    set_trained_k_max(model, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "untrained slots" warning: the default reads only trained slots
        assert DecodeEngine(model, "verify").strategy.k_max == 4
        out = mtp_generate(model, torch.tensor([[1, 2, 3]]), strategy="conf_adapt", max_new_tokens=6)
    assert max(out.tokens_per_forward) <= 4


def test_takes_option():
    from selfdistill.decode.registry import takes_option

    assert takes_option("conf_adapt", "k_max") and takes_option("static", "k")
    assert not takes_option("static", "k_max") and not takes_option("generate", "k_max")
    with pytest.raises(ValueError, match="unknown strategy"):
        takes_option("nope", "k_max")


def test_a_row_in_its_first_pass_is_the_engines_work_and_can_be_cancelled_there():
    """While a newcomer's prefill runs it is in neither queue: the engine must still own it (has_work, so a
    scheduler does not evict the engine under it) and cancel it, after which it takes no further pass."""
    model = peaked_model("llama", "sdpa")
    engine = DecodeEngine(model, "static", k=2, max_batch=4)
    rid = engine.add([5, 6, 7], max_new_tokens=40)
    seen = {}

    def during_prefill(module, args, kwargs, output):
        if "has_work" not in seen:
            seen["has_work"], seen["cancelled"] = engine.has_work, engine.cancel(rid)

    handle = model.register_forward_hook(during_prefill, with_kwargs=True)
    try:
        engine.step()  # the prefill pass; the hook runs inside it
        engine.step()  # the cancelled row leaves before this pass
    finally:
        handle.remove()
    assert seen == {"has_work": True, "cancelled": True}
    assert not engine.has_work and engine.model_calls == 1
    engine.add([1, 2], max_new_tokens=2, request_id=7)
    with pytest.raises(ValueError, match="already in this engine"):  # two completions must never share an id
        engine.add([1, 2], max_new_tokens=2, request_id=7)
