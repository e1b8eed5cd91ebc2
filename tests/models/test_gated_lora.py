"""Gated LoRA against the base model it wraps (float64; Llama and Qwen3; sdpa and eager).

Real positions must equal the base model bitwise, in the training layout and in decoding; mask positions must
change once the adapters are non-zero; the teacher pass (adapters off) is the base model; gradients reach only
the adapters and the mask embedding; save -> load is exact; lossless decoding equals the base model's greedy.
"""

import copy

import pytest
import torch

from selfdistill.decode.decoder import mtp_generate
from selfdistill.models import gated_lora as gl
from selfdistill.models.loader import load_model
from selfdistill.models.mask_token import mask_token_id_from
from selfdistill.models.tiny import tiny_model
from support import save_random_teacher_adapter
from selfdistill.train.distill_step import distill_step, forward_slots
from selfdistill.train.layout import build_layout

CASES = [(arch, impl) for arch in ("llama", "qwen3") for impl in ("sdpa", "eager")]


def _pair(arch, impl, *, seed=0):
    """``(base, gated)``: the same random weights, the gated copy with non-zero adapters and mask embedding."""
    base = tiny_model(arch, attn_implementation=impl, seed=seed)
    gated = copy.deepcopy(base)
    gl.apply_gated_lora(gated, gl.GatedLoRAConfig(rank=4, alpha=8.0), mask_token_id=mask_token_id_from(base))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in gated.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return base, gated.eval()


def _layout_ids(vocab, mask_id, *, batch=2, seq_len=24, k=3, regions=3, seed=0):
    layout = build_layout(seq_len, k, regions, offset=1)
    raw = torch.randint(0, vocab - 2, (batch, layout.num_source_tokens + 1),
                        generator=torch.Generator().manual_seed(seed))
    ids = raw[:, layout.src_index]
    return layout, torch.where(layout.is_mask[None], torch.full_like(ids, mask_id), ids)


@pytest.mark.parametrize("arch,impl", CASES)
def test_real_positions_equal_the_base_and_masks_differ_in_the_training_layout(arch, impl):
    base, gated = _pair(arch, impl)
    layout, ids = _layout_ids(base.config.vocab_size, mask_token_id_from(base))
    with torch.no_grad():
        want, got = forward_slots(base, ids, layout, None), forward_slots(gated, ids, layout, None)
    real = ~layout.is_mask
    assert torch.equal(got[:, real], want[:, real])
    assert not torch.allclose(got[:, layout.is_mask], want[:, layout.is_mask])


@pytest.mark.parametrize("arch,impl", CASES)
def test_teacher_pass_with_adapters_off_is_the_base_even_on_mask_ids(arch, impl):
    base, gated = _pair(arch, impl)
    layout, ids = _layout_ids(base.config.vocab_size, mask_token_id_from(base))
    with torch.no_grad(), gl.adapters_disabled(gated):
        got = forward_slots(gated, ids, layout, None)
    assert torch.equal(got, forward_slots(base, ids, layout, None))
    assert gl.gated_state(gated).enabled  # restored


def test_gradients_reach_only_the_adapters_and_the_mask_embedding():
    base, gated = _pair("llama", "sdpa")
    gated.train()
    layout = build_layout(24, 3, 3)
    raw = torch.randint(0, base.config.vocab_size - 2, (2, layout.num_source_tokens + 1),
                        generator=torch.Generator().manual_seed(0))
    out = distill_step(gated, gl.BaseModelView(gated), raw, layout=layout, mask_token_id=mask_token_id_from(base))
    out.loss.backward()
    trainable = {n for n, p in gated.named_parameters() if p.requires_grad}
    assert trainable == set(gl.adapter_tensors(gated))
    assert all(p.grad is None for n, p in gated.named_parameters() if n not in trainable)
    assert all(gated.get_parameter(n).grad is not None and gated.get_parameter(n).grad.abs().sum() > 0
               for n in trainable)
    # the teacher half of the step is the base model's forward on the student-forced ids
    with torch.no_grad():
        want = forward_slots(base, out.forced_ids, layout, layout.pred_slots.reshape(-1))
        assert torch.equal(out.teacher_logits, want.reshape(out.teacher_logits.shape))


@pytest.mark.parametrize("arch,impl", CASES)
def test_lossless_decoding_with_the_adapter_equals_base_greedy_generate(arch, impl):
    base, gated = _pair(arch, impl)
    prompt = torch.tensor([[5, 17, 3, 44, 9, 28]])
    want = base.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    for strategy in ("verify",):
        out = mtp_generate(gated, prompt, strategy=strategy, k_max=4, max_new_tokens=12, eos_token_id=[])
        assert out.sequences[0] == want[0, prompt.shape[1]:].tolist(), strategy
    # static k=1 never feeds a mask: the gated model is the base model token for token
    out = mtp_generate(gated, prompt, strategy="static", k=1, max_new_tokens=12, eos_token_id=[])
    assert out.sequences[0] == want[0, prompt.shape[1]:].tolist()


def test_save_then_load_is_exact(tmp_path):
    base, gated = _pair("llama", "sdpa")
    vocab = base.config.vocab_size
    gl.save_gated_lora(gated, None, tmp_path / "adapter", base_model="unused")
    fresh = tiny_model("llama", attn_implementation="sdpa")
    gl.attach_saved_adapter(fresh, tmp_path / "adapter")
    layout, ids = _layout_ids(vocab, mask_token_id_from(base))
    with torch.no_grad():
        assert torch.equal(forward_slots(fresh, ids, layout, None), forward_slots(gated, ids, layout, None))
    meta = gl.read_adapter_config(tmp_path / "adapter")
    assert meta["rank"] == 4 and meta["format_version"] == gl.FORMAT_VERSION and meta["targets"]


def test_load_model_applies_an_adapter_folder_to_its_base(tmp_path):
    base, gated = save_random_teacher_adapter(tmp_path / "a", dtype="float64")
    loaded, loaded_tok = load_model(str(tmp_path / "a"), dtype="float64")
    assert loaded_tok.convert_tokens_to_ids("<mtp>") == mask_token_id_from(loaded) == mask_token_id_from(gated)
    ids = torch.tensor([[3, 4, 5, mask_token_id_from(gated), mask_token_id_from(gated)]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, gated(ids).logits)
        assert torch.equal(loaded(ids).logits[:, :3], base(ids).logits[:, :3])


def test_bad_configs_and_folders_are_refused(tmp_path):
    for bad in (dict(rank=0), dict(alpha=float("nan")), dict(targets=()), dict(dropout=1.0)):
        with pytest.raises(ValueError, match="gated LoRA"):
            gl.GatedLoRAConfig(**bad)
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="no linear layer"):
        gl.apply_gated_lora(model, gl.GatedLoRAConfig(targets=("nope",)), mask_token_id=mask_token_id_from(model))
    (tmp_path / gl.CONFIG_FILE).write_text('{"format": "peft", "format_version": 1}')
    with pytest.raises(ValueError, match="not a selfdistill-gated-lora v1 adapter"):
        gl.read_adapter_config(tmp_path)


def test_an_adapter_folder_reports_its_mask_id_without_loading(tmp_path):
    from selfdistill.models.mask_token import mask_token_id_in_checkpoint

    _, gated = _pair("llama", "sdpa")
    gl.save_gated_lora(gated, None, tmp_path, base_model="unused")
    assert mask_token_id_in_checkpoint(str(tmp_path)) == mask_token_id_from(gated)


def test_an_exported_bf16_adapter_loads_as_the_float32_one_rounded(tmp_path):
    _, gated = save_random_teacher_adapter(tmp_path / "a", dtype="float32")
    (tmp_path / "a" / "run_record.json").write_text("{}")
    out = gl.export_adapter(tmp_path / "a", tmp_path / "b", extra_files=("run_record.json",))
    assert (out / "run_record.json").is_file() and (out / "tokenizer.json").is_file()
    assert (out / gl.WEIGHTS_FILE).stat().st_size < 0.6 * (tmp_path / "a" / gl.WEIGHTS_FILE).stat().st_size
    loaded, _ = load_model(str(out), dtype="float32")
    for name, value in gl.adapter_tensors(loaded).items():
        assert torch.equal(value, gl.adapter_tensors(gated)[name].bfloat16().float()), name


def test_a_corrupt_adapter_folder_is_an_error_that_names_the_file(tmp_path):
    _, gated = _pair("llama", "sdpa")
    gl.save_gated_lora(gated, None, tmp_path / "a", base_model="unused")
    weights = tmp_path / "a" / gl.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match=f"{weights}: cannot read the adapter's weights"):
        gl.attach_saved_adapter(tiny_model("llama"), tmp_path / "a")
    (tmp_path / "a" / gl.CONFIG_FILE).write_text('{"format": ')
    with pytest.raises(ValueError, match=f"{tmp_path / 'a' / gl.CONFIG_FILE}: not valid JSON"):
        gl.read_adapter_config(tmp_path / "a")
