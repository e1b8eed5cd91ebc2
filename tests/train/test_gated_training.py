"""Distillation with ``adapter: gated_lora``: the teacher is the student's own base path, only the adapter trains,
checkpoints hold the adapter alone, resume is exact, and the output folder loads with ``load_model``."""

import json

import pytest
import torch

from selfdistill.models import gated_lora as gl
from selfdistill.models.loader import load_model
from selfdistill.models.mask_token import mask_token_id_from, trained_k_max_from

from test_distill_trainer import _cfg, _losses, _model, _rows, _tokenizer  # noqa: E402  (tests/train on sys.path)

import copy

from selfdistill.train.data import training_windows
from selfdistill.train.run import run_distillation


@pytest.fixture(scope="module")
def tokenizer():
    return _tokenizer()


def _train(tokenizer, out, **over):
    over = dict(dict(k_min=2), **over)
    cfg = _cfg(out, adapter="gated_lora", lora_rank=4, lora_alpha=8.0, learning_rate=1e-2, **over)
    train = training_windows(_rows(), tokenizer, window=cfg.window_tokens, packing=cfg.packing)
    train = train.select(range(len(train) - 1))
    base = _model(tokenizer)
    return run_distillation(cfg, model=base, tokenizer=copy.deepcopy(tokenizer), train_dataset=train), _model(tokenizer)


def test_only_the_adapter_trains_and_the_teacher_is_the_same_module(tokenizer, tmp_path):
    trainer, untouched = _train(tokenizer, tmp_path / "run", max_steps=4)
    model = trainer.model
    assert isinstance(trainer.teacher, gl.BaseModelView) and trainer.teacher.module is model
    opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert opt == {id(p) for n, p in model.named_parameters() if n in gl.adapter_tensors(model)}
    # base weights did not move (compare with an untouched copy of the same seed, original vocab rows)
    base_state = {n.replace(".base.", "."): p for n, p in model.state_dict().items()}
    for name, w in untouched.state_dict().items():
        got = base_state[name]
        assert torch.equal(got[: w.shape[0]] if "embed" in name or "lm_head" in name else got, w), name
    assert all(torch.isfinite(torch.tensor(v)) for v in _losses(trainer).values())
    # slot 1 is the base model's own next-token prediction: it agrees with the teacher by construction
    slot1 = [h["agree_slot1"] for h in trainer.state.log_history if "agree_slot1" in h]
    assert slot1 and all(v == 1.0 for v in slot1)


def test_output_is_an_adapter_folder_that_load_model_applies(tokenizer, tmp_path):
    trainer, _ = _train(tokenizer, tmp_path / "run", max_steps=3)
    out = tmp_path / "run"
    assert (out / gl.CONFIG_FILE).is_file() and not (out / "model.safetensors").exists()
    meta = json.loads((out / gl.CONFIG_FILE).read_text())
    assert meta["rank"] == 4 and meta["mask_token_id"] == mask_token_id_from(trainer.model)
    assert meta["trained_k_max"] == trainer.args.k_max  # decoding warns past the trained slots
    # the base here is an in-test model, so point the adapter at a saved copy of it
    base_dir = tmp_path / "base"
    base = _model(tokenizer)
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    meta["base_model"] = str(base_dir)
    (out / gl.CONFIG_FILE).write_text(json.dumps(meta))
    loaded, tok = load_model(str(out))
    mask = mask_token_id_from(loaded)
    ids = torch.tensor([[5, 9, 12, 7, mask, mask]])
    trained = trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, trained(ids).logits)
        assert torch.equal(loaded(ids).logits[:, :4, : base.config.vocab_size], base(ids[:, :4]).logits)
    assert tok.convert_tokens_to_ids("<mtp>") == mask
    assert trained_k_max_from(loaded) == trainer.args.k_max


def test_resume_reproduces_uninterrupted_trajectory(tokenizer, tmp_path):
    full, _ = _train(tokenizer, tmp_path / "full")
    ckpt = tmp_path / "full" / "checkpoint-3"
    assert (ckpt / gl.WEIGHTS_FILE).is_file() and (ckpt / gl.WEIGHTS_FILE).stat().st_size < 200_000
    resumed, _ = _train(tokenizer, tmp_path / "resumed", resume_from_checkpoint=str(ckpt))
    a, b = _losses(full), _losses(resumed)
    for step in (4, 5, 6):
        assert b[step] == a[step], (step, b[step], a[step])


def test_the_shared_prefix_path_trains_as_the_packed_step(tokenizer, tmp_path):
    """gated_shared_prefix (the default) against the packed step: the same trajectory, up to float32 rounding."""
    shared, _ = _train(tokenizer, tmp_path / "shared")
    packed, _ = _train(tokenizer, tmp_path / "packed", gated_shared_prefix=False)
    assert shared._shared_prefix and not packed._shared_prefix
    a, b = _losses(shared), _losses(packed)
    assert a.keys() == b.keys() and len(a) == 6
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4, abs=1e-5), (step, a[step], b[step])


def test_bad_adapter_settings_fail_fast():
    with pytest.raises(ValueError, match="adapter='peft'"):
        _cfg("/tmp/unused", adapter="peft")
    with pytest.raises(ValueError, match="rank must be"):
        _cfg("/tmp/unused", adapter="gated_lora", lora_rank=0, k_min=2)
    for over in (dict(k_min=1), dict(k_min=2, ntp_weight=1.0)):
        with pytest.raises(ValueError, match="k_min must be >= 2 .* and ntp_weight 0"):
            _cfg("/tmp/unused", adapter="gated_lora", **over)
