"""Quadratic decoding (Apple, arXiv 2507.11851; METHOD.md section 5) and hedged verify (its groups after the first
provisional tokens only) against an independent no-cache reference and ``generate``: lossless, and after a partial
rejection the next pass still has fresh drafts."""

import pytest
import torch
from test_decoding import ARCHS, ATTNS, EOS, MASK, NO_EOS, collapsed_model, greedy_reference, make_prompts, \
    peaked_model
from test_engine import check_engine

from selfdistill.decode.blocks import block_layout
from selfdistill.decode.decoder import mtp_generate
from selfdistill.decode.registry import make_strategy
from selfdistill.decode.strategies import Fed
from selfdistill.models.attention import dense_mask_for


@torch.no_grad()
def naive_quadratic(model, prompt, *, k_max, threshold, max_new_tokens, eos=(), mask_margin=None, lead_groups=None,
                    mask_id=MASK):
    """One row, no KV cache: every pass feeds prompt + output + drafts, then one group of masks after each
    provisional token (the last verified one and every draft), with a full attention mask built here:
    real tokens causal; group j sees the real tokens up to its anchor and itself causally, no other group.
    ``lead_groups`` (hedged verify): groups only after the first ``lead_groups`` provisional tokens and after the
    last draft; after a rejection past them there are no new drafts."""
    out, drafts, per_pass, reach = [], [], [], k_max - 1
    impl = model.config._attn_implementation
    while True:
        remaining = max_new_tokens - len(out)
        g = max(0, min(reach, remaining - 1))
        real = prompt + out + drafts
        first = len(prompt) + len(out) - 1  # the last verified token
        provisional = list(range(len(drafts) + 1)) if lead_groups is None else sorted(
            set(range(min(lead_groups, len(drafts)))) | {len(drafts)})
        anchors = [first + j for j in provisional]
        n, length = len(real), len(real) + g * len(anchors)
        allowed = torch.zeros(length, length, dtype=torch.bool)
        allowed[:n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
        positions = list(range(n))
        for j, a in enumerate(anchors):
            cols = range(n + j * g, n + (j + 1) * g)
            for o, c in enumerate(cols):
                allowed[c, :a + 1] = True
                allowed[c, n + j * g:c + 1] = True
            positions += range(a + 1, a + 1 + g)
        ids = torch.tensor([real + [mask_id] * (length - n)])
        mask = dense_mask_for(allowed[None, None], attn_implementation=impl, dtype=model.dtype)
        probs = model(ids, attention_mask=mask, position_ids=torch.tensor([positions])).logits[0].softmax(-1)
        top_p, top_i = (t.tolist() for t in probs.max(-1))
        a = 0
        while a < len(drafts) and drafts[a] == top_i[first + a]:
            a += 1
        chunk = (drafts[:a] + [top_i[first + a]])[:remaining]
        j = provisional.index(a) if a in provisional else None
        group = range(n + j * g, n + (j + 1) * g) if j is not None else ()
        new_drafts = []
        for c in group:
            if top_p[c] < threshold or (mask_margin is not None and len(new_drafts) >= reach):
                break
            new_drafts.append(top_i[c])
        stop = any(t in eos for t in chunk)
        if stop:
            chunk = chunk[:next(i for i, t in enumerate(chunk) if t in eos) + 1]
        out += chunk
        per_pass.append(len(chunk))
        if stop or len(out) >= max_new_tokens:
            return out, per_pass
        drafts = new_drafts[:max(max_new_tokens - len(out) - 1, 0)]
        if mask_margin is not None:
            reach = min(k_max - 1, len(drafts) + mask_margin)


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_cached_quadratic_matches_naive_and_generate(arch, attn):
    counts = set()
    for model in (peaked_model(arch, attn), collapsed_model(arch, attn, 0.5)):
        for prompt in make_prompts(2, seed=31):
            expected = greedy_reference(model, prompt, 14)
            for k_max, thr, margin in ((3, 0.0, None), (5, 0.3, None), (6, 0.0, 1)):
                ref, ref_pass = naive_quadratic(model, prompt, k_max=k_max, threshold=thr, max_new_tokens=14,
                                                eos=(EOS,), mask_margin=margin)
                got = mtp_generate(model, [prompt], strategy="quadratic", k_max=k_max, threshold=thr,
                                   max_new_tokens=14, mask_margin=margin)
                assert got.sequences[0] == ref, (k_max, thr, margin)
                assert got.tokens_per_pass[0] == ref_pass, (k_max, thr, margin)
                assert got.sequences[0] == expected  # lossless: greedy generate (which stops at the model's EOS)
                counts.update(ref_pass[1:-1])
    assert 1 in counts and len(counts - {1}) >= 2, counts  # rejections, partial and full accepts


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_continuous_batching_quadratic_matches_one_at_a_time(arch, attn):
    check_engine(collapsed_model(arch, attn, 0.5), [dict(strategy="quadratic", k_max=4, threshold=0.0),
                                                    dict(strategy="quadratic", k_max=6, threshold=0.2,
                                                         mask_margin=1)], slots=3)


def test_quadratic_keeps_drafting_after_partial_rejections():
    """Where linear verify has to start over after a partial rejection, quadratic's group after the accepted prefix
    already drafted: fewer passes for the same output (a random model rarely accepts a draft, so few cases)."""
    model = collapsed_model("llama", "sdpa", 0.5)
    lin_passes = quad_passes = 0
    for prompt in make_prompts(4, seed=32):
        common = dict(k_max=4, threshold=0.0, max_new_tokens=24, eos_token_id=NO_EOS)
        lin = mtp_generate(model, [prompt], strategy="verify", **common)
        quad = mtp_generate(model, [prompt], strategy="quadratic", **common)
        assert quad.sequences == lin.sequences
        lin_passes += lin.forward_passes[0]
        quad_passes += quad.forward_passes[0]
    assert quad_passes < lin_passes


def _fed_widths(strategy: str) -> tuple[list[int], list[int], int]:
    """Decode 7 tokens at k_max 3 with every draft accepted: (tokens per pass, widths fed per pass, prompt length)."""
    model = collapsed_model("qwen3", "sdpa", 0.05)  # every draft accepted
    fed = []
    handle = model.register_forward_pre_hook(lambda mod, args, kw: fed.append(kw["input_ids"].shape[-1]),
                                             with_kwargs=True)
    try:
        prompt = make_prompts(1, seed=33)[0]
        out = mtp_generate(model, [prompt], strategy=strategy, k_max=3, threshold=0.0, max_new_tokens=7,
                           eos_token_id=NO_EOS)
    finally:
        handle.remove()
    return out.tokens_per_pass[0], fed, len(prompt)


def test_quadratic_feeds_one_group_per_provisional_token():
    """By hand on the fed widths: a pass feeds the pending tokens + (drafts + 1) groups of k_max - 1 masks."""
    per_pass, fed, prompt_len = _fed_widths("quadratic")
    # prefill: prompt + 1 group of 2 masks; then [correction, d1, d2] + 3 groups of 2
    assert per_pass == [1, 3, 3]
    assert fed == [prompt_len + 2, 3 + 3 * 2, 3 + 3 * 2]


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_cached_hedged_matches_naive_and_generate(arch, attn):
    counts = set()
    for model in (peaked_model(arch, attn), collapsed_model(arch, attn, 0.5)):
        for prompt in make_prompts(2, seed=34):
            expected = greedy_reference(model, prompt, 14)
            for k_max, thr, margin, lead in ((4, 0.0, None, 1), (5, 0.3, None, 2), (6, 0.0, 1, 1)):
                ref, ref_pass = naive_quadratic(model, prompt, k_max=k_max, threshold=thr, max_new_tokens=14,
                                                eos=(EOS,), mask_margin=margin, lead_groups=lead)
                got = mtp_generate(model, [prompt], strategy="hedged", k_max=k_max, threshold=thr,
                                   max_new_tokens=14, mask_margin=margin, lead_groups=lead)
                assert got.sequences[0] == ref, (k_max, thr, margin, lead)
                assert got.tokens_per_pass[0] == ref_pass, (k_max, thr, margin, lead)
                assert got.sequences[0] == expected
                counts.update(ref_pass[1:-1])
    assert 1 in counts and len(counts - {1}) >= 2, counts


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_continuous_batching_hedged_matches_one_at_a_time(arch, attn):
    check_engine(collapsed_model(arch, attn, 0.5), [dict(strategy="hedged", k_max=5, threshold=0.0),
                                                    dict(strategy="hedged", k_max=6, threshold=0.2,
                                                         mask_margin=1, lead_groups=2)], slots=3)


def test_hedged_with_every_lead_group_is_quadratic():
    """``lead_groups >= k_max - 1``: a group after every provisional token, so quadratic decoding pass for pass."""
    model = collapsed_model("llama", "sdpa", 0.5)
    for prompt in make_prompts(4, seed=32):
        common = dict(k_max=4, threshold=0.0, max_new_tokens=24, eos_token_id=NO_EOS)
        quad = mtp_generate(model, [prompt], strategy="quadratic", **common)
        for lead in (3, 5):
            full = mtp_generate(model, [prompt], strategy="hedged", lead_groups=lead, **common)
            assert full.sequences == quad.sequences and full.tokens_per_pass == quad.tokens_per_pass


def _accept_by_hand(strategy, target, groups):
    """One row fed [c, d1, d2] (drafts 11, 12; the last verified token c): the outcome when the next-token argmax
    at c, d1, d2 is ``target`` and each mask group predicts its ``groups`` tokens confidently."""
    vocab, pending = 40, [10, 11, 12]
    layout = block_layout([pending], [2], [5], n_masks=2, group_anchors=strategy.group_anchors(2), mask_id=39)
    columns = target + [t for group in groups for t in group]
    logits = torch.full((1, len(columns), vocab), -10.0)
    logits[0, range(len(columns)), columns] = 10.0
    fed = Fed(layout, [pending], [2], torch.tensor([[11, 12]]), torch.tensor([2]), torch.tensor([2]))
    return strategy.accept(logits, fed)[0]


def test_hedged_drafts_after_a_rejection_at_its_lead_groups_only_by_hand():
    hedged, verify = make_strategy("hedged", k_max=3, threshold=0.5), make_strategy("verify", k_max=3, threshold=0.5)
    # groups (0, None): group 0 (after c) predicts 20, 21; the last group (after d2) 30, 31
    rejected_first = _accept_by_hand(hedged, [7, 12, 13], [[20, 21], [30, 31]])  # d1 = 11 rejected: correction 7
    assert (rejected_first.chunk, rejected_first.pending, rejected_first.drafts, rejected_first.kept) == (
        [7], [7, 20, 21], 2, 1)
    all_accepted = _accept_by_hand(hedged, [11, 12, 13], [[20, 21], [30, 31]])
    assert (all_accepted.chunk, all_accepted.pending, all_accepted.drafts) == ([11, 12, 13], [13, 30, 31], 2)
    rejected_second = _accept_by_hand(hedged, [11, 8, 13], [[20, 21], [30, 31]])  # past the lead group: none
    assert (rejected_second.chunk, rejected_second.pending, rejected_second.drafts) == ([11, 8], [8], 0)
    # verify, the same rejection: no drafts (its only group sat after the rejected draft)
    assert _accept_by_hand(verify, [7, 12, 13], [[30, 31]]).pending == [7]


def test_hedged_feeds_its_groups_by_hand():
    """Every draft accepted: a pass feeds [correction, d1, d2] + a group after the last verified token and one
    after d2 (lead_groups 1), each of k_max - 1 masks; quadratic would feed 3 groups."""
    per_pass, fed, prompt_len = _fed_widths("hedged")
    assert per_pass == [1, 3, 3]
    assert fed == [prompt_len + 2, 3 + 2 * 2, 3 + 2 * 2]
