"""The gated step with the real tokens run once (``shared_prefix``) against the packed step: the same logits,
proposals, loss and adapter gradients (float64, Llama and Qwen3, sdpa and eager), and its attention by hand."""

import pytest
import torch

from selfdistill.models import gated_lora as gl
from selfdistill.models.tiny import tiny_model
from selfdistill.train.distill_step import distill_step
from selfdistill.train.layout import build_layout
from selfdistill.train.shared_prefix import SharedPrefix, mask_pass_attention

MASK, EOS = 96, 95  # tiny models: vocab 97


def _gated(arch, impl, seed=0):
    model = tiny_model(arch, attn_implementation=impl, seed=seed)
    gl.apply_gated_lora(model, gl.GatedLoRAConfig(rank=2, alpha=4.0), mask_token_id=MASK)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, gl.GatedLoRALinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=gen, dtype=m.lora_B.dtype) * 0.5)
        model.gated_lora.mask_embedding.add_(torch.randn(model.gated_lora.mask_embedding.shape, generator=gen,
                                                         dtype=torch.float64))
    return model.train()


def _raw(b, n, seed=0):
    return torch.randint(0, EOS, (b, n), generator=torch.Generator().manual_seed(seed))


def test_mask_pass_attention_of_the_worked_example():
    # S=18, k=3, M=3, offset 0: real stream = sources 0..11; masks stand for 4,5 | 8,9 | 12,13
    allowed = mask_pass_attention(build_layout(18, 3, 3))
    assert allowed.shape == (6, 12 + 6)
    real, masks = allowed[:, :12].int(), allowed[:, 12:].int()
    assert real.sum(1).tolist() == [4, 4, 8, 8, 12, 12]  # each region's real prefix, nothing after it
    assert real[:, :4].all() and not real[:2, 4:].any() and not real[2:4, 8:].any()
    assert masks.tolist() == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0],
                              [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 1]]


def test_with_an_offset_the_trailing_real_tokens_are_seen_by_no_mask():
    lay = build_layout(18, 3, 3, offset=2)  # P = 4: real stream 0..11, the last region hides 10, 11
    allowed = mask_pass_attention(lay)
    assert allowed[:, :12].sum(1).tolist() == [2, 2, 6, 6, 10, 10]
    assert lay.src_index[~lay.is_mask].tolist() == list(range(12))  # the real slots are the source stream in order


def _step(model, raw, lay, shared, loss_mode):
    model.zero_grad(set_to_none=True)
    out = distill_step(model, gl.BaseModelView(model), raw, layout=lay, mask_token_id=MASK, loss_mode=loss_mode,
                       stop_token_ids=(EOS,), shared_prefix=shared)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out, grads


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("k, offset, loss_mode", [(2, 0, "hard_ce"), (4, 3, "hard_ce"), (3, 1, "soft_kl"),
                                                  (4, 0, "reward_weighted"), (3, 2, "gt_ce")])
def test_shared_prefix_equals_the_packed_step(arch, impl, k, offset, loss_mode):
    model = _gated(arch, impl)
    lay = build_layout(30, k, 3, offset=offset)
    raw = _raw(2, lay.num_source_tokens + 2, seed=k + offset)
    raw[1, 20] = EOS  # a row that ends early: region pruning must agree too
    packed, g_packed = _step(model, raw, lay, False, loss_mode)
    shared, g_shared = _step(model, raw, lay, True, loss_mode)
    # eager attention takes its softmax in float32 (transformers' eager_attention_forward): looser there
    tol = dict(rtol=1e-9, atol=1e-9) if impl == "sdpa" else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shared.student_logits, packed.student_logits, **tol)
    assert torch.equal(shared.proposals, packed.proposals) and torch.equal(shared.keep, packed.keep)
    if loss_mode != "gt_ce":
        torch.testing.assert_close(shared.teacher_logits, packed.teacher_logits, **tol)
    torch.testing.assert_close(shared.loss, packed.loss, **tol)
    assert g_shared.keys() == g_packed.keys() and any(g.abs().sum() > 0 for g in g_packed.values())
    for name in g_packed:
        torch.testing.assert_close(g_shared[name], g_packed[name], **tol, msg=name)


def test_the_cache_is_the_real_stream_again_after_each_mask_pass():
    model = _gated("llama", "sdpa")
    lay = build_layout(30, 4, 3, offset=1)
    raw = _raw(2, lay.num_source_tokens)
    prefix = SharedPrefix(model, raw, lay)
    ids = torch.full((2, 3 * 3), MASK)
    with torch.no_grad():
        first = prefix.chunk_logits(model, ids)
        assert prefix.cache.get_seq_length() == prefix.real_len == 3 * (10 - 3)
        again = prefix.chunk_logits(model, ids)
    assert torch.equal(first, again)


def test_shared_prefix_refuses_a_student_that_is_not_gated_or_an_ntp_term():
    lay = build_layout(30, 3, 3)
    raw = _raw(1, lay.num_source_tokens)
    plain = tiny_model("llama")
    with pytest.raises(ValueError, match="shared_prefix needs a gated-LoRA student"):
        distill_step(plain, tiny_model("llama", seed=1), raw, layout=lay, mask_token_id=MASK, shared_prefix=True)
    gated = _gated("llama", "sdpa")
    with pytest.raises(ValueError, match="ntp_weight 0"):
        distill_step(gated, gl.BaseModelView(gated), raw, layout=lay, mask_token_id=MASK, ntp_weight=0.5,
                     shared_prefix=True)
