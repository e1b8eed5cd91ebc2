"""The replicated masked-region layout: the paper's worked example, offsets, errors, and the key equivalence."""

import pytest
import torch

from selfdistill.train.layout import attention_mask_4d, build_layout, num_source_tokens_needed, region_geometry
from selfdistill.models.mask_token import mask_token_id_from
from selfdistill.models.tiny import tiny_model


def test_worked_example_offset0():
    lay = build_layout(18, 3, 3)
    assert lay.src_index.tolist() == [0, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 8, 9, 10, 11, 12, 13]
    assert "".join("M" if m else "." for m in lay.is_mask.tolist()) == "....MM....MM....MM"
    assert "".join("P" if m else "." for m in lay.is_pred.tolist()) == "...PPP...PPP...PPP"
    assert lay.pred_slots.tolist() == [[3, 4, 5], [9, 10, 11], [15, 16, 17]]
    assert lay.mask_slots.tolist() == [[4, 5], [10, 11], [16, 17]]
    assert lay.position_ids.tolist() == lay.src_index.tolist()
    # region 0 predicts x4,x5,x6; region 1 x8,x9,x10; region 2 x12,x13,x14
    assert lay.target_index[lay.pred_slots].tolist() == [[4, 5, 6], [8, 9, 10], [12, 13, 14]]
    assert lay.num_source_tokens == 15 == num_source_tokens_needed(18, 3, 3)
    assert lay.real_per_region == 4


def test_worked_example_attention():
    lay = build_layout(18, 3, 3)
    att = lay.attention
    # real token x7 (slot 9) sees real slots 0..3 and 6..9, never a mask
    assert att[9].nonzero().flatten().tolist() == [0, 1, 2, 3, 6, 7, 8, 9]
    # second mask of region 1 (slot 11) sees all earlier reals and its own region's masks 10, 11
    assert att[11].nonzero().flatten().tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]
    # no real query attends any mask key; nothing attends the future
    assert not att[~lay.is_mask][:, lay.is_mask].any()
    assert not torch.triu(att, diagonal=1).any()


def test_offset_two():
    lay = build_layout(18, 3, 3, offset=2)
    assert lay.src_index.tolist() == [0, 1, 2, 3, 2, 3, 4, 5, 6, 7, 6, 7, 8, 9, 10, 11, 10, 11]
    assert "".join("M" if m else "." for m in lay.is_mask.tolist()) == "..MM....MM....MM.."
    assert lay.pred_slots.tolist() == [[1, 2, 3], [7, 8, 9], [13, 14, 15]]
    assert lay.region.tolist()[-2:] == [-1, -1]
    assert lay.num_source_tokens == 13
    # every real source token 0..11 is shown exactly once
    assert sorted(lay.src_index[~lay.is_mask].tolist()) == list(range(12))


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("offset", [0, 1, 2, 3])
def test_offsets_general_properties(k, offset):
    s, m = 30, 3
    _, p = region_geometry(s, k, m)
    if offset >= p:
        pytest.skip("offset out of range for this k")
    lay = build_layout(s, k, m, offset=offset)
    assert sorted(lay.src_index[~lay.is_mask].tolist()) == list(range(m * p))
    assert lay.pred_slots.shape == (m, k) and lay.mask_slots.shape == (m, k - 1)
    for b in range(m):
        # prediction slots are consecutive sources starting at the region's last real token
        src = lay.src_index[lay.pred_slots[b]]
        assert src.tolist() == list(range(int(src[0]), int(src[0]) + k))
        assert not lay.is_mask[lay.pred_slots[b, 0]] and lay.is_mask[lay.mask_slots[b]].all()
    assert lay.num_source_tokens <= num_source_tokens_needed(s, k, m)
    assert lay.num_source_tokens == int(lay.target_index.max()) + 1


def test_k1_has_no_masks_and_is_plain_causal():
    lay = build_layout(12, 1, 3)
    assert not lay.is_mask.any()
    assert lay.src_index.tolist() == list(range(12))
    assert torch.equal(lay.attention, torch.tril(torch.ones(12, 12, dtype=torch.bool)))


@pytest.mark.parametrize("args, kwargs, message", [
    ((18, 7, 3), {}, "mask slots per region"),
    ((12, 5, 3), {}, "at least one real token"),
    ((17, 2, 3), {}, "multiple of num_regions"),
    ((18, 3, 3), {"offset": 4}, "offset must be in"),
    ((18, 3, 3), {"offset": -1}, "offset must be in"),
    ((18, 0, 3), {}, "k must be >= 1"),
    ((18, 2, 0), {}, "num_regions must be >= 1"),
])
def test_impossible_geometry_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_layout(*args, **kwargs)


def test_attention_mask_4d_forms():
    att = build_layout(6, 2, 2).attention
    sd = attention_mask_4d(att, attn_implementation="sdpa", dtype=torch.float32, batch_size=3)
    assert sd.dtype == torch.bool and sd.shape == (3, 1, 6, 6) and torch.equal(sd[1, 0], att)
    ea = attention_mask_4d(att, attn_implementation="eager", dtype=torch.float64, batch_size=2)
    assert ea.dtype == torch.float64 and ea.shape == (2, 1, 6, 6)
    assert (ea[0, 0][att] == 0).all() and (ea[0, 0][~att] == torch.finfo(torch.float64).min).all()
    with pytest.raises(ValueError, match="cannot take a dense custom mask"):
        attention_mask_4d(att, attn_implementation="flash_attention_2", dtype=torch.float32, batch_size=1)


def _run(model, ids, *, attention=None, positions=None):
    impl = model.config._attn_implementation
    kwargs = {}
    if attention is not None:
        kwargs["attention_mask"] = attention_mask_4d(attention, attn_implementation=impl, dtype=model.dtype,
                                                     batch_size=ids.shape[0])
        kwargs["position_ids"] = positions[None].expand(ids.shape[0], -1)
    with torch.no_grad():
        return model(input_ids=ids, **kwargs).logits


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("k, offset", [(3, 0), (3, 2), (4, 3), (1, 0), (2, 5)])
def test_layout_equals_separate_runs(arch, impl, k, offset):
    """THE key test: one layout pass == plain causal pass at real slots and == per-region 'prefix + masks' runs."""
    model = tiny_model(arch, attn_implementation=impl, dtype=torch.float64)
    mask_id = mask_token_id_from(model)
    s, m = 24, 3
    lay = build_layout(s, k, m, offset=offset)
    gen = torch.Generator().manual_seed(k * 10 + offset)
    raw = torch.randint(0, mask_id - 1, (2, lay.num_source_tokens), generator=gen)  # never the mask id
    ids = raw[:, lay.src_index].clone()
    ids[:, lay.is_mask] = mask_id
    logits = _run(model, ids, attention=lay.attention, positions=lay.position_ids)
    # eager computes the softmax in float32 even for float64 models; sdpa stays in float64
    tol = dict(rtol=0, atol=1e-10) if impl == "sdpa" else dict(rtol=1e-5, atol=1e-5)

    plain = _run(model, raw[:, :-1])
    real = ~lay.is_mask
    torch.testing.assert_close(logits[:, real], plain[:, lay.src_index[real]], **tol)

    for b in range(m):
        first = lay.pred_slots[b, 0]
        prefix = raw[:, : int(lay.src_index[first]) + 1]
        alone = torch.cat([prefix, torch.full((2, k - 1), mask_id)], dim=1)
        expect = _run(model, alone)[:, -k:]
        torch.testing.assert_close(logits[:, lay.pred_slots[b]], expect, **tol)
    # the test is not vacuous: masks change the prediction compared with a plain pass
    if k > 1:
        assert not torch.allclose(logits[:, lay.mask_slots[0]], plain[:, lay.src_index[lay.mask_slots[0]]])
