"""Self-generated (Magpie) prompts: the pure pieces on hand-made cases and SmolLM2's real template, and the recipe end
to end on the tiny teacher given a chat template (sampled turns answered with the model's greedy text, resumed
identically, read back by the trainer, mixed with another spec)."""

import json
import shutil

import pytest
import torch

from selfdistill.data.magpie import (CHAT_TASK, MAGPIE, clean_message, magpie_ids, magpie_question_row, magpie_rows,
                                     user_turn_template)
from selfdistill.data.prompts import SCHEMA, render_prompt

TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant: {% endif %}")


def test_the_user_turn_of_smollm2s_template():
    from transformers import AutoTokenizer

    from selfdistill.models.loader import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m-instruct"))
    turn = user_turn_template(tok)
    assert turn.prefix == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                           "<|im_end|>\n<|im_start|>user\n")
    assert turn.end == "<|im_end|>" == tok.eos_token
    message = "How many legs do 3 spiders have?"
    assert tok.apply_chat_template([{"role": "user", "content": message}], tokenize=False).startswith(
        turn.prefix + message + turn.end)


def test_a_tokenizer_without_a_chat_template_is_refused():
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="need a chat template"):
        user_turn_template(NoTemplate())


def test_clean_message_keeps_closed_turns_only():
    assert clean_message("  What is 2 + 3?\n<|e|>junk<|e|>", end="<|e|>") == "What is 2 + 3?"
    assert clean_message("What is 2 + 3? and then it went on", end="<|e|>") is None  # never closed
    assert clean_message(" hi <|e|>", end="<|e|>") is None  # too short to be a question
    assert clean_message(" hi <|e|>", end="<|e|>", min_chars=2) == "hi"


def test_ids_rows_and_the_training_rows_of_a_folder():
    assert magpie_ids(12, 2, seed=3) == ["magpie-3-000012", "magpie-3-000013"]
    row = magpie_question_row("magpie-0-000001", "Why is the sky blue?")
    assert set(row) == set(SCHEMA) and row["task"] == CHAT_TASK and row["subtask"] == MAGPIE
    assert render_prompt(row) == "Why is the sky blue?"
    with pytest.raises(ValueError, match="no few-shot form"):
        render_prompt(row, style="few_shot")
    records = [{"id": "a", "question": "Why is the sky blue?", "completion": "Rayleigh.", "finished": True},
               {"id": "b", "question": "why is the  sky blue?", "completion": "Light.", "finished": True},
               {"id": "c", "question": "What is 2 + 2?", "completion": "4", "finished": False},
               {"id": "d", "question": "What is 2 + 3?", "completion": "5", "finished": True}]
    rows = magpie_rows(records)
    assert [(r["id"], r["solution"]) for r in rows] == [("a", "Rayleigh."), ("d", "5")]  # repeats and cut-offs go
    assert all(set(r) == set(SCHEMA) for r in rows)


@pytest.fixture(scope="module")
def chat_teacher(tmp_path_factory):
    """The shipped tiny teacher with a chat template whose user turn ends with EOS (as SmolLM2's does)."""
    from transformers import AutoTokenizer

    from selfdistill.models.tiny import teacher_path

    path = tmp_path_factory.mktemp("chat") / "teacher"
    shutil.copytree(teacher_path(), path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(path)
    return path


def _cfg(path, out, **over):
    from selfdistill.eval.onpolicy_data import OnPolicyConfig

    args = {"model": str(path), "dataset": MAGPIE, "limit": 24, "chunk_rows": 12, "batch_size": 12,
            "chat_template": True, "max_new_tokens": 32, "magpie_max_tokens": 48, "num_threads": 1,
            "dtype": "float64", "out": str(out)} | over
    return OnPolicyConfig(**args)


def _records(out):
    return [json.loads(line) for p in sorted((out / "chunks").iterdir()) for line in p.read_text().splitlines()]


def test_recipe_samples_turns_answers_them_greedily_and_resumes(chat_teacher, tmp_path, monkeypatch):
    from selfdistill.data.prompts import apply_chat_template
    from selfdistill.data.sources import load_rows
    from selfdistill.eval.onpolicy_data import run_onpolicy_data
    from selfdistill.models.loader import load_model

    monkeypatch.chdir(tmp_path)  # a relative --out, as the documented commands give it
    out = tmp_path / "mp"
    spec = run_onpolicy_data(_cfg(chat_teacher, "mp"))
    every = _records(out)
    assert every and all(r["id"].startswith("magpie-0-") and r["question"] for r in every)
    assert len({r["id"] for r in every}) == len(every) <= 24

    model, tok = load_model(str(chat_teacher), dtype="float64")
    for rec in every[:4]:  # each answer is the model's greedy text in the chat template, decoded alone
        ids = tok(apply_chat_template(rec["question"], tok), add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=32, do_sample=False)[0, ids.shape[1]:]
        assert rec["completion"] == tok.decode(gen, skip_special_tokens=True).strip()

    rows = list(load_rows(spec, split="train")) + list(load_rows(spec, split="validation"))
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in magpie_rows(every))
    assert all(r["task"] == CHAT_TASK for r in rows)

    first = (out / "chunks" / "00000.jsonl").read_text()
    (out / "chunks" / "00001.jsonl").unlink()
    run_onpolicy_data(_cfg(chat_teacher, "mp"))  # the lost chunk samples the same turns again
    assert sorted(p.name for p in out.iterdir()) == ["chunks", "fingerprint.json", "meta.json"]
    assert (out / "chunks" / "00000.jsonl").read_text() == first and _records(out) == every

    mixed = load_rows(f"{spec} + synthetic:synth_gsm", split="train", synthetic_rows_per_subtask=5)
    synth = load_rows("synthetic:synth_gsm", split="train", synthetic_rows_per_subtask=5)
    assert sorted(set(mixed["task"])) == ["chat", "synth_gsm"] and len(mixed) == len(load_rows(spec)) + len(synth)


@pytest.mark.parametrize("over, message", [
    (dict(limit=0), "needs --limit >= 1"), (dict(chat_template=False), "needs --chat_template true"),
    (dict(magpie_temperature=0.0), "magpie_temperature > 0"), (dict(magpie_top_p=1.5), "magpie_top_p <= 1"),
])
def test_bad_magpie_options_are_refused_before_loading(chat_teacher, tmp_path, over, message):
    from selfdistill.eval.onpolicy_data import check_config

    with pytest.raises(ValueError, match=message):
        check_config(_cfg("/no/such/model", tmp_path / "x", **over))


def test_magpie_is_not_a_training_spec_by_itself():
    from selfdistill.data.sources import load_rows

    with pytest.raises(ValueError, match="onpolicy:<folder>"):
        load_rows(MAGPIE)
