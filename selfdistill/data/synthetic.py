"""The embedded world: seeded generators of tasks a few-million-parameter model can learn on a CPU.

Two families, both rendered through :mod:`selfdistill.data.prompts` like the real benchmarks:

- ``synth_gsm``: GSM-style arithmetic word problems with short step-by-step solutions ending
  ``The answer is: N`` (MetaMathQA's format, which is what the paper distils on).
- ``synth_bbh``: BIG-Bench-Hard subtasks written in exactly BBH's *input* format, with step-by-step answers
  ending ``So the answer is X.``: ``boolean_expressions``, ``multistep_arithmetic_two``, ``object_counting``,
  ``web_of_lies``. A model trained only on these can be scored on the real BBH test items of the same
  subtasks, a benchmark nobody here wrote. Its generators live in :mod:`selfdistill.data.synthetic_bbh`.

Splits are disjoint by construction: every example has a canonical key (its question text); the test split
draws from its own seed stream and the train split rejects any key that hashes into the test bucket.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import datasets

from selfdistill.data.prompts import SCHEMA
from selfdistill.data.synthetic_bbh import BBH_GENERATORS

SPLITS = ("train", "test")
TEST_BUCKET_PERCENT = 10  # keys whose hash falls in this bucket belong to the test split only

# ----------------------------------------------------------------------------------------------------------
# synth_gsm: word problems
# ----------------------------------------------------------------------------------------------------------
NAMES = ("Mia", "Noah", "Ava", "Liam", "Emma", "Omar", "Zoe", "Ivan", "Lena", "Ravi", "Sara", "Tom", "Nina",
         "Leo", "Maya", "Ben", "Aria", "Kai", "Ruth", "Sam", "Hana", "Eli", "Jade", "Finn", "Tara", "Hugo",
         "Iris", "Owen", "Lucy", "Amir", "Rosa", "Jack", "Nora", "Theo", "Cleo", "Max", "Ines", "Paul", "Vera",
         "Dan", "Elsa", "Raj", "Ada", "Joel", "Kim", "Luis", "Anna", "Yuki")
ITEMS = ("apples", "pencils", "stickers", "marbles", "books", "cookies", "shells", "cards", "stamps", "eggs",
         "coins", "flowers", "balloons", "candles", "toys", "buttons")
CONTAINERS = ("boxes", "bags", "jars", "packs", "baskets", "crates")


def _pronoun(name: str, rng: random.Random) -> str:
    return rng.choice(("she", "he", "they"))


def _gsm_add_sub(rng: random.Random) -> tuple[str, list[str], int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    start, gain = rng.randint(5, 60), rng.randint(2, 40)
    loss = rng.randint(1, start + gain - 1)
    friend = rng.choice([n for n in NAMES if n != name])
    q = (f"{name} has {start} {item}. {name} gets {gain} more {item} and then gives {loss} {item} to {friend}. "
         f"How many {item} does {name} have now?")
    mid = start + gain
    steps = [f"{name} starts with {start} {item}.",
             f"After getting {gain} more, {name} has {start} + {gain} = {mid} {item}.",
             f"After giving away {loss}, {name} has {mid} - {loss} = {mid - loss} {item}."]
    return q, steps, mid - loss


def _gsm_groups(rng: random.Random) -> tuple[str, list[str], int]:
    name, item, box = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(CONTAINERS)
    groups, per, extra = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 20)
    q = (f"{name} buys {groups} {box} of {item}. Each of the {box} holds {per} {item}. "
         f"{name} already had {extra} {item}. How many {item} does {name} have in total?")
    bought = groups * per
    steps = [f"The {box} hold {groups} * {per} = {bought} {item}.",
             f"Adding the {extra} {item} {name} already had gives {bought} + {extra} = {bought + extra} {item}."]
    return q, steps, bought + extra


def _gsm_price(rng: random.Random) -> tuple[str, list[str], int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    qty, price = rng.randint(2, 9), rng.randint(2, 15)
    paid = qty * price + rng.randint(0, 30)
    paid = max(paid, qty * price)
    cost = qty * price
    q = (f"{name} buys {qty} {item} that cost ${price} each. {name} pays with ${paid}. "
         f"How much change, in dollars, does {name} get back?")
    steps = [f"The {item} cost {qty} * {price} = {cost} dollars.",
             f"The change is {paid} - {cost} = {paid - cost} dollars."]
    return q, steps, paid - cost


def _gsm_share(rng: random.Random) -> tuple[str, list[str], int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    people, each = rng.randint(2, 9), rng.randint(2, 12)
    kept = rng.randint(1, 15)
    total = people * each + kept
    q = (f"{name} has {total} {item}. {name} keeps {kept} {item} and shares the rest equally among {people} "
         f"friends. How many {item} does each friend get?")
    rest = total - kept
    steps = [f"{name} shares {total} - {kept} = {rest} {item}.",
             f"Each friend gets {rest} / {people} = {each} {item}."]
    return q, steps, each


def _gsm_two_people(rng: random.Random) -> tuple[str, list[str], int]:
    a, b = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    first, times, fewer = rng.randint(2, 12), rng.randint(2, 5), rng.randint(1, 9)
    second = first * times
    q = (f"{a} has {first} {item}. {b} has {times} times as many {item} as {a}. "
         f"{a} then loses {min(fewer, first)} {item}. How many {item} do {a} and {b} have together?")
    fewer = min(fewer, first)
    left = first - fewer
    steps = [f"{b} has {first} * {times} = {second} {item}.",
             f"{a} has {first} - {fewer} = {left} {item} left.",
             f"Together they have {left} + {second} = {left + second} {item}."]
    return q, steps, left + second


GSM_TEMPLATES: tuple[Callable[[random.Random], tuple[str, list[str], int]], ...] = (
    _gsm_add_sub, _gsm_groups, _gsm_price, _gsm_share, _gsm_two_people)


def gen_synth_gsm(rng: random.Random) -> tuple[str, str, str]:
    """``(question, solution, answer)`` of one GSM-style problem; the solution ends ``The answer is: N``."""
    q, steps, ans = rng.choice(GSM_TEMPLATES)(rng)
    return q, "\n".join(steps) + f"\nThe answer is: {ans}", str(ans)


#: Real BBH subtasks a model trained on this world can be scored on.
LEARNT_BBH_SUBTASKS = tuple(BBH_GENERATORS)
SUBTASKS: dict[str, tuple[str, ...]] = {"synth_gsm": ("arithmetic_word_problems",),
                                        "synth_bbh": LEARNT_BBH_SUBTASKS}


# ----------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------
def _in_test_bucket(key: str) -> bool:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < TEST_BUCKET_PERCENT


def _generator(task: str, subtask: str) -> Callable[[random.Random], tuple[str, str, str]]:
    if task == "synth_gsm":
        return gen_synth_gsm
    if task == "synth_bbh" and subtask in BBH_GENERATORS:
        return BBH_GENERATORS[subtask]
    raise ValueError(f"unknown synthetic task {task!r}/{subtask!r}; known: {SUBTASKS}")


def synthetic_rows(task: str, subtask: str, *, split: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` distinct rows of one synthetic (sub)task in the normalised schema, disjoint across splits.

    Deterministic in ``(task, subtask, split, n, seed)``. Raises if the space of distinct problems is too
    small to supply ``n`` of them.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    gen = _generator(task, subtask)
    rng = random.Random(f"{task}/{subtask}/{split}/{seed}")
    rows, seen, attempts = [], set(), 0
    want_test = split == "test"
    while len(rows) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"could only make {len(rows)} distinct {task}/{subtask} {split} rows of {n}")
        question, solution, answer = gen(rng)
        if question in seen or _in_test_bucket(question) != want_test:
            continue
        seen.add(question)
        rows.append({"id": f"{task}/{subtask}/{split}/{len(rows)}", "task": task, "subtask": subtask,
                     "question": question, "solution": solution, "answer": answer, "group": question})
    return rows


def synthetic_dataset(split: str, *, n_per_subtask: int, seed: int = 0,
                      tasks: tuple[str, ...] = ("synth_gsm", "synth_bbh"), shuffle: bool = True) -> datasets.Dataset:
    """All synthetic (sub)tasks of ``tasks``, ``n_per_subtask`` rows each, as one ``datasets.Dataset``."""
    rows = []
    for task in tasks:
        if task not in SUBTASKS:
            raise ValueError(f"unknown synthetic task {task!r}; known: {tuple(SUBTASKS)}")
        for subtask in SUBTASKS[task]:
            rows += synthetic_rows(task, subtask, split=split, n=n_per_subtask, seed=seed)
    if shuffle:
        random.Random(seed).shuffle(rows)
    return datasets.Dataset.from_dict({col: [r[col] for r in rows] for col in SCHEMA})
