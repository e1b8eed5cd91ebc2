"""Operation counts of gated LoRA and of the decoder's pass: deterministic and hardware-independent (torch.profiler on
CPU), the regression guard of the per-op overhead that made a multi-token pass cost 1.6-2x a one-token one.

At a small model and batch each op's dispatch (a kernel launch on a GPU) costs more than its arithmetic, so:
- a forward with masks, as the decoder feeds it (masks trailing) and as the shared-prefix training step feeds it
  (every column a mask), runs at most 1.35x the compute ops (views left out) of the base forward of the same width;
- a one-token decoding pass through the engine runs at most 1.4x the ops of ``generate``'s step on the same model.
"""

import copy

import pytest
import torch

from selfdistill.decode.forward_cost import pass_ops
from selfdistill.decode.registry import make_strategy
from selfdistill.models import gated_lora as gl
from selfdistill.models.mask_token import mask_token_id_from
from selfdistill.models.tiny import tiny_model
from selfdistill.op_count import count_ops, op_times

ARCHS = ("llama", "qwen3")


def _pair(arch):
    base = tiny_model(arch, attn_implementation="sdpa", seed=0).eval()
    gated = copy.deepcopy(base)
    gl.apply_gated_lora(gated, gl.GatedLoRAConfig(rank=4, alpha=8.0), mask_token_id=mask_token_id_from(base))
    return base, gated


def _compute_ops(model, ids, *, tail=None) -> int:
    with torch.no_grad():
        with gl.trailing_masks(model, tail) if tail is not None else torch.no_grad():
            model(ids)  # first call builds the cached decoding weights; count the steady state
            return count_ops(lambda: model(ids)).compute


@pytest.mark.parametrize("arch", ARCHS)
def test_a_forward_with_masks_costs_at_most_1_35x_the_base_forwards_compute_ops(arch):
    base, gated = _pair(arch)
    mask_id = mask_token_id_from(base)
    prompt = torch.arange(3, 15)[None]
    decoder_like = torch.cat([prompt, torch.full((1, 4), mask_id)], dim=1)
    same_width = torch.cat([prompt, torch.arange(20, 24)[None]], dim=1)
    assert _compute_ops(gated, decoder_like, tail=4) <= 1.35 * _compute_ops(base, same_width)
    all_masks = torch.full((1, 6), mask_id)  # the shared-prefix student pass
    assert _compute_ops(gated, all_masks, tail=6) <= 1.35 * _compute_ops(base, all_masks)
    assert _compute_ops(gated, all_masks) <= 1.35 * _compute_ops(base, all_masks)  # found by search


def test_the_adapters_add_no_op_where_no_input_is_a_mask():
    base, gated = _pair("llama")
    ids = torch.arange(3, 15)[None]
    assert _compute_ops(gated, ids, tail=0) == _compute_ops(base, ids)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_one_token_engine_pass_costs_at_most_1_4x_the_ops_of_a_generate_step(arch):
    _, gated = _pair(arch)
    prompt = list(range(3, 15))
    with torch.no_grad():
        engine = pass_ops(gated, prompt, make_strategy("static", k=1), budgets=(4, 12))
        generate = pass_ops(gated, prompt, make_strategy("generate"), budgets=(4, 12))
    assert engine["ops_per_pass"] <= 1.4 * generate["ops_per_pass"]
    assert engine["compute_ops_per_pass"] <= 1.4 * generate["compute_ops_per_pass"]


def test_count_ops_counts_top_level_ops_and_leaves_views_out_of_compute():
    x = torch.ones(3, 4)
    ops = count_ops(lambda: (x.view(12) + 1).reshape(3, 4).sum())
    assert ops.by_name["aten::add"] == 1 and ops.by_name["aten::sum"] == 1
    assert ops.compute == 2 and ops.all == ops.compute + ops.by_name["aten::view"] + ops.by_name["aten::reshape"]


def test_op_times_counts_calls_per_run_and_refuses_no_runs():
    a = torch.ones(8, 8)
    times = op_times(lambda: (a @ a) @ a + 1, repeats=3)
    assert times["aten::mm"].calls == 2 and times["aten::add"].calls == 1
    assert all(t.self_us >= 0 for t in times.values())
    with pytest.raises(ValueError, match="repeats"):
        op_times(lambda: a + 1, repeats=0)
