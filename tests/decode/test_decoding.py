"""Exactness of the cached multi-token decoder against an independent no-cache reference and ``generate``.

All in float64 on tiny random Llama and Qwen3 models, with sdpa and eager attention.
"""

import functools
import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from selfdistill.decode.decoder import mtp_generate, prompt_rows
from selfdistill.models.tiny import tiny_model

ARCHS = ("llama", "qwen3")
ATTNS = ("sdpa", "eager")
VOCAB, EOS, MASK = 97, 95, 96  # tiny_model: eos = vocab - 2, mask = vocab - 1
NO_EOS: list[int] = []


@functools.lru_cache(maxsize=None)
def peaked_model(arch, attn):
    """Random tiny model with sharper output distributions, so confidence thresholds accept runs of tokens."""
    model = tiny_model(arch, attn_implementation=attn)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(6.0)
    return model


@functools.lru_cache(maxsize=None)
def collapsed_model(arch, attn, eps=0.05):
    """All input embeddings nearly equal: masks then predict what greedy decoding will emit, so verify drafts are
    accepted (eps small: always; larger eps: sometimes)."""
    model = peaked_model.__wrapped__(arch, attn)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.copy_(emb[0:1] + eps * emb)
    return model


def make_prompts(n, *, seed, lo=3, hi=9):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    return [torch.randint(0, 90, (length,), generator=g).tolist() for length in lengths]


def left_pad(prompts, pad=0):
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


@torch.no_grad()
def naive_decode(model, prompt, *, strategy, k=1, k_max=16, threshold=0.9, max_new_tokens, eos=(),
                 mask_margin=None, mask_id=MASK):
    """Reference: one row, no KV cache; every pass recomputes prompt + output (+ verify drafts) + masks.

    With ``mask_margin`` a pass appends the masks the previous pass used + the margin (at most ``k_max - 1``).
    Returns (generated ids, tokens emitted per pass).
    """
    full_masks = k - 1 if strategy == "static" else k_max - 1
    reach = full_masks
    out, drafts, per_pass = [], [], []
    while True:
        remaining = max_new_tokens - len(out)
        n_masks = min(reach, remaining - 1 - len(drafts))
        seq = prompt + out + drafts + [mask_id] * n_masks
        probs = model(torch.tensor([seq])).logits[0].softmax(-1)
        top_p, top_i = (t.tolist() for t in probs.max(-1))
        last = len(prompt) + len(out) - 1  # index of the last token known to be right
        new_drafts = []
        if strategy == "verify":
            a = 0
            while a < len(drafts) and drafts[a] == top_i[last + a]:
                a += 1
            chunk = drafts[:a] + [top_i[last + a]]
            if a == len(drafts):
                for j in range(last + a + 1, len(seq)):
                    if top_p[j] < threshold:
                        break
                    new_drafts.append(top_i[j])
        else:
            preds, conf = top_i[last:], top_p[last:]
            if strategy == "static":
                n = len(preds)
            else:
                n = 0
                while n < len(conf) and conf[n] >= threshold:
                    n += 1
                n = max(n, 1)
            chunk = preds[:n]
        chunk = chunk[:remaining]
        stop = False
        for j, tok in enumerate(chunk):
            if tok in eos:
                chunk, stop = chunk[:j + 1], True
                break
        out += chunk
        per_pass.append(len(chunk))
        if stop or len(out) >= max_new_tokens:
            return out, per_pass
        drafts = new_drafts[:max_new_tokens - len(out) - 1]
        if mask_margin is not None:
            used = len(drafts) if strategy == "verify" else len(chunk) - 1
            reach = min(full_masks, used + mask_margin)


STRATEGY_CASES = [
    dict(strategy="static", k=1),
    dict(strategy="static", k=2),
    dict(strategy="static", k=3),
    dict(strategy="conf_adapt", k_max=16, threshold=0.9),
    dict(strategy="conf_adapt", k_max=16, threshold=0.7),
    dict(strategy="conf_adapt", k_max=6, threshold=0.5),
    dict(strategy="verify", k_max=4, threshold=0.0),
    dict(strategy="verify", k_max=16, threshold=0.3),
    dict(strategy="conf_adapt", k_max=16, threshold=0.5, mask_margin=1),
    dict(strategy="conf_adapt", k_max=8, threshold=0.7, mask_margin=2),
    dict(strategy="verify", k_max=16, threshold=0.3, mask_margin=1),
]


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_cached_matches_naive_reference(arch, attn):
    model = peaked_model(arch, attn)
    accepted = {}
    for case in STRATEGY_CASES:
        for prompt in make_prompts(2, seed=2):
            ref, ref_pass = naive_decode(model, prompt, max_new_tokens=12, eos=(EOS,), **case)
            got = mtp_generate(model, torch.tensor([prompt]), max_new_tokens=12, **case)
            assert got.sequences[0] == ref, case
            assert got.tokens_per_pass[0] == ref_pass, case
            assert got.forward_passes[0] == len(ref_pass)
            accepted.setdefault(case["threshold"] if case["strategy"] == "conf_adapt" else None, set()).update(
                ref_pass[:-1])
    # The thresholds really exercise multi-token accepts of varying length on this model.
    assert all(len(accepted[t] - {1}) >= 2 for t in (0.7, 0.5)), accepted


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_verify_cached_matches_naive_with_accepted_drafts(arch, attn):
    """On the collapsed models drafts are accepted (fully or in part): the cache/hole logic of verify is used."""
    counts = set()
    for eps in (0.05, 0.5):
        model = collapsed_model(arch, attn, eps)
        for prompt in make_prompts(3, seed=2):
            for k_max, margin in ((3, None), (8, None), (8, 1)):
                ref, ref_pass = naive_decode(model, prompt, strategy="verify", k_max=k_max, threshold=0.0,
                                             max_new_tokens=20, eos=(EOS,), mask_margin=margin)
                got = mtp_generate(model, torch.tensor([prompt]), strategy="verify", k_max=k_max, threshold=0.0,
                                   max_new_tokens=20, mask_margin=margin)
                assert got.sequences[0] == ref
                assert got.tokens_per_pass[0] == ref_pass
                counts.update(ref_pass[1:-1])
    assert 1 in counts and len(counts - {1}) >= 2, counts  # rejections, partial and full accepts


def greedy_reference(model, prompt, max_new_tokens):
    ids = torch.tensor([prompt])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=EOS)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_equivalent_strategies_match_generate(arch, attn):
    # ConfAdapt with no mask to read (k_max 1) is greedy decoding; its rejection rule is tested by hand in
    # test_acceptance (thresholds are probabilities, so "accept none" is no longer a threshold above 1)
    cases = [dict(strategy="static", k=1), dict(strategy="conf_adapt", threshold=0.9, k_max=1)]
    cases += [dict(strategy="verify", k_max=k_max, threshold=thr) for k_max, thr in ((2, 0.0), (4, 0.5), (16, 0.0))]
    cases += [dict(strategy="verify", k_max=16, threshold=0.0, mask_margin=1),
              dict(strategy="conf_adapt", threshold=0.9, k_max=1, mask_margin=2)]
    for model in (peaked_model(arch, attn), collapsed_model(arch, attn, 0.5)):
        for prompt in make_prompts(2, seed=3):
            expected = greedy_reference(model, prompt, 16)
            for case in cases:
                got = mtp_generate(model, torch.tensor([prompt]), max_new_tokens=16, **case)
                assert got.sequences[0] == expected, case
                if case["strategy"] != "verify":
                    assert got.forward_passes[0] == len(expected)


def _choose_eos(singles):
    """A token that ends some rows early and leaves others running, so rows finish at different times."""
    for tok in singles[0][3:8]:
        if not all(tok in s for s in singles):
            return tok
    return singles[0][4]


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_batched_matches_one_at_a_time(arch, attn):
    model = peaked_model(arch, attn)
    prompts = make_prompts(4, seed=4, lo=2, hi=10)
    ids, mask = left_pad(prompts, pad=7)
    cases = [dict(strategy="static", k=2), dict(strategy="conf_adapt", k_max=8, threshold=0.5),
             dict(strategy="conf_adapt", k_max=16, threshold=0.7), dict(strategy="verify", k_max=4, threshold=0.0),
             dict(strategy="conf_adapt", k_max=16, threshold=0.5, mask_margin=1)]
    for case in cases:
        eos = _choose_eos(mtp_generate(model, ids, mask, max_new_tokens=16, eos_token_id=NO_EOS, **case).sequences)
        singles = [mtp_generate(model, torch.tensor([p]), max_new_tokens=16, eos_token_id=eos, **case)
                   for p in prompts]
        batched = mtp_generate(model, ids, mask, max_new_tokens=16, eos_token_id=eos, **case)
        assert batched.sequences == [s.sequences[0] for s in singles], case
        assert batched.tokens_per_pass == [s.tokens_per_pass[0] for s in singles], case
        assert len({len(s) for s in batched.sequences}) > 1, "rows should finish at different times"
        # every batched call carries all unfinished rows: as many calls as the longest-running row's passes
        assert batched.model_calls == max(batched.forward_passes), case
        assert all(s.model_calls == s.forward_passes[0] for s in singles), case
        if case["strategy"] == "conf_adapt":
            first = [p[0] for p in batched.tokens_per_pass]
            assert len(set(first)) > 1 or len({tuple(p) for p in batched.tokens_per_pass}) > 1


@pytest.mark.parametrize("attn", ATTNS)
def test_batched_verify_with_accepted_drafts(attn):
    model = collapsed_model("qwen3", attn, 0.5)
    prompts = make_prompts(4, seed=5, lo=2, hi=9)
    ids, mask = left_pad(prompts)
    for margin in (None, 1):
        singles = [mtp_generate(model, torch.tensor([p]), strategy="verify", k_max=8, threshold=0.0,
                                max_new_tokens=18, mask_margin=margin) for p in prompts]
        batched = mtp_generate(model, ids, mask, strategy="verify", k_max=8, threshold=0.0, max_new_tokens=18,
                               mask_margin=margin)
        assert batched.sequences == [s.sequences[0] for s in singles]
        assert batched.tokens_per_pass == [s.tokens_per_pass[0] for s in singles]
        for p, seq in zip(prompts, batched.sequences):
            assert seq == greedy_reference(model, p, 18)


class _CountFedTokens:
    """Counts forward passes and the tokens fed to them (masks included)."""

    def __init__(self, model):
        self.passes = self.tokens = 0
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.passes += 1
        self.tokens += kwargs["input_ids"].shape[-1]


def test_mask_margin_feeds_fewer_masks_and_full_margin_is_the_fixed_rule():
    model = peaked_model.__wrapped__("llama", "sdpa")
    counter = _CountFedTokens(model)
    common = dict(strategy="conf_adapt", k_max=16, threshold=0.7, max_new_tokens=24, eos_token_id=NO_EOS)
    for prompt in make_prompts(3, seed=12):
        fixed = mtp_generate(model, [prompt], **common)
        assert mtp_generate(model, [prompt], mask_margin=15, **common).sequences == fixed.sequences
        counter.tokens = 0
        adaptive = mtp_generate(model, [prompt], mask_margin=1, **common)
        # By hand: pass p feeds the previous pass's tokens + min(reach, room) masks, where the reach is 15 on the
        # prefill and afterwards (mask predictions accepted last pass) + 1.
        emitted, reach, expected = 0, 15, len(prompt)
        for n in adaptive.tokens_per_pass[0]:
            expected += min(reach, 24 - emitted - 1)
            emitted += n
            reach = min(15, n - 1 + 1)
        expected += emitted - adaptive.tokens_per_pass[0][-1]
        assert counter.tokens == expected
        assert len(adaptive.sequences[0]) == 24
    assert counter.passes > 0


def test_padding_side_does_not_matter():
    model = peaked_model("llama", "sdpa")
    prompts = make_prompts(3, seed=6)
    ids, mask = left_pad(prompts)
    width = ids.shape[1]
    right = torch.tensor([p + [0] * (width - len(p)) for p in prompts])
    right_mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    assert prompt_rows(right, right_mask) == prompts == prompt_rows(ids, mask)
    a = mtp_generate(model, ids, mask, strategy="conf_adapt", threshold=0.5, max_new_tokens=10)
    b = mtp_generate(model, prompts, strategy="conf_adapt", threshold=0.5, max_new_tokens=10)
    assert a.sequences == b.sequences


def test_eos_inside_chunk_stops_and_drops_the_rest():
    model = peaked_model("llama", "sdpa")
    for prompt in make_prompts(20, seed=7):
        free = mtp_generate(model, [prompt], strategy="static", k=3, max_new_tokens=12, eos_token_id=NO_EOS)
        seq = free.sequences[0]
        if seq[4] not in seq[:4]:
            break
    else:
        pytest.skip("no prompt whose 5th token is new")
    eos = seq[4]  # the middle of the second 3-token chunk
    got = mtp_generate(model, [prompt], strategy="static", k=3, max_new_tokens=12, eos_token_id=[eos, 1000])
    assert got.sequences[0] == seq[:5]
    assert got.finish_reasons == ["eos"]
    assert got.forward_passes == [2] and got.tokens_per_pass == [[3, 2]]


def char_tokenizer():
    """Character-level tokenizer over the tiny vocabulary: ids 0..93 are '!'..'~', 94 is ' '."""
    vocab = {chr(33 + i): i for i in range(94)}
    vocab.update({" ": 94, "</s>": EOS, "<mtp>": MASK})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="</s>"))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", additional_special_tokens=["<mtp>"])


def test_stop_strings_cut_at_token_granularity():
    model = peaked_model("qwen3", "sdpa")
    tokenizer = char_tokenizer()
    prompt = make_prompts(1, seed=8)[0]
    common = dict(strategy="conf_adapt", threshold=0.5, k_max=8, max_new_tokens=30, eos_token_id=NO_EOS,
                  tokenizer=tokenizer)
    free = mtp_generate(model, [prompt], **common)
    text = free.texts[0]
    assert text == tokenizer.decode(free.sequences[0]) and len(text) == 30
    i = next(i for i in range(4, 25) if text.find(text[i:i + 2]) == i)
    stop = text[i:i + 2]
    got = mtp_generate(model, [prompt], stop_strings=[stop, "never-there"], **common)
    assert got.texts == [text[:i]]
    assert got.sequences == [free.sequences[0][:i + 2]]  # tokens through the one completing the stop string
    assert got.finish_reasons == ["stop_string"]
    assert got.forward_passes[0] <= free.forward_passes[0]
    with pytest.raises(ValueError, match="tokenizer"):
        mtp_generate(model, [prompt], stop_strings=[stop], max_new_tokens=5)


@pytest.mark.parametrize("case", [dict(strategy="conf_adapt", threshold=0.5, k_max=16),
                                  dict(strategy="static", k=4),
                                  dict(strategy="verify", k_max=16, threshold=0.0)])
def test_never_exceeds_max_new_tokens(case):
    model = collapsed_model("llama", "sdpa", 0.05)  # accepts many tokens per pass
    prompts = make_prompts(3, seed=9)
    ids, mask = left_pad(prompts)
    for max_new in (1, 2, 5, 7):
        out = mtp_generate(model, ids, mask, max_new_tokens=max_new, eos_token_id=NO_EOS, **case)
        assert [len(s) for s in out.sequences] == [max_new] * 3
        assert out.finish_reasons == ["length"] * 3


def test_pass_counts_and_tokens_per_forward_by_hand():
    model = peaked_model("llama", "sdpa")
    prompt = make_prompts(1, seed=10)[0]
    # Static k=3: the prefill pass already emits 3, so 7 tokens take ceil(7/3) = 3 passes: 3 + 3 + 1.
    out = mtp_generate(model, [prompt], strategy="static", k=3, max_new_tokens=7, eos_token_id=NO_EOS)
    assert out.forward_passes == [3] and out.tokens_per_pass == [[3, 3, 1]]
    assert out.tokens_per_forward == [pytest.approx(7 / 3)]
    # Verify with every draft accepted (k_max=4): prefill emits 1, then 3 drafts + 1 correction per pass.
    model = collapsed_model("llama", "sdpa", 0.05)
    out = mtp_generate(model, [prompt], strategy="verify", k_max=4, threshold=0.0, max_new_tokens=10,
                       eos_token_id=NO_EOS)
    assert out.tokens_per_pass == [[1, 4, 4, 1]]
    assert out.forward_passes == [4] and out.tokens_per_forward == [pytest.approx(2.5)]
    assert math.isclose(sum(out.tokens_per_pass[0]) / out.forward_passes[0], out.tokens_per_forward[0])


class _CountForwards:
    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, *args):
        self.calls += 1


def test_bad_inputs_raise_before_any_forward():
    model = tiny_model("llama", attn_implementation="sdpa")
    counter = _CountForwards(model)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        mtp_generate(model, [[1] * 505], max_new_tokens=10)  # tiny max_positions = 512
    with pytest.raises(ValueError, match="max_position_embeddings"):
        mtp_generate(model, [[1] * 600], max_new_tokens=1)
    with pytest.raises(ValueError, match="empty prompt"):
        mtp_generate(model, torch.tensor([[1, 2], [3, 4]]), torch.tensor([[1, 1], [0, 0]]), max_new_tokens=3)
    with pytest.raises(ValueError, match="empty prompt"):
        mtp_generate(model, torch.zeros(1, 0, dtype=torch.long), max_new_tokens=3)
    with pytest.raises(ValueError, match="strategy"):
        mtp_generate(model, [[1, 2]], strategy="beam", max_new_tokens=3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        mtp_generate(model, [[1, 2]], max_new_tokens=0)
    vocab = model.get_input_embeddings().weight.shape[0]
    with pytest.raises(ValueError, match=rf"outside the model's vocabulary \(size {vocab}\) \(row 1\): \[{vocab}\]"):
        mtp_generate(model, [[5, 6], [5, vocab]], max_new_tokens=3)  # another tokenizer's ids: not an IndexError
    with pytest.raises(ValueError, match="attention_mask row 0 is not one run of 1s"):
        mtp_generate(model, torch.tensor([[1, 2, 3]]), torch.tensor([[1, 0, 1]]), max_new_tokens=3)
    with pytest.raises(ValueError, match="is also an EOS id"):
        mtp_generate(model, [[1, 2]], strategy="verify", max_new_tokens=3, eos_token_id=model.config.mtp_mask_token_id)
    for strategy, margin in (("static", 1), ("conf_adapt", 0), ("verify", True), ("conf_adapt", 1.5)):
        with pytest.raises(ValueError, match="mask_margin"):
            mtp_generate(model, [[1, 2]], strategy=strategy, k=2, mask_margin=margin, max_new_tokens=3)
    no_mask = tiny_model("llama", with_mask_token=False)
    no_mask_counter = _CountForwards(no_mask)
    with pytest.raises(ValueError, match="mask token"):
        mtp_generate(no_mask, [[1, 2]], strategy="conf_adapt", max_new_tokens=3)
    assert counter.calls == 0 and no_mask_counter.calls == 0
    # Static k=1 needs no mask: it is plain greedy decoding.
    assert len(mtp_generate(no_mask, [[1, 2]], strategy="static", k=1, max_new_tokens=3,
                            eos_token_id=NO_EOS).sequences[0]) == 3


def test_default_eos_comes_from_the_model():
    model = peaked_model("llama", "sdpa")
    prompts = make_prompts(8, seed=11)
    free = mtp_generate(model, prompts, strategy="static", k=1, max_new_tokens=30, eos_token_id=NO_EOS)
    default = mtp_generate(model, prompts, strategy="static", k=1, max_new_tokens=30)
    for f, d, reason in zip(free.sequences, default.sequences, default.finish_reasons):
        expected = f[:f.index(EOS) + 1] if EOS in f else f
        assert d == expected
        assert reason == ("eos" if EOS in f else "length")


def test_pass_attention_mask_by_hand():
    from selfdistill.decode.decoder import pass_attention_mask

    # 5 key slots: a hole at slot 1 (mask 0); the last 2 slots are this pass's queries
    slots = torch.tensor([[1, 0, 1, 1, 1], [1, 1, 1, 0, 1]])
    got = pass_attention_mask(slots, 2, attn_implementation="sdpa", dtype=torch.float64)
    assert got.shape == (2, 1, 2, 5) and got.dtype == torch.bool
    assert got[0, 0].int().tolist() == [[1, 0, 1, 1, 0], [1, 0, 1, 1, 1]]
    assert got[1, 0].int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 0, 1]]
    eager = pass_attention_mask(slots, 2, attn_implementation="eager", dtype=torch.float64)
    assert torch.equal(eager == 0, got) and (eager[~got] == torch.finfo(torch.float64).min).all()
    with pytest.raises(ValueError, match="flash_attention_2"):
        pass_attention_mask(slots, 2, attn_implementation="flash_attention_2", dtype=torch.float64)
