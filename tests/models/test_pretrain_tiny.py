"""scripts/pretrain_tiny.py: completion-only labels, and a two-step run that writes a loadable checkpoint."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from selfdistill.train import pretrain_tiny
from selfdistill.data.synthetic import synthetic_rows
from selfdistill.models.tiny import TinyModelShape


@pytest.fixture(scope="module")
def pretrain():
    return pretrain_tiny


def test_tiny_run_writes_an_auto_loadable_checkpoint_and_labels_only_the_answer(pretrain, tmp_path):
    cfg = pretrain.PretrainConfig(output_dir=str(tmp_path / "t"), n_per_subtask=20, max_steps=2, batch_size=4,
                                  num_threads=1)
    out = pretrain.run_pretrain_tiny(cfg, TinyModelShape(vocab_size=400, hidden_size=32, num_layers=1, num_heads=2,
                                            num_kv_heads=1, intermediate_size=64))
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert model.config.hidden_size == 32 and not (out / "_trainer").exists()
    record = json.loads((out / "pretrain_record.json").read_text())
    assert record["config"]["shape"]["hidden_size"] == 32 and record["parameters"] == model.num_parameters()

    row = synthetic_rows("synth_bbh", "web_of_lies", split="train", n=1)[0]
    (example,) = pretrain.tokenize_rows([row], tok, max_length=1024)
    n_prompt = sum(label == -100 for label in example["labels"])
    prompt_ids = example["input_ids"][:n_prompt]
    assert tok.decode(prompt_ids).startswith("Q: Question:") and tok.decode(prompt_ids).endswith("step by step.\n")
    assert example["labels"][n_prompt:] == example["input_ids"][n_prompt:]
    assert example["input_ids"][-1] == tok.eos_token_id
    with pytest.raises(ValueError, match="over the model's"):
        pretrain.tokenize_rows([row], tok, max_length=10)
