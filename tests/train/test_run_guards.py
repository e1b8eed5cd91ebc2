"""A run that would end with exit 0 and a wrong result stops instead: non-finite loss or gradient, no loss items,
non-finite settings."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from selfdistill.train.guards import NoLossItemsError, TrainingDivergedError
from selfdistill.train.run import prepare_student
from selfdistill.train.trainer import DistillTrainer
from selfdistill.train.data import training_windows

from test_distill_trainer import _cfg, _model, _rows, _train


@pytest.fixture(scope="module")
def tokenizer():
    from test_distill_trainer import _tokenizer

    return _tokenizer()


def _trainer(tokenizer, out, **over):
    cfg = _cfg(out, **over)
    model, tok = prepare_student(cfg, _model(tokenizer), copy.deepcopy(tokenizer))
    train = training_windows(_rows(), tok, window=cfg.window_tokens, packing=cfg.packing)
    return DistillTrainer(model, cfg, train_dataset=train.select(range(len(train) - 1)), processing_class=tok)


def _poison_after(trainer, step, how):
    """From global step ``step`` on, make the student's loss (``how="loss"``) or its gradients (``"grad"``) inf."""
    head = trainer.model.get_output_embeddings()
    if how == "loss":
        head.register_forward_hook(lambda m, i, out: out * float("nan") if trainer.state.global_step >= step else out)
    else:
        head.weight.register_hook(lambda g: g * float("inf") if trainer.state.global_step >= step else g)


@pytest.mark.parametrize("how", ["loss", "grad"])
def test_a_non_finite_step_stops_before_the_optimizer_step(tokenizer, tmp_path, how):
    trainer = _trainer(tokenizer, tmp_path, max_steps=8, save_steps=2)
    _poison_after(trainer, 3, how)
    with pytest.raises(TrainingDivergedError, match="step 4.*checkpoint-2.*last good one"):
        trainer.train()
    assert trainer.state.global_step == 3
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # the bad step was never applied
    saved = load_file(tmp_path / "checkpoint-2" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in saved.values())
    assert not (tmp_path / "checkpoint-4").exists()
    losses = [r["loss"] for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if "loss" in r]
    assert len(losses) == 3 and all(v > 0 and torch.isfinite(torch.tensor(v)) for v in losses)


def test_a_run_without_loss_items_stops_naming_the_cause(tokenizer, tmp_path):
    cfg = _cfg(tmp_path, completion_only_loss=True, packing=False, max_steps=4)
    model, tok = prepare_student(cfg, _model(tokenizer), copy.deepcopy(tokenizer))
    train = training_windows(_rows(), tok, window=cfg.window_tokens, packing=False)
    prompts_only = train.map(lambda row: {"completion": [False] * len(row["completion"])})  # prompts > window
    trainer = DistillTrainer(model, cfg, train_dataset=prompts_only.with_format("torch"), processing_class=tok)
    with pytest.raises(NoLossItemsError, match="kept_regions 0.*completion_only_loss.*longer than the"):
        trainer.train()
    assert trainer.state.global_step == 1


def test_loss_items_are_logged(tokenizer, tmp_path):
    trainer = _train(tokenizer, tmp_path, max_steps=2)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert all(h["loss_items"] > 0 for h in logged)


@pytest.mark.parametrize("over", [dict(ntp_weight=float("nan")), dict(learning_rate=float("inf")),
                                  dict(entropy_beta=float("-inf")), dict(validation_fraction=float("nan"))])
def test_non_finite_settings_are_refused(over):
    with pytest.raises(ValueError, match=f"must be finite numbers.*{next(iter(over))}"):
        _cfg("/tmp/unused", **over)


def test_the_nan_filter_cannot_be_turned_back_on():
    with pytest.raises(ValueError, match="logging_nan_inf_filter must be False"):
        _cfg("/tmp/unused", logging_nan_inf_filter=True)


def test_fsdp_activation_checkpointing_turns_the_shared_prefix_step_off():
    """HF turns the KV cache off under activation checkpointing, which the shared-prefix step needs: the guard
    sees the training argument and FSDP's own switch (fsdp_config or the accelerate config's plugin)."""
    from types import SimpleNamespace as NS

    from selfdistill.train.trainer import checkpoints_activations

    plain = NS(gradient_checkpointing=False, activation_checkpointing=False, fsdp_config={})
    no_fsdp = NS(state=NS(fsdp_plugin=None))
    assert not checkpoints_activations(plain, no_fsdp)
    assert checkpoints_activations(NS(**{**vars(plain), "gradient_checkpointing": True}), no_fsdp)
    assert checkpoints_activations(NS(**{**vars(plain), "fsdp_config": {"activation_checkpointing": True}}), no_fsdp)
    assert checkpoints_activations(plain, NS(state=NS(fsdp_plugin=NS(activation_checkpointing=True))))
