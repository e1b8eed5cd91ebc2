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


def test_init_adapter_warm_starts_from_a_saved_adapter_and_the_record_chains_its_lineage(tokenizer, tmp_path):
    from selfdistill.train.run import check_init_adapter, prepare_student
    from selfdistill.train.run_record import write_run_record

    parent, _ = _train(tokenizer, tmp_path / "parent", max_steps=3)
    parent_dir = tmp_path / "parent"
    (parent_dir / "run_record.json").write_text(json.dumps({
        "commit": "abc", "steps": 3, "raw_tokens": 1000, "loss_items": 90, "wall_time_s": 2.0,
        "lineage": [{"commit": "old", "steps": 5, "raw_tokens": 50, "loss_items": 7, "wall_time_s": 1.0}]}))
    # the student of a warm-started run starts at the parent's adapter and mask-token rows, exactly
    cfg = _cfg(tmp_path / "child", adapter="gated_lora", lora_rank=4, lora_alpha=8.0, k_min=2,
               init_adapter=str(parent_dir))
    check_init_adapter(cfg)
    child, _ = prepare_student(cfg, _model(tokenizer), copy.deepcopy(tokenizer))
    want = gl.adapter_tensors(parent.model)
    got = gl.adapter_tensors(child)
    assert want.keys() == got.keys() and all(torch.equal(got[k], want[k]) for k in want)
    base_vocab = gl.gated_state(child).base_vocab_size
    assert torch.equal(child.get_input_embeddings().weight[base_vocab:],
                       parent.model.get_input_embeddings().weight[base_vocab:])
    # training continues from there, and the run record chains the parents with totals
    trainer, _ = _train(tokenizer, tmp_path / "child", max_steps=2, init_adapter=str(parent_dir))
    path = write_run_record(trainer.args, trainer, {"commit": "new"}, 1.5)
    record = json.loads(path.read_text())
    assert [r["commit"] for r in record["lineage"]] == ["abc", "old"]
    assert record["steps"] == 2 and record["total"]["steps"] == 2 + 3 + 5
    assert record["total"]["loss_items"] == record["loss_items"] + 90 + 7 and record["loss_items"] > 0
    assert record["raw_tokens"] == 2 * 2 * trainer.args.window_tokens  # steps x batch x window


def test_init_adapter_of_another_shape_or_without_gated_lora_is_refused_before_loading(tokenizer, tmp_path):
    from selfdistill.train.run import check_init_adapter

    _train(tokenizer, tmp_path / "parent", max_steps=1)
    cfg = _cfg(tmp_path / "child", adapter="gated_lora", lora_rank=8, lora_alpha=8.0, k_min=2,
               init_adapter=str(tmp_path / "parent"))
    with pytest.raises(ValueError, match=r"another shape .*'rank': \(4, 8\)"):
        check_init_adapter(cfg)
    with pytest.raises(ValueError, match="init_adapter continues a gated LoRA adapter"):
        _cfg(tmp_path / "x", init_adapter=str(tmp_path / "parent"))
    full = tmp_path / "full_checkpoint"
    _model(tokenizer).save_pretrained(full)  # a model checkpoint, not an adapter
    cfg = _cfg(tmp_path / "child", adapter="gated_lora", lora_rank=4, lora_alpha=8.0, k_min=2, init_adapter=str(full))
    with pytest.raises(FileNotFoundError, match="not a gated LoRA adapter folder"):
        check_init_adapter(cfg)
