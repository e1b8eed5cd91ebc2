"""The shipped tiny teacher: an ordinary HF checkpoint that loads offline and has learnt its world."""

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rewards import grade, grader_for_task
from selfdistill.data.prompts import render_prompt
from selfdistill.data.synthetic import synthetic_rows
from selfdistill.models.loader import resolve_model_path
from selfdistill.models.tiny import TINY_TEACHER_ALIAS, teacher_path


def test_teacher_loads_with_auto_classes_and_safetensors():
    path = teacher_path()
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama"
    assert tok.eos_token_id == model.config.eos_token_id == model.generation_config.eos_token_id
    assert tok.decode(tok("Q: 12 + -3 =").input_ids) == "Q: 12 + -3 ="
    assert resolve_model_path(TINY_TEACHER_ALIAS) == str(path)
    record = json.loads((path / "pretrain_record.json").read_text())
    assert {"command", "commit", "hardware", "wall_time_s", "config"} <= set(record)


def test_teacher_solves_held_out_synthetic_problems():
    path = teacher_path()
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    # web_of_lies is the subtask the shipped teacher has fully learnt (results/tiny_teacher/); the others are not
    # reliable enough to assert on.
    rows = synthetic_rows("synth_bbh", "web_of_lies", split="test", n=8, seed=99)
    enc = tok([render_prompt(r) for r in rows], return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=160, pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    correct = sum(grade(grader_for_task(r["task"]), t, r["answer"]) for r, t in zip(rows, texts))
    assert correct >= 7, list(zip(texts, [r["answer"] for r in rows]))
