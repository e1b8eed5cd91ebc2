"""The ``model.generate`` baselines: transformers' continuous batching (``generate_cb``, the benchmark's other
baseline) decodes the same greedy tokens as static-batch ``generate``, and refuses what it cannot do."""

import pytest
import torch

from selfdistill.decode.baseline import generate_baseline
from selfdistill.decode.registry import make_strategy
from selfdistill.models.tiny import tiny_model


@pytest.fixture(scope="module")
def model_and_prompts():
    model = tiny_model("llama", dtype=torch.float32, with_mask_token=False)
    g = torch.Generator().manual_seed(1)
    return model, [torch.randint(0, 90, (n,), generator=g).tolist() for n in (5, 9, 3, 7)]


def test_continuous_batching_decodes_what_generate_decodes(model_and_prompts):
    model, prompts = model_and_prompts
    plain = generate_baseline(model, prompts, make_strategy("generate"), batch_size=2, max_new_tokens=12)
    cb = generate_baseline(model, prompts, make_strategy("generate_cb"), batch_size=2, max_new_tokens=12)
    assert [len(s) for s in plain.sequences] == [12] * 4  # no early EOS: the whole budget is compared
    assert cb.sequences == plain.sequences
    assert cb.forward_passes == plain.forward_passes == [12] * 4  # one forward per token


def test_continuous_batching_refuses_stop_strings(model_and_prompts):
    from transformers import AutoTokenizer

    from selfdistill.models.tiny import teacher_path

    model, prompts = model_and_prompts
    tokenizer = AutoTokenizer.from_pretrained(teacher_path())
    with pytest.raises(ValueError, match="takes no stop strings"):
        generate_baseline(model, prompts, make_strategy("generate_cb"), batch_size=2, max_new_tokens=4,
                          stop_strings=["\n"], tokenizer=tokenizer)
