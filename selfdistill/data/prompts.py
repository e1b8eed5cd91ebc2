"""Prompt formats: how one normalised example becomes model input (and, for training, input + target).

Every loader returns rows of the normalised schema (:data:`SCHEMA`); every consumer (pretraining, the
distillation trainer, the decoder sweeps, the lm-eval tasks) renders them through these functions, so the
formats cannot drift apart.

Families (``row["task"]``):
- ``gsm8k``: zero-shot ``"Question: {q}\\nAnswer:"`` followed by the GSM8K solution (ending ``#### N``; lm-eval's
  ``gsm8k`` format); few-shot: the standard 8 chain-of-thought exemplars in ``"Q: ...\\nA: ... The answer is N."``
  form, byte-for-byte lm-eval 0.4.13's ``gsm8k_cot`` prompt.
- ``metamathqa`` and ``synth_gsm``: the paper's plain ``"{query}\\n\\n{response}"``, response ending
  ``The answer is: N``.
- ``bbh`` and ``synth_bbh``: BBH's own ``"Q: {input}\\nA: Let's think step by step.\\n"``; few-shot prepends the
  task's description and 3-shot CoT prompt from ``cot-prompts/{subtask}.txt`` (canary dropped), byte-for-byte
  lm-eval 0.4.13's ``bbh_cot_fewshot`` prompt.
- ``chat``: a free-form user message, given as it is (no framing, no few-shot form), followed by its answer; rows a
  model wrote itself (Magpie-style prompts, :mod:`selfdistill.data.magpie`) are of this family. No reference answer:
  they are trained on, not graded.
"""

from __future__ import annotations

from pathlib import Path

#: Columns of every normalised dataset (all strings).
SCHEMA = ("id", "task", "subtask", "question", "solution", "answer", "group")

STYLES = ("zero_shot", "few_shot")
GSM_FAMILY = ("gsm8k",)
METAMATH_FAMILY = ("metamathqa", "synth_gsm")
BBH_FAMILY = ("bbh", "synth_bbh")
CHAT_FAMILY = ("chat",)

BBH_COT_TRIGGER = "A: Let's think step by step.\n"
BBH_CANARY_SEPARATOR = "-----\n"


def _family(task: str) -> str:
    for fam in (GSM_FAMILY, METAMATH_FAMILY, BBH_FAMILY, CHAT_FAMILY):
        if task in fam:
            return fam[0]
    raise ValueError(f"unknown task {task!r}; known: {GSM_FAMILY + METAMATH_FAMILY + BBH_FAMILY + CHAT_FAMILY}")


def bbh_fewshot_header(cot_prompt_text: str) -> str:
    """The task description and 3-shot part of a BBH ``cot-prompts/*.txt`` file, without the canary line.

    Equals lm-eval 0.4.13's ``bbh_cot_fewshot`` prefix (description, 3 exemplars, ``"\\n\\n"`` after each).
    """
    if BBH_CANARY_SEPARATOR in cot_prompt_text:
        cot_prompt_text = cot_prompt_text.split(BBH_CANARY_SEPARATOR, 1)[1]
    # sports_understanding.txt writes "A: Let's think step by step. <reasoning>" on one line; every other file
    # (and lm-eval's bbh_cot_fewshot, for all 27) breaks the line after the trigger. Follow lm-eval.
    text = cot_prompt_text.replace(BBH_COT_TRIGGER.rstrip("\n") + " ", BBH_COT_TRIGGER)
    # The first line is the one-sentence task description, kept as BBH's reference prompts (and lm-eval) keep it.
    return text.strip() + "\n\n"


def render_prompt(row: dict, *, style: str = "zero_shot", fewshot_prefix: str = "") -> str:
    """The text the model is given for ``row`` (no target). ``fewshot_prefix`` is used when few-shot.

    Few-shot prefixes come from :func:`fewshot_prefix_for` (GSM8K exemplars or a BBH CoT-prompt file).
    """
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; choose from {STYLES}")
    family = _family(row["task"])
    prefix = fewshot_prefix if style == "few_shot" else ""
    if family == "chat":
        if style == "few_shot":
            raise ValueError("chat rows have no few-shot form; use style='zero_shot'")
        return row["question"]
    if family == "gsm8k":
        if style == "few_shot":
            return f"{prefix}Q: {row['question']}\nA:"
        return f"Question: {row['question']}\nAnswer:"
    if family == "metamathqa":
        return f"{prefix}{row['question']}\n\n"
    return f"{prefix}Q: {row['question']}\n{BBH_COT_TRIGGER}"


def render_target(row: dict) -> str:
    """The reference continuation of a zero-shot prompt (what pretraining / SFT / distillation train on)."""
    family = _family(row["task"])
    if not row.get("solution"):
        raise ValueError(f"row {row.get('id')!r} of task {row['task']!r} has no reference solution to train on")
    if family == "gsm8k":
        return " " + row["solution"]
    return row["solution"]


def render_training_text(row: dict) -> tuple[str, str]:
    """``(prompt, target)`` for training: the zero-shot prompt and its reference continuation."""
    return render_prompt(row, style="zero_shot"), render_target(row)


def stop_strings(task: str, *, style: str = "zero_shot") -> list[str]:
    """Strings that end a generation for this task (besides EOS); the text from them on is dropped."""
    family = _family(task)
    if family == "gsm8k":
        return ["\n\nQ:", "\n\nQuestion:", "Question:"] if style == "few_shot" else ["\n\nQuestion:", "Question:"]
    if family == "bbh":
        return ["\n\nQ:"]
    return []


def apply_chat_template(prompt: str, tokenizer) -> str:
    """Wrap a rendered prompt as one user turn with the tokenizer's chat template (generation prompt on)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("chat template requested but the tokenizer has none; use the plain prompt format")
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def fewshot_prefix_for(task: str, subtask: str = "", *, bbh_dir: str | Path | None = None) -> str:
    """The few-shot prefix of a task: GSM8K's 8 CoT exemplars, or the BBH subtask's 3-shot CoT prompt."""
    family = _family(task)
    if family == "gsm8k":
        from selfdistill.data.gsm8k_exemplars import GSM8K_COT_EXEMPLARS  # filled in by the data module

        return "".join(f"Q: {q}\nA: {a}\n\n" for q, a in GSM8K_COT_EXEMPLARS)
    if family == "bbh":
        if bbh_dir is None:
            from selfdistill.paths import default_bbh_dir

            bbh_dir = default_bbh_dir()
        path = Path(bbh_dir) / "cot-prompts" / f"{subtask}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"BBH CoT prompt {path} not found (get BIG-Bench-Hard's cot-prompts/ folder)")
        return bbh_fewshot_header(path.read_text())
    raise ValueError(f"task {task!r} has no few-shot prompt; use style='zero_shot'")
