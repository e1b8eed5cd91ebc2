"""DistillTrainer end to end on a tiny random model and an in-test tokenizer: train, save/load, resume, configs."""

import copy
import glob
import json
import os

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from selfdistill.train.config import DistillConfig, sample_chunk_and_offset
from selfdistill.train.run import run_distillation
from selfdistill.train.run_dir import RESOLVED_CONFIG, RUN_RECORD
from selfdistill.train.trainer import DistillTrainer, frozen_teacher
from selfdistill.models.mask_token import CONFIG_KEY, MASK_TOKEN
from selfdistill.data.prompts import SCHEMA, render_training_text
from selfdistill.models.tiny import tiny_model
from selfdistill.train.data import build_windows, training_windows

from selfdistill.train.online_distill import parse_config, run_online_distill
from support import REPO


def _rows(n=24):
    rows = [{"id": f"t/{i}", "task": "synth_gsm", "subtask": "add", "question": f"Tom has {i} apples and gets {i + 3}.",
             "solution": f"{i} + {i + 3} = {2 * i + 3}. The answer is: {2 * i + 3}", "answer": str(2 * i + 3),
             "group": f"g{i % 6}"} for i in range(n)]
    return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in SCHEMA})


def _tokenizer():
    """A byte-level BPE tokenizer trained in-test on the rows below (deterministic)."""
    from selfdistill.models.tiny import train_tokenizer

    return train_tokenizer([a + b for a, b in map(render_training_text, _rows(60))], vocab_size=200)


@pytest.fixture(scope="module")
def tokenizer():
    return _tokenizer()


def _model(tokenizer, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, bos_token_id=None,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return AutoModelForCausalLM.from_config(cfg)


def _cfg(out, **over):
    base = dict(output_dir=str(out), k_min=1, k_max=4, num_regions=3, seq_len=24, max_steps=6,
                per_device_train_batch_size=2, logging_steps=1, save_steps=3, learning_rate=1e-3, use_cpu=True,
                seed=3, report_to="none", lr_scheduler_type="constant_with_warmup", warmup_steps=2,
                disable_tqdm=True, dataloader_num_workers=0, packing=True)
    base.update(over)
    return DistillConfig(**base)


def _train(tokenizer, out, **over):
    cfg = _cfg(out, **over)
    train = training_windows(_rows(), tokenizer, window=cfg.window_tokens, packing=cfg.packing)
    train = train.select(range(len(train) - 1))  # drop the padded tail window: every micro-batch is full
    # a fresh tokenizer per run: adding the mask token mutates it
    return run_distillation(cfg, model=_model(tokenizer), tokenizer=copy.deepcopy(tokenizer), train_dataset=train)


def _losses(trainer):
    return {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}


def test_train_save_and_load(tokenizer, tmp_path):
    trainer = _train(tokenizer, tmp_path / "run", max_steps=4)
    losses = _losses(trainer)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run")
    tok = AutoTokenizer.from_pretrained(tmp_path / "run")
    mask_id = getattr(model.config, CONFIG_KEY)
    assert mask_id == tok.convert_tokens_to_ids(MASK_TOKEN)
    # transformers 5.23's GenerationConfig.from_pretrained drops unknown keys, but the saved file carries the id
    assert json.loads((tmp_path / "run" / "generation_config.json").read_text())[CONFIG_KEY] == mask_id
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)
    # the teacher stayed frozen at the initial weights; the student moved
    teacher_w = trainer.teacher.get_input_embeddings().weight
    assert not teacher_w.requires_grad and not torch.equal(teacher_w, model.get_input_embeddings().weight)
    opt_params = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not opt_params & {id(p) for p in trainer.teacher.parameters()}
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert {"agree_slot1", "agree_run", "tokens_per_second", "k_count_1"} <= set(records[0])
    assert sum(records[0][f"k_count_{k}"] for k in range(1, 5)) == 1


def test_resume_reproduces_uninterrupted_trajectory(tokenizer, tmp_path):
    full = _losses(_train(tokenizer, tmp_path / "full"))
    ckpt = tmp_path / "full" / "checkpoint-3"
    assert (ckpt / "model.safetensors").is_file()
    resumed = _losses(_train(tokenizer, tmp_path / "resumed", resume_from_checkpoint=str(ckpt)))
    # the restored log history holds steps 1-3; steps 4-6 were computed after resuming
    records = [json.loads(line) for line in open(tmp_path / "resumed" / "metrics.jsonl")]
    assert [r["step"] for r in records if "loss" in r] == [4, 5, 6]
    for step in (4, 5, 6):
        assert resumed[step] == full[step], (step, resumed[step], full[step])


def test_gradient_accumulation_matches_bigger_batch(tokenizer, tmp_path):
    """GA over 2 micro-batches of 2 == one batch of 4 when every micro-batch draws the same k (k fixed)."""
    a = _losses(_train(tokenizer, tmp_path / "a", k_min=3, k_max=3, random_offset=False, max_steps=3,
                       per_device_train_batch_size=4))
    b = _losses(_train(tokenizer, tmp_path / "b", k_min=3, k_max=3, random_offset=False, max_steps=3,
                       per_device_train_batch_size=2, gradient_accumulation_steps=2))
    assert a.keys() == b.keys()
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-6)


def test_unpacked_rows_prune_regions_after_eos(tokenizer, tmp_path):
    trainer = _train(tokenizer, tmp_path / "u", packing=False, max_steps=2, k_min=3, k_max=3, seq_len=120)
    kept = [h["kept_regions"] for h in trainer.state.log_history if "kept_regions" in h]
    assert trainer.stop_token_ids == (tokenizer.pad_token_id, tokenizer.eos_token_id) and min(kept) < 1.0


def test_completion_only_loss_drops_regions_that_predict_prompts(tokenizer, tmp_path):
    common = dict(packing=False, max_steps=2, k_min=3, k_max=3, seq_len=90, num_regions=6, random_offset=False)
    every = _train(tokenizer, tmp_path / "all", **common)
    only = _train(tokenizer, tmp_path / "completion", completion_only_loss=True, **common)
    kept = [[h["kept_regions"] for h in t.state.log_history if "kept_regions" in h] for t in (every, only)]
    assert 0 < max(kept[1]) < min(kept[0])  # the first regions of each window predict prompt tokens
    cfg = _cfg(tmp_path / "x", completion_only_loss=True)
    train = training_windows(_rows(), tokenizer, window=cfg.window_tokens, packing=True).remove_columns("completion")
    with pytest.raises(ValueError, match="'completion' column"):
        run_distillation(cfg, model=_model(tokenizer), tokenizer=copy.deepcopy(tokenizer), train_dataset=train)


def test_k_and_offset_sampling_is_stateless_and_rank_shared():
    cfg = _cfg("/tmp/unused", k_min=2, k_max=5, seq_len=30, num_regions=3)
    draws = [sample_chunk_and_offset(cfg, step=s) for s in range(200)]
    assert draws == [sample_chunk_and_offset(cfg, step=s) for s in range(200)]
    assert {k for k, _ in draws} == {2, 3, 4, 5}
    assert all(0 <= o < 10 - (k - 1) for k, o in draws) and len({o for _, o in draws}) > 3
    assert all(sample_chunk_and_offset(cfg, step=s, rank=1) == draws[s] for s in range(50))
    per_rank = _cfg("/tmp/unused", k_min=2, k_max=5, seq_len=30, num_regions=3, k_sampling="per_rank")
    assert any(sample_chunk_and_offset(per_rank, step=s, rank=1) != sample_chunk_and_offset(per_rank, step=s)
               for s in range(50))
    no_offset = _cfg("/tmp/unused", random_offset=False)
    assert all(sample_chunk_and_offset(no_offset, step=s)[1] == 0 for s in range(20))


@pytest.mark.parametrize("over, message", [
    (dict(k_max=9), "cannot fit k_max=9"),
    (dict(seq_len=25), "multiple of num_regions"),
    (dict(k_min=5, k_max=4), "k_min <= k_max"),
    (dict(loss_mode="mse"), "loss_mode='mse'"),
    (dict(teacher_dtype="int8"), "teacher_dtype"),
    (dict(k_sampling="random"), "k_sampling"),
    (dict(ntp_weight=-1.0), "ntp_weight"),
    (dict(remove_unused_columns=True), "remove_unused_columns"),
    (dict(eval_k=7), "eval_k"),
])
def test_bad_configs_fail_fast(over, message):
    with pytest.raises(ValueError, match=message):
        _cfg("/tmp/unused", **over)


def test_trainer_requires_mask_token(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="no mask token"):
        DistillTrainer(_model(tokenizer), _cfg(tmp_path))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml"))))
def test_every_config_parses(path, tmp_path):
    cfg = parse_config(["--config", path, "--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"])
    assert isinstance(cfg, DistillConfig) and cfg.window_tokens > cfg.seq_len - cfg.num_regions * cfg.k_max


def test_paper_recipe_values():
    cfg = parse_config(["--config", os.path.join(REPO, "configs", "qwen3_4b_instruct.yaml"), "--use_cpu", "true",
                        "--bf16", "false"])
    assert (cfg.k_min, cfg.k_max, cfg.num_regions, cfg.seq_len) == (2, 16, 5, 160)
    assert (cfg.adam_beta1, cfg.adam_beta2, cfg.weight_decay, cfg.max_grad_norm) == (0.9, 0.95, 0.1, 1.0)
    assert (cfg.learning_rate, cfg.warmup_steps, cfg.lr_scheduler_type.value) == (1e-5, 2000, "constant_with_warmup")
    assert cfg.per_device_train_batch_size * 4 == 128 and not cfg.chat_template


def test_cli_overrides_and_default_config(tmp_path):
    cfg = parse_config(["--output_dir", str(tmp_path), "--k_max", "4"])
    assert cfg.model_name_or_path == "tiny-teacher" and cfg.k_max == 4


def test_the_recipe_on_the_default_config_writes_checkpoint_and_run_record(tmp_path):
    """The shipped default (tiny teacher, synthetic corpus, configs/tiny.yaml) end to end, two steps."""
    cfg = parse_config(["--output_dir", str(tmp_path), "--max_steps", "2", "--logging_steps", "1",
                        "--synthetic_rows_per_subtask", "20", "--save_strategy", "no", "--eval_strategy", "no",
                        "--disable_tqdm", "true"])
    run_online_distill(cfg)
    record = json.loads((tmp_path / RUN_RECORD).read_text())
    assert {"command", "commit", "hardware", "versions", "time_utc"} <= set(record["provenance"])
    assert record["steps"] == 2 and record["wall_time_s"] > 0
    assert record["first_logged"]["step"] == 1 and record["last_logged"]["step"] == 2
    assert (tmp_path / RESOLVED_CONFIG).is_file()
    from selfdistill.models.gated_lora import gated_state
    from selfdistill.models.loader import load_model

    model, _ = load_model(str(tmp_path))  # the demo recipe is gated LoRA: an adapter folder over the tiny teacher
    assert getattr(model.config, CONFIG_KEY) is not None and gated_state(model) is not None


def test_windows_packing_and_padding():
    out = build_windows([[1, 2, 3], [4, 5]], window=4, pad_id=0, packing=True)
    assert out["input_ids"].tolist() == [[1, 2, 3, 4], [5, 0, 0, 0]]
    assert out["valid"].tolist() == [[True] * 4, [True, False, False, False]]
    out = build_windows([[1, 2, 3, 4, 5], [6]], window=3, pad_id=9, packing=False)
    assert out["input_ids"].tolist() == [[1, 2, 3], [6, 9, 9]]
    assert out["valid"].tolist() == [[True] * 3, [True, False, False]]


def test_windows_mark_the_completion_side_of_each_row():
    out = build_windows([[1, 2, 3], [4, 5]], window=4, pad_id=0, packing=True, prompt_lengths=[2, 1])
    assert out["completion"].tolist() == [[False, False, True, False], [True, False, False, False]]
    out = build_windows([[1, 2, 3, 4, 5], [6]], window=3, pad_id=9, packing=False, prompt_lengths=[1, 0])
    assert out["input_ids"].tolist() == [[2, 3, 4], [6, 9, 9]]  # cut where the completion is (window_start)
    assert out["completion"].tolist() == [[True, True, True], [True, False, False]]
    assert out["truncated_rows"] == 1
    with pytest.raises(ValueError, match="prompt lengths"):
        build_windows([[1, 2]], window=3, pad_id=0, packing=False, prompt_lengths=[1, 1])


def test_window_start_keeps_the_completion_of_a_long_row():
    from selfdistill.train.data import window_start

    assert window_start(10, prompt_length=8, window=10) == 0  # fits
    assert window_start(12, prompt_length=0, window=8) == 0  # no prompt: the row's start
    assert window_start(20, prompt_length=14, window=8) == 12  # completion (6) fits: the window ends at the row's end
    assert window_start(40, prompt_length=10, window=8) == 8  # completion too long: 8 // 4 = 2 tokens of context
    # a chat prompt longer than the window no longer leaves a window with no completion token
    out = build_windows([list(range(30))], window=8, pad_id=0, packing=False, prompt_lengths=[26])
    assert out["completion"].sum() == 4 and out["input_ids"].tolist() == [list(range(22, 30))]


def test_row_tokens_split_prompt_from_target(tokenizer):
    from selfdistill.train.data import row_tokens

    for row in _rows(5):
        ids, n_prompt = row_tokens(row, tokenizer)
        prompt, target = render_training_text(row)
        assert tokenizer.decode(ids[:n_prompt]) == prompt
        assert tokenizer.decode(ids[n_prompt:-1]) == target and ids[-1] == tokenizer.eos_token_id


def test_training_windows_end_rows_with_eos(tokenizer):
    ds = training_windows(_rows(3), tokenizer, window=64, packing=False)
    ids, valid = ds[0]["input_ids"], ds[0]["valid"]
    n = int(valid.sum())
    assert ids[n - 1].item() == tokenizer.eos_token_id and (ids[n:] == tokenizer.pad_token_id).all()
    assert tokenizer.decode(ids[: n - 1]).startswith("Tom has 0 apples")
    with pytest.raises(ValueError, match="normalised columns"):
        training_windows(_rows(2).remove_columns("group"), tokenizer, window=8, packing=True)


def test_load_rows_local_file_grouped_split_and_errors(tmp_path):
    from selfdistill.data.sources import load_rows

    path = tmp_path / "rows.jsonl"
    _rows(24).to_json(str(path))
    train, val = load_rows(str(path), split="train", seed=1), load_rows(str(path), split="validation", seed=1,
                                                                          validation_fraction=0.3)
    assert len(train) + len(load_rows(str(path), split="validation", seed=1)) == 24
    assert set(train["group"]).isdisjoint(load_rows(str(path), split="validation", seed=1)["group"])
    assert len(val) > 0 and set(val.column_names) == set(SCHEMA)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_rows("no-such-dataset")
    with pytest.raises(ValueError, match="split must be"):
        load_rows(str(path), split="test")


def test_load_rows_synthetic():
    from selfdistill.data.sources import load_rows

    rows = load_rows("synthetic:synth_gsm", synthetic_rows_per_subtask=3)
    assert len(rows) > 0 and set(rows["task"]) == {"synth_gsm"}


def test_frozen_teacher_refuses_a_zero3_partitioned_student():
    """A deep copy of ZeRO-3 shards would be a teacher without weights: refuse it, saying what to do."""
    model = tiny_model()
    next(model.parameters()).ds_id = 0  # what deepspeed.zero.Init leaves on every parameter
    with pytest.raises(ValueError, match="partitioned by DeepSpeed ZeRO-3.*create your model before"):
        frozen_teacher(model)


@pytest.mark.parametrize("tied", [False, True])
def test_a_cast_teacher_is_the_students_weights_rounded_once(tied):
    """Each tensor is copied straight into the teacher's dtype: equal to casting the student's, tied weights still
    one tensor, the student untouched, and the same logits as the student cast as a whole."""
    model = tiny_model(dtype=torch.float32, tie_word_embeddings=tied)
    teacher = frozen_teacher(model, dtype=torch.bfloat16)
    for (name, p), (_, q) in zip(model.named_parameters(), teacher.named_parameters()):
        assert q.dtype == torch.bfloat16 and p.dtype == torch.float32 and not q.requires_grad
        assert torch.equal(q, p.detach().to(torch.bfloat16)) and q.data_ptr() != p.data_ptr(), name
    assert (teacher.lm_head.weight is teacher.model.embed_tokens.weight) == tied
    ids = torch.randint(0, 90, (2, 7))
    reference = copy.deepcopy(model).to(torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(teacher(ids).logits, reference(ids).logits)


def test_the_teacher_follows_the_runs_mixed_precision():
    from types import SimpleNamespace

    from selfdistill.train.trainer import teacher_dtype_for

    def args(**kw):
        return SimpleNamespace(**({"teacher_dtype": "auto", "bf16": False, "fp16": False} | kw))

    assert teacher_dtype_for(args()) is None
    assert teacher_dtype_for(args(bf16=True)) == torch.bfloat16 and teacher_dtype_for(args(fp16=True)) == torch.float16
    assert teacher_dtype_for(args(bf16=True, teacher_dtype="float32")) == torch.float32


@pytest.mark.parametrize("over", [{}, dict(adapter="gated_lora", k_min=2, lora_rank=4, lora_alpha=8.0)],
                         ids=["full", "gated"])
def test_an_optimizer_step_reads_the_device_once(tokenizer, tmp_path, monkeypatch, over):
    # Host syncs on a GPU (#33 item 3): inside the trainer's step (forward, loss, stats, backward) and its gradient
    # check, the only read is the one .tolist() of the loss flags and gradient norm per optimizer step; the stats stay
    # on the device until the log. (The data collator's reads run on the host's own tensors, before the copy.)
    from support import HostReads

    reads = HostReads()
    for name in ("training_step", "_get_grad_norm"):
        original = getattr(DistillTrainer, name)

        def spied(self, *args, _original=original, **kwargs):
            with reads:
                return _original(self, *args, **kwargs)
        monkeypatch.setattr(DistillTrainer, name, spied)
    _train(tokenizer, tmp_path / "run", max_steps=3, gradient_accumulation_steps=2, logging_steps=100,
           save_strategy="no", **over)
    assert dict(reads.counts) == {"tolist": 3}
