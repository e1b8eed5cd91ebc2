"""The synthetic world: correct answers, BBH's input format, disjoint deterministic splits."""

import random
import re

import pytest

from rewards import grade, grader_for_task
from selfdistill.data.prompts import SCHEMA, render_training_text
from selfdistill.data.synthetic import LEARNT_BBH_SUBTASKS, gen_synth_gsm, synthetic_dataset, synthetic_rows
from selfdistill.data.synthetic_bbh import BBH_GENERATORS, reduce_arith_once, reduce_bool_once


def test_boolean_reduction_hand_cases():
    assert reduce_bool_once("not ( True ) and ( True )".split()) == "not True and ( True )".split()
    assert reduce_bool_once("not not True".split()) == "not False".split()
    assert reduce_bool_once("True or False and False".split()) == "True or False".split()
    assert reduce_bool_once("False or True".split()) == ["True"]


def test_arithmetic_reduction_hand_cases():
    assert reduce_arith_once("-1 + 2 + 9 * 5".split()) == "-1 + 2 + 45".split()
    assert reduce_arith_once("-1 + 2 + 45".split()) == "1 + 45".split()
    assert reduce_arith_once("3 - -4".split()) == ["7"]


@pytest.mark.parametrize("subtask", ["boolean_expressions", "multistep_arithmetic_two"])
def test_generated_answers_match_python(subtask):
    rng = random.Random(123)
    suffix = {"boolean_expressions": " is", "multistep_arithmetic_two": " ="}[subtask]
    for _ in range(500):
        question, solution, answer = BBH_GENERATORS[subtask](rng)
        assert question.endswith(suffix)
        assert str(eval(question[: -len(suffix)])) == answer  # the inputs are valid Python expressions
        assert solution.endswith(f"So the answer is {answer}.")


def test_object_counting_and_web_of_lies_are_consistent():
    rng = random.Random(7)
    for _ in range(300):
        q, sol, ans = BBH_GENERATORS["object_counting"](rng)
        assert re.fullmatch(r"I have .+\. How many [a-z ]+ do I have\?", q)
        totals = re.findall(r"total (\d+)", sol)
        assert totals[-1] == ans
        q, sol, ans = BBH_GENERATORS["web_of_lies"](rng)
        assert q.startswith("Question: ") and q.endswith("tell the truth?") and ans in ("Yes", "No")


def test_gsm_solutions_end_in_metamath_format_and_grade_correct():
    rng = random.Random(0)
    for _ in range(300):
        q, sol, ans = gen_synth_gsm(rng)
        assert sol.endswith(f"The answer is: {ans}")
        assert grade("metamath", sol, ans)


def test_every_solution_grades_correct_with_its_task_grader():
    ds = synthetic_dataset("test", n_per_subtask=50)
    for row in ds:
        assert grade(grader_for_task(row["task"]), row["solution"], row["answer"]), row


def test_splits_are_disjoint_and_deterministic():
    train = synthetic_dataset("train", n_per_subtask=400, seed=3)
    test = synthetic_dataset("test", n_per_subtask=100, seed=3)
    assert set(train.column_names) == set(SCHEMA)
    assert not set(train["question"]) & set(test["question"])
    assert synthetic_dataset("test", n_per_subtask=100, seed=3)["question"] == test["question"]
    assert len(set(test["question"])) == len(test)
    assert set(test["subtask"]) == set(LEARNT_BBH_SUBTASKS) | {"arithmetic_word_problems"}


def test_training_text_is_prompt_plus_solution():
    row = synthetic_rows("synth_bbh", "web_of_lies", split="test", n=1)[0]
    prompt, target = render_training_text(row)
    assert prompt == f"Q: {row['question']}\nA: Let's think step by step.\n" and target == row["solution"]


def test_bad_names_fail_clearly():
    with pytest.raises(ValueError, match="unknown split"):
        synthetic_rows("synth_gsm", "arithmetic_word_problems", split="dev", n=1)
    with pytest.raises(ValueError, match="unknown synthetic task"):
        synthetic_rows("synth_bbh", "word_sorting", split="train", n=1)
