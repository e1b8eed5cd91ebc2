"""Gated LoRA against an independent formula (float64; Llama and Qwen3; sdpa and eager).

The reference is written from METHOD.md 1b alone: every adapted projection computes ``W x + (alpha / r) B A x`` at
the positions whose input id is the mask and ``W x`` elsewhere, and the mask token's input embedding is the
trainable vector. It is a plain copy of the base model whose target layers are replaced by that formula (its own
copies of the adapter tensors, no gather, no slice, no shared ``A`` stack, no cache of weights). The fused layers
must give the same logits and the same gradients for every adapter tensor, in each of the three ways a forward
finds its masks: searched in the packed training layout (a gather), every column a mask (the shared-prefix
student pass: a slice), and declared trailing by the decoder (:func:`trailing_masks`: a slice, no search); with
grad (training, float32-master path) and without (decoding, the cached-weight path).
"""

import copy

import pytest
import torch
from torch import nn

from selfdistill.models import gated_lora as gl
from selfdistill.models.mask_token import mask_token_id_from
from selfdistill.models.tiny import tiny_model
from selfdistill.train.layout import build_layout

CASES = [(arch, impl) for arch in ("llama", "qwen3") for impl in ("sdpa", "eager")]


class _Formula(nn.Module):
    """``W x + scale * B A x`` where ``is_mask`` (shared, ``bool[B, T]``), ``W x`` elsewhere."""

    def __init__(self, layer: gl.GatedLoRALinear, is_mask: list, *, scale: float):
        super().__init__()
        self.base, self.scale, self.is_mask = layer.base, scale, is_mask
        self.lora_A = nn.Parameter(layer.lora_A.detach().clone())
        self.lora_B = nn.Parameter(layer.lora_B.detach().clone())

    def forward(self, x):
        gate = self.is_mask[0][..., None].to(x.dtype)
        return self.base(x) + gate * (self.scale * (x @ self.lora_A.T @ self.lora_B.T))


def _reference(base, gated):
    """The formula model: ``base``'s copy with each of ``gated``'s adapted layers replaced by :class:`_Formula`."""
    ref = copy.deepcopy(base)
    ref.requires_grad_(False)
    is_mask = [None]
    state = gl.gated_state(gated)
    mask_id, scale = state.mask_token_id, state.config.alpha / state.config.rank
    ref.mask_embedding = nn.Parameter(state.mask_embedding.detach().clone())
    for name, module in gated.named_modules():
        if isinstance(module, gl.GatedLoRALinear):
            parent, _, child = name.rpartition(".")
            setattr(ref.get_submodule(parent), child, _Formula(module, is_mask, scale=scale))

    def embed(module, args, out):
        is_mask[0] = args[0] == mask_id
        return torch.where(is_mask[0][..., None], ref.mask_embedding.to(out.dtype), out)

    ref.get_input_embeddings().register_forward_hook(embed)
    return ref


def _pair(arch, impl):
    base = tiny_model(arch, attn_implementation=impl, seed=0)
    gated = copy.deepcopy(base)
    gl.apply_gated_lora(gated, gl.GatedLoRAConfig(rank=4, alpha=8.0), mask_token_id=mask_token_id_from(base))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in gated.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
    return base, gated, _reference(base, gated)


def _inputs(vocab, mask_id, kind):
    """``(ids [B, T], declared tail or None)`` of each way a forward finds its masks."""
    g = torch.Generator().manual_seed(0)
    if kind == "packed":  # the training layout: masks inside the sequence, found by search
        layout = build_layout(24, 3, 3, offset=1)
        raw = torch.randint(0, vocab - 2, (2, layout.num_source_tokens + 1), generator=g)
        ids = raw[:, layout.src_index]
        return torch.where(layout.is_mask[None], torch.full_like(ids, mask_id), ids), None
    if kind == "all_masks":
        return torch.full((2, 6), mask_id), None
    prompt = torch.randint(0, vocab - 2, (2, 9), generator=g)  # "declared": the decoder's prompt + 4 masks
    return torch.cat([prompt, torch.full((2, 4), mask_id)], dim=1), 4


def _grads(model, names):
    return [model.get_parameter(n).grad for n in names]


@pytest.mark.parametrize("arch,impl", CASES)
@pytest.mark.parametrize("kind", ["packed", "all_masks", "declared"])
def test_fused_layers_equal_the_formula_in_logits_and_gradients(arch, impl, kind):
    base, gated, ref = _pair(arch, impl)
    ids, tail = _inputs(base.config.vocab_size, gl.gated_state(gated).mask_token_id, kind)
    weights = torch.randn(ids.shape[1], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with gl.trailing_masks(gated, tail) if tail is not None else torch.enable_grad():
        got = gated(ids).logits
    want = ref(ids).logits
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)
    is_mask = ids == gl.gated_state(gated).mask_token_id
    assert not torch.allclose(got[is_mask], base(ids).logits[is_mask])  # the adapters really act
    (got * weights[None, :, None]).sum().backward()
    (want * weights[None, :, None]).sum().backward()
    names = [n for n, p in gated.named_parameters() if p.requires_grad]
    ref_names = [n.replace(f"{gl.STATE_ATTR}.", "") for n in names]
    for name, g, w in zip(names, _grads(gated, names), _grads(ref, ref_names)):
        assert g is not None and torch.allclose(g, w, rtol=1e-9, atol=1e-10), name
    with torch.no_grad():  # the decoding path: cached stacked A and scaled B^T
        with gl.trailing_masks(gated, tail) if tail is not None else torch.no_grad():
            again = gated(ids).logits
    assert torch.allclose(again, want, rtol=1e-10, atol=1e-10)


def test_projections_that_read_one_input_share_one_gather_and_one_a_matmul():
    """q/k/v and gate/up are grouped; o and down stand alone; the shared activations do not outlive a forward."""
    _, gated, _ = _pair("llama", "sdpa")
    layer = gated.model.layers[0]
    attn, mlp = layer.self_attn, layer.mlp
    assert attn.q_proj._group is attn.k_proj._group is attn.v_proj._group
    assert mlp.gate_proj._group is mlp.up_proj._group
    assert attn.o_proj._group is not attn.q_proj._group and len(mlp.down_proj._group.members) == 1
    mask_id = gl.gated_state(gated).mask_token_id
    with torch.no_grad():
        gated(torch.tensor([[3, 4, mask_id]]))
    assert gl.gated_state(gated).shared == {}


def test_declared_masks_skip_the_search_and_a_retrained_weight_refreshes_the_cache():
    _, gated, ref = _pair("qwen3", "sdpa")
    mask_id = gl.gated_state(gated).mask_token_id
    ids = torch.tensor([[5, 6, 7, mask_id, mask_id]])
    with torch.no_grad(), gl.trailing_masks(gated, 2):
        first = gated(ids).logits
        assert gl.gated_state(gated).gate.rows is None and gl.gated_state(gated).gate.tail == 2
        layer = gated.model.layers[0].self_attn.k_proj
        layer.lora_B.add_(1.0)  # an optimizer step bumps the version: the cached B^T must follow
        ref.get_submodule("model.layers.0.self_attn.k_proj").lora_B.add_(1.0)
        second = gated(ids).logits
    assert not torch.allclose(first, second)
    assert torch.allclose(second, ref(ids).logits, rtol=1e-10, atol=1e-10)
    assert gl.gated_state(gated).declared_tail is None  # restored on exit


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("kind", ["packed", "declared"])
def test_half_precision_decoding_adds_each_members_float32_delta_once_rounded(arch, kind):
    """A bf16 model on the CPU, decoding: the adapters compute in float32 (``adapter_compute_dtype``) and each
    projection adds its delta to its bf16 output; the formula rounds its float32 delta to bf16 first, so the two
    agree within a few bf16 ulps of the adapters' effect, and the adapters act."""
    base, gated, _ = _pair(arch, "sdpa")
    base, gated = base.to(torch.bfloat16), gated.to(torch.bfloat16)
    for layer in (m for m in gated.modules() if isinstance(m, gl.GatedLoRALinear)):
        layer.lora_A.data, layer.lora_B.data = layer.lora_A.data.float(), layer.lora_B.data.float()
    ref = _reference(base, gated)
    for layer in (m for m in ref.modules() if isinstance(m, _Formula)):
        layer.forward = _rounded_formula(layer)
    ids, tail = _inputs(base.config.vocab_size, gl.gated_state(gated).mask_token_id, kind)
    with torch.no_grad():
        with gl.trailing_masks(gated, tail) if tail is not None else torch.no_grad():
            got = gated(ids).logits.float()
        want, plain = ref(ids).logits.float(), base(ids).logits.float()
    is_mask = ids == gl.gated_state(gated).mask_token_id
    if tail is not None:  # trailing masks: the real positions are the base model's, bitwise
        assert torch.equal(got[~is_mask], plain[~is_mask])
    assert (got - want).abs().max() <= 0.02 * (want[is_mask] - plain[is_mask]).abs().max()


def _rounded_formula(layer):
    def forward(x):
        delta = (x.float() @ layer.lora_A.T.float() @ (layer.scale * layer.lora_B.T.float())).to(x.dtype)
        return layer.base(x) + layer.is_mask[0][..., None].to(x.dtype) * delta
    return forward
