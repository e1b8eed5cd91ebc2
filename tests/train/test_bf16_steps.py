"""bf16-autocast training steps of each recipe run on CPU and give finite losses (README and configs use bf16)."""

import math

import pytest

from test_distill_trainer import _losses, _tokenizer, _train


@pytest.mark.parametrize("adapter", ["none", "gated_lora"])
def test_two_bf16_autocast_training_steps_of_each_recipe(tmp_path, adapter):
    over = dict(adapter="gated_lora", lora_rank=4, lora_alpha=8.0, k_min=2) if adapter == "gated_lora" else {}
    trainer = _train(_tokenizer(), tmp_path, max_steps=2, bf16=True, **over)
    losses = _losses(trainer)
    assert trainer.args.bf16 and len(losses) == 2 and all(math.isfinite(v) for v in losses.values())
