"""Answer extraction and grading: a table of tricky strings, the registry, and every gold answer of the real
GSM8K test set and all 27 BBH tasks (read from ``selfdistill.paths`` defaults; skipped when absent)."""

from __future__ import annotations

import collections

import pytest

from rewards import EXTRACTORS, GRADERS, grade, grader_for_task
from rewards.graders import (extract_bbh, extract_gsm8k_flexible, extract_gsm8k_strict, extract_metamath,
                             normalize_math_answer)
from selfdistill.paths import default_bbh_dir, default_gsm8k_dir

needs_gsm8k = pytest.mark.skipif(not (default_gsm8k_dir() / "test.jsonl").is_file(),
                                 reason=f"GSM8K data absent at {default_gsm8k_dir()} (needs ../shared/data)")
needs_bbh = pytest.mark.skipif(not default_bbh_dir().is_dir(),
                               reason=f"BBH data absent at {default_bbh_dir()} (needs ../shared/data)")


@pytest.mark.parametrize("text, expected", [
    ("so 21 - 15 = 6", "6"),
    ("She has -3 left.", "-3"),
    ("x = -3.", "-3"),
    ("The total is 1,000 apples", "1000"),
    ("It costs $1,000.50 now.", "1000.50"),
    ("He earns 18 dollars", "18"),
    ("The answer is 18.", "18"),
    ("ratio 0.5", "0.5"),
    ("ratio .5", ".5"),
    ("pages 3-4", "4"),           # a hyphen between digits is not a minus sign
    ("items 1,2,3", "3"),         # a list, not one hundred twenty-three
    ("21 - 15", "15"),            # a spaced minus is subtraction
    ("(-7)", "-7"),
    ("50% of them", "50"),
    ("1,234,567.", "1234567"),
    ("no numbers here...", None),
    ("", None),
])
def test_extract_gsm8k_flexible(text, expected):
    assert extract_gsm8k_flexible(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("blah\n#### 72", "72"),
    ("#### 1,080", "1080"),
    ("#### -10", "-10"),
    ("So 5 + 4 = 9. The answer is 9.", "9"),
    ("The answer is 18", "18"),               # lm-eval's regex would drop the final digit here
    ("The answer is $1,000.", "1000"),
    ("The answer is: 7", "7"),
    ("The answer is -3.", "-3"),
    ("The answer is 3.\n\nQ: ... The answer is 5.", "3"),   # first marker wins (lm-eval take_first)
    ("I think 42", None),                     # strict needs a marker
    ("The answer is unknown", None),
])
def test_extract_gsm8k_strict(text, expected):
    assert extract_gsm8k_strict(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("... The answer is: 18", "18"),
    ("The answer is: 18.", "18"),
    ("The answer is: \\frac{1}{2}", "1/2"),
    ("The answer is: \\dfrac{3}{4}", "3/4"),
    ("The answer is: \\tfrac{3}{4}", "3/4"),
    ("The answer is: -\\frac12", "-1/2"),
    ("The answer is: $\\boxed{7}$.", "7"),
    ("The answer is: \\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
    ("The answer is: x = 5", "5"),
    ("The answer is: y=-3", "-3"),
    ("The answer is: 1,000", "1000"),
    ("The answer is: (1,2)", "(1,2)"),        # a tuple keeps its comma
    ("The answer is: 5 \\text{ cm}", "5"),
    ("The answer is: 10^\\circ", "10"),
    ("The answer is: 50\\%", "50"),
    ("The answer is: \\text{(A)}", "(A)"),
    ("The answer is: \\text{odd}", "odd"),
    ("The answer is: 12\\text{ inches}.", "12"),
    ("The answer is: 3\nQuestion: next. The answer is: 4", "4"),  # the last marker (MetaMathQA's eval)
    ("The answer is 18", None),               # MetaMathQA's marker has a colon
    ("The answer is:", None),
])
def test_extract_metamath(text, expected):
    assert extract_metamath(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Let's see. So the answer is (A).", "(A)"),
    ("So the answer is A.", "(A)"),
    ("So the answer is A)", "(A)"),
    ("So the answer is (B) Frankenstein.", "(B)"),
    ("So the answer is **(C)**.", "(C)"),
    ("so The Answer Is: (D)", "(D)"),
    ("So the answer is Yes.", "Yes"),
    ("So the answer is -219.", "-219"),
    ("So the answer is } ] >.", "} ] >"),
    ("So the answer is Monsters, Inc.", "Monsters, Inc"),
    ("So the answer is \"yes\".", "yes"),
    ("So the answer is A man.", "A man"),     # a sentence starting with "A" is not option (A)
    ("So the answer is (A).\n\nQ: next ... So the answer is (B).", "(A)"),
    ("I am not sure.", None),
])
def test_extract_bbh(text, expected):
    assert extract_bbh(text) == expected


@pytest.mark.parametrize("name, completion, gold, expected", [
    ("gsm8k_flexible", "The answer is 5.0", "5", True),
    ("gsm8k_flexible", "It is .5", "0.5", True),
    ("gsm8k_flexible", "It is 0.5", ".5", True),
    ("gsm8k_flexible", "total $1,000.", "1,000", True),
    ("gsm8k_flexible", "total 1000", "1,080", False),
    ("gsm8k_flexible", "-3.", "-3", True),
    ("gsm8k_flexible", "3", "-3", False),
    ("gsm8k_flexible", "so 18 dollars", "Janet ... #### 18", True),   # gold may be a whole solution
    ("gsm8k_strict", "so 18 dollars", "18", False),
    ("gsm8k_strict", "The answer is 18.", "18", True),
    ("metamath", "The answer is: \\frac{1}{2}", "0.5", True),
    ("metamath", "The answer is: \\dfrac{2}{4}", "\\frac{1}{2}", True),
    ("metamath", "The answer is: 5.0", "5", True),
    ("metamath", "The answer is: x = 5", "5", True),
    ("metamath", "The answer is: 6", "5", False),
    ("metamath", "The answer is: \\sqrt{2}", "\\sqrt{2}", True),
    ("metamath", "The answer is: \\sqrt{3}", "\\sqrt{2}", False),
    ("metamath", "The answer is: 1/0", "1/0", True),           # not a number: compared as strings
    ("metamath", "The answer is: \\text{even}", "\\text{odd}", False),
    ("metamath", "The answer is: \\text{odd}", "odd", True),
    ("metamath", "The answer is: ", "", False),
    ("bbh", "So the answer is (A) option text.", "(A)", True),
    ("bbh", "So the answer is (B).", "(A)", False),
    ("bbh", "So the answer is yes.", "Yes", True),
    ("bbh", "So the answer is valid.", "invalid", False),
    ("bbh", "no marker (A)", "(A)", False),
])
def test_grade_table(name, completion, gold, expected):
    assert grade(name, completion, gold) is expected


def test_normalize_math_answer_is_idempotent_on_canonical_forms():
    for s in ["1/2", "-3", "(1,2)", "\\frac{\\sqrt{3}}{2}", "1000"]:
        assert normalize_math_answer(normalize_math_answer(s)) == normalize_math_answer(s)


def test_registry_and_task_mapping():
    assert set(GRADERS) == set(EXTRACTORS) == {"gsm8k_strict", "gsm8k_flexible", "metamath", "bbh"}
    assert grader_for_task("gsm8k") == "gsm8k_flexible"
    assert grader_for_task("metamathqa") == grader_for_task("synth_gsm") == "metamath"
    assert grader_for_task("bbh") == grader_for_task("synth_bbh") == "bbh"
    with pytest.raises(ValueError, match="known tasks"):
        grader_for_task("mmlu")
    with pytest.raises(ValueError, match="unknown grader"):
        grade("exact", "a", "a")


@needs_gsm8k
@pytest.mark.parametrize("calculator_annotations", [False, True])
def test_gsm8k_test_gold_solutions_grade_correct(calculator_annotations):
    from selfdistill.data.benchmarks import load_gsm8k

    ds = load_gsm8k(split="test", calculator_annotations=calculator_annotations)
    assert len(ds) == 1319
    for name in ("gsm8k_strict", "gsm8k_flexible"):
        wrong = [r["id"] for r in ds if not grade(name, r["solution"], r["answer"])]
        assert wrong == [], f"{name}: {len(wrong)} gold solutions graded wrong, e.g. {wrong[:3]}"
        # and the grader can fail: the same solution against gold + 1 is wrong for every row
        off_by_one = [r["id"] for r in ds if grade(name, r["solution"], str(int(r["answer"]) + 1))]
        assert off_by_one == []


@needs_gsm8k
def test_gsm8k_fewshot_style_answers_grade_correct():
    """The few-shot format ends "The answer is N." instead of "#### N": both graders accept it."""
    from selfdistill.data.benchmarks import load_gsm8k

    ds = load_gsm8k(split="test")
    for r in ds.select(range(200)):
        body = r["solution"].rsplit("####", 1)[0].replace("\n", " ").strip()
        completion = f"{body} The answer is {r['answer']}.\n\nQ: Another question with 12345 in it"
        assert grade("gsm8k_strict", completion, r["answer"]), r["id"]
        assert grade("gsm8k_flexible", completion.split("\n\nQ:")[0], r["answer"]), r["id"]


@needs_bbh
def test_bbh_targets_grade_against_themselves_and_not_other_options():
    from selfdistill.data.benchmarks import load_bbh

    ds = load_bbh()
    options = collections.defaultdict(list)
    for r in ds:
        if r["answer"] not in options[r["subtask"]]:
            options[r["subtask"]].append(r["answer"])
    assert len(options) == 27
    for r in ds:
        gold = r["answer"]
        assert grade("bbh", f"Step by step reasoning. So the answer is {gold}.", gold), (r["id"], gold)
        # another option of the same task (for word_sorting: another row's sorted list)
        other = next(o for o in options[r["subtask"]] if o != gold)
        assert not grade("bbh", f"Step by step reasoning. So the answer is {other}.", gold), (r["id"], gold, other)


@needs_bbh
def test_bbh_fewshot_exemplars_end_with_an_extractable_answer():
    from selfdistill.data.benchmarks import BBH_SUBTASKS

    for name in BBH_SUBTASKS:
        text = (default_bbh_dir() / "cot-prompts" / f"{name}.txt").read_text()
        blocks = text.split("\n\nQ:")[1:]
        assert len(blocks) == 3, name
        assert all(extract_bbh(b) for b in blocks), name
