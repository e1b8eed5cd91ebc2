"""Prompt formats: zero-/few-shot rendering per family, stop strings, and byte-for-byte agreement of the few-shot
prompts with lm-eval 0.4.13's ``gsm8k_cot`` and ``bbh_cot_fewshot`` tasks (what the paper's tables used)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from rewards import grade
from selfdistill.data.gsm8k_exemplars import GSM8K_COT_EXEMPLARS
from selfdistill.paths import default_bbh_dir
from selfdistill.data.prompts import (SCHEMA, apply_chat_template, bbh_fewshot_header, fewshot_prefix_for,
                                      render_prompt, render_target, render_training_text, stop_strings)

needs_bbh = pytest.mark.skipif(not (default_bbh_dir() / "cot-prompts").is_dir(),
                               reason=f"BBH data absent at {default_bbh_dir()} (needs ../shared/data)")


def _row(task, question="Q?", solution="S", answer="1", subtask=""):
    row = dict.fromkeys(SCHEMA, "")
    row.update(id="x/0", task=task, subtask=subtask, question=question, solution=solution, answer=answer)
    return row


def _lm_eval_task_dir() -> Path:
    lm_eval = pytest.importorskip("lm_eval", reason="lm-eval not installed (pip install -e .[eval])")
    return Path(lm_eval.__file__).parent / "tasks"


# --- GSM8K ---------------------------------------------------------------------------------------------------

def test_gsm8k_exemplars_are_the_8_standard_ones():
    assert len(GSM8K_COT_EXEMPLARS) == 8
    assert GSM8K_COT_EXEMPLARS[0][0].startswith("There are 15 trees in the grove.")
    assert [re.search(r"The answer is (\d+)\.$", a).group(1) for _, a in GSM8K_COT_EXEMPLARS] == \
        ["6", "5", "39", "8", "9", "29", "33", "8"]
    for _, a in GSM8K_COT_EXEMPLARS:  # our graders read every exemplar's answer
        n = re.search(r"(\d+)\.$", a).group(1)
        assert grade("gsm8k_strict", a, n) and grade("gsm8k_flexible", a, n)


def test_gsm8k_prompts():
    row = _row("gsm8k", question="How many?", solution="2 + 2 = 4\n#### 4", answer="4")
    assert render_prompt(row) == "Question: How many?\nAnswer:"
    assert render_target(row) == " 2 + 2 = 4\n#### 4"
    assert render_training_text(row) == ("Question: How many?\nAnswer:", " 2 + 2 = 4\n#### 4")
    prefix = fewshot_prefix_for("gsm8k")
    assert prefix.count("Q: ") == 8 and prefix.count("\nA: ") == 8 and prefix.endswith("The answer is 8.\n\n")
    few = render_prompt(row, style="few_shot", fewshot_prefix=prefix)
    assert few == prefix + "Q: How many?\nA:"
    assert "Question:" not in few
    assert "\n\nQ:" in stop_strings("gsm8k", style="few_shot")
    assert "Question:" in stop_strings("gsm8k")


def test_gsm8k_fewshot_prompt_equals_lm_eval_gsm8k_cot():
    cfg = yaml.safe_load((_lm_eval_task_dir() / "gsm8k" / "gsm8k-cot.yaml").read_text())
    samples = cfg["fewshot_config"]["samples"]
    assert GSM8K_COT_EXEMPLARS == [(s["question"], s["target"]) for s in samples]
    # lm-eval: doc_to_text "Q: {q}\nA:", target delimiter " ", few-shot delimiter "\n\n"
    question = "Janet has 3 apples. How many?"
    lm_eval_text = "\n\n".join(f"Q: {s['question']}\nA: {s['target']}" for s in samples) + f"\n\nQ: {question}\nA:"
    ours = render_prompt(_row("gsm8k", question=question), style="few_shot", fewshot_prefix=fewshot_prefix_for("gsm8k"))
    assert ours == lm_eval_text


# --- MetaMathQA family ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["metamathqa", "synth_gsm"])
def test_metamath_prompts(task):
    row = _row(task, question="What is 1+1?", solution="1+1=2.\nThe answer is: 2", answer="2")
    assert render_prompt(row) == "What is 1+1?\n\n"
    assert "".join(render_training_text(row)) == "What is 1+1?\n\n1+1=2.\nThe answer is: 2"
    assert stop_strings(task) == []
    with pytest.raises(ValueError, match="no few-shot prompt"):
        fewshot_prefix_for(task)


# --- BBH -----------------------------------------------------------------------------------------------------

def test_bbh_zero_shot_prompt_and_no_target():
    row = _row("bbh", question="not ( True ) is", solution="", answer="False", subtask="boolean_expressions")
    assert render_prompt(row) == "Q: not ( True ) is\nA: Let's think step by step.\n"
    with pytest.raises(ValueError, match="no reference solution"):
        render_target(row)
    assert stop_strings("bbh") == ["\n\nQ:"]


def test_bbh_fewshot_header_drops_canary_and_fixes_one_line_trigger():
    text = ("CANARY GUID x\n-----\nDescribe.\n\nQ: a\nA: Let's think step by step. Because. So the answer is Yes.\n\n"
            "Q: b\nA: Let's think step by step.\nSo the answer is No.\n")
    assert bbh_fewshot_header(text) == ("Describe.\n\nQ: a\nA: Let's think step by step.\nBecause. So the answer is "
                                        "Yes.\n\nQ: b\nA: Let's think step by step.\nSo the answer is No.\n\n")


@needs_bbh
def test_bbh_fewshot_prefixes_have_3_items_and_no_canary():
    from selfdistill.data.benchmarks import BBH_SUBTASKS

    for name in BBH_SUBTASKS:
        prefix = fewshot_prefix_for("bbh", name)
        assert len(re.findall(r"(?m)^Q: ", prefix)) == 3, name
        assert prefix.count("A: Let's think step by step.\n") == 3, name
        assert "canary" not in prefix.lower() and "-----" not in prefix, name
        assert prefix.endswith("\n\n") and not prefix.startswith("Q:"), name  # task description first
    with pytest.raises(FileNotFoundError, match="no_such_task.txt"):
        fewshot_prefix_for("bbh", "no_such_task")


@needs_bbh
def test_bbh_fewshot_prompt_equals_lm_eval_bbh_cot_fewshot():
    from selfdistill.data.benchmarks import BBH_SUBTASKS, load_bbh

    task_dir = _lm_eval_task_dir() / "bbh" / "cot_fewshot"
    for name in BBH_SUBTASKS:
        cfg = yaml.safe_load((task_dir / f"{name}.yaml").read_text())
        doc_to_text = cfg["doc_to_text"]  # "Q: {{input}}\nA: Let's think step by step.\n", target delimiter ""
        row = load_bbh(subtasks=name)[0]
        lm_eval_text = (cfg["description"]
                        + "\n\n".join(doc_to_text.replace("{{input}}", s["input"]) + s["target"]
                                      for s in cfg["fewshot_config"]["samples"])
                        + "\n\n" + doc_to_text.replace("{{input}}", row["question"]))
        ours = render_prompt(row, style="few_shot", fewshot_prefix=fewshot_prefix_for("bbh", name))
        assert ours == lm_eval_text, name


# --- shared --------------------------------------------------------------------------------------------------

def test_unknown_task_and_style():
    with pytest.raises(ValueError, match="unknown task"):
        render_prompt(_row("mmlu"))
    with pytest.raises(ValueError, match="unknown prompt style"):
        render_prompt(_row("gsm8k"), style="three_shot")


class _StubTokenizer:
    def __init__(self, template):
        self.chat_template = template
        self.calls = []

    def apply_chat_template(self, messages, **kwargs):
        self.calls.append((messages, kwargs))
        return "<user>" + messages[0]["content"] + "<assistant>"


def test_apply_chat_template():
    from transformers import AutoTokenizer

    from selfdistill.models.loader import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m-mtp"))  # SmolLM2's real template, by hand:
    assert apply_chat_template("hi", tok) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="has none"):
        apply_chat_template("hi", _StubTokenizer(None))
