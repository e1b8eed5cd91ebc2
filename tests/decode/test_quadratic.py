"""Quadratic decoding (Apple, arXiv 2507.11851; METHOD.md section 5) against an independent no-cache reference and
``generate``: lossless, and after a partial rejection the next pass still has fresh drafts."""

import pytest
import torch
from test_decoding import ARCHS, ATTNS, EOS, MASK, NO_EOS, collapsed_model, greedy_reference, make_prompts, \
    peaked_model
from test_engine import check_engine

from selfdistill.decode.decoder import mtp_generate
from selfdistill.models.attention import dense_mask_for


@torch.no_grad()
def naive_quadratic(model, prompt, *, k_max, threshold, max_new_tokens, eos=(), mask_margin=None):
    """One row, no KV cache: every pass feeds prompt + output + drafts, then one group of masks after each
    provisional token (the last verified one and every draft), with a full attention mask built here:
    real tokens causal; group j sees the real tokens up to its anchor and itself causally, no other group."""
    out, drafts, per_pass, reach = [], [], [], k_max - 1
    impl = model.config._attn_implementation
    while True:
        remaining = max_new_tokens - len(out)
        g = max(0, min(reach, remaining - 1))
        real = prompt + out + drafts
        first = len(prompt) + len(out) - 1  # the last verified token
        anchors = [first + j for j in range(len(drafts) + 1)]
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
        ids = torch.tensor([real + [MASK] * (length - n)])
        mask = dense_mask_for(allowed[None, None], attn_implementation=impl, dtype=model.dtype)
        probs = model(ids, attention_mask=mask, position_ids=torch.tensor([positions])).logits[0].softmax(-1)
        top_p, top_i = (t.tolist() for t in probs.max(-1))
        a = 0
        while a < len(drafts) and drafts[a] == top_i[anchors[a]]:
            a += 1
        chunk = (drafts[:a] + [top_i[anchors[a]]])[:remaining]
        group = range(n + a * g, n + (a + 1) * g)
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


def test_quadratic_feeds_one_group_per_provisional_token():
    """By hand on the fed widths: a pass feeds the pending tokens + (drafts + 1) groups of k_max - 1 masks."""
    model = collapsed_model("qwen3", "sdpa", 0.05)  # every draft accepted
    fed = []
    handle = model.register_forward_pre_hook(lambda mod, args, kw: fed.append(kw["input_ids"].shape[-1]),
                                             with_kwargs=True)
    try:
        prompt = make_prompts(1, seed=33)[0]
        out = mtp_generate(model, [prompt], strategy="quadratic", k_max=3, threshold=0.0, max_new_tokens=7,
                           eos_token_id=NO_EOS)
    finally:
        handle.remove()
    # prefill: prompt + 1 group of 2 masks; then [correction, d1, d2] + 3 groups of 2
    assert out.tokens_per_pass == [[1, 3, 3]]
    assert fed == [len(prompt) + 2, 3 + 3 * 2, 3 + 3 * 2]
