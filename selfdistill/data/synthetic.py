"""The embedded world: seeded generators of tasks a few-million-parameter model can learn on a CPU.

Two families, both rendered through :mod:`selfdistill.data.prompts` like the real benchmarks:

- ``synth_gsm``: GSM-style arithmetic word problems with short step-by-step solutions ending
  ``The answer is: N`` (MetaMathQA's format, which is what the paper distils on).
- ``synth_bbh``: BIG-Bench-Hard subtasks written in exactly BBH's *input* format, with step-by-step answers
  ending ``So the answer is X.``: ``boolean_expressions``, ``multistep_arithmetic_two``, ``object_counting``,
  ``web_of_lies``. A model trained only on these can be scored on the real BBH test items of the same
  subtasks, a benchmark nobody here wrote. (No BBH item is used to build them: the vocabularies below are
  written by hand.)

Splits are disjoint by construction: every example has a canonical key (its question text); the test split
draws from its own seed stream and the train split rejects any key that hashes into the test bucket.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import datasets

from selfdistill.data.prompts import SCHEMA

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


# ----------------------------------------------------------------------------------------------------------
# synth_bbh: boolean_expressions
# ----------------------------------------------------------------------------------------------------------
def _random_bool_expr(rng: random.Random, operands: int) -> list[str]:
    """A BBH-style token list: literals True/False, unary ``not``, binary ``and``/``or``, parentheses."""
    def atom(n: int) -> list[str]:
        if n == 1:
            toks = [rng.choice(("True", "False"))]
        else:
            left = rng.randint(1, n - 1)
            toks = atom(left) + [rng.choice(("and", "or"))] + atom(n - left)
            if rng.random() < 0.5:
                toks = ["("] + toks + [")"]
        while rng.random() < 0.3:
            toks = ["not"] + toks
        if len(toks) == 1 and rng.random() < 0.2:
            toks = ["("] + toks + [")"]
        return toks
    return atom(operands)


def reduce_bool_once(tokens: list[str]) -> list[str]:
    """One rewrite step of a boolean token list, respecting brackets and ``not`` > ``and`` > ``or``.

    Works inside the innermost bracket pair (or the whole expression): drop brackets around a single literal,
    else apply the innermost ``not``, else the leftmost ``and``, else the leftmost ``or``.
    """
    lo, hi = 0, len(tokens)
    depth_open = None
    for i, t in enumerate(tokens):
        if t == "(":
            depth_open = i
        elif t == ")":
            lo, hi = depth_open + 1, i
            break
    span = tokens[lo:hi]
    if lo > 0 and len(span) == 1:
        return tokens[:lo - 1] + span + tokens[hi + 1:]
    for i in range(len(span) - 1, -1, -1):
        if span[i] == "not" and span[i + 1] in ("True", "False"):
            val = "False" if span[i + 1] == "True" else "True"
            return tokens[:lo] + span[:i] + [val] + span[i + 2:] + tokens[hi:]
    for op in ("and", "or"):
        for i, t in enumerate(span):
            if t == op:
                a, b = span[i - 1] == "True", span[i + 1] == "True"
                val = str(a and b) if op == "and" else str(a or b)
                return tokens[:lo] + span[:i - 1] + [val] + span[i + 2:] + tokens[hi:]
    raise ValueError(f"cannot reduce boolean expression {' '.join(tokens)!r}")


def gen_boolean_expressions(rng: random.Random) -> tuple[str, str, str]:
    tokens = _random_bool_expr(rng, rng.randint(2, 4))
    lines = [" ".join(tokens)]
    cur = tokens
    while len(cur) > 1:
        cur = reduce_bool_once(cur)
        lines.append("= " + " ".join(cur))
    answer = cur[0]
    question = " ".join(tokens) + " is"
    return question, "\n".join(lines) + f"\nSo the answer is {answer}.", answer


# ----------------------------------------------------------------------------------------------------------
# synth_bbh: multistep_arithmetic_two
# ----------------------------------------------------------------------------------------------------------
def reduce_arith_once(terms: list[str]) -> list[str]:
    """One step of ``a op b op c ...`` (ints and ``+ - *``): leftmost ``*`` first, then leftmost ``+``/``-``."""
    for ops in (("*",), ("+", "-")):
        for i, t in enumerate(terms):
            if t in ops and i % 2 == 1:
                a, b = int(terms[i - 1]), int(terms[i + 1])
                val = a * b if t == "*" else a + b if t == "+" else a - b
                return terms[:i - 1] + [str(val)] + terms[i + 2:]
    raise ValueError(f"cannot reduce {' '.join(terms)!r}")


def _arith_group(rng: random.Random, n: int) -> list[str]:
    terms = [str(rng.randint(-9, 9))]
    for _ in range(n - 1):
        terms += [rng.choice(("+", "-", "*")), str(rng.randint(-9, 9))]
    return terms


def _reduce_lines(name: str, terms: list[str]) -> tuple[list[str], int]:
    lines = [f"{name} = " + " ".join(terms)]
    while len(terms) > 1:
        terms = reduce_arith_once(terms)
        lines.append(f"{name} = " + " ".join(terms))
    return lines, int(terms[0])


def gen_multistep_arithmetic_two(rng: random.Random) -> tuple[str, str, str]:
    n = 4
    a_terms, b_terms = _arith_group(rng, n), _arith_group(rng, n)
    op = rng.choice(("+", "-", "*"))
    question = f"(({' '.join(a_terms)}) {op} ({' '.join(b_terms)})) ="
    a_lines, a = _reduce_lines("A", a_terms)
    b_lines, b = _reduce_lines("B", b_terms)
    final = reduce_arith_once([str(a), op, str(b)])[0]
    lines = a_lines + b_lines + [f"A {op} B = {a} {op} {b} = {final}"]
    return question, "\n".join(lines) + f"\nSo the answer is {final}.", final


# ----------------------------------------------------------------------------------------------------------
# synth_bbh: object_counting
# ----------------------------------------------------------------------------------------------------------
# (singular, plural) per category, written by hand.
OBJECT_CATEGORIES: dict[str, tuple[tuple[str, str], ...]] = {
    "musical instruments": (("flute", "flutes"), ("piano", "pianos"), ("trombone", "trombones"),
                            ("violin", "violins"), ("accordion", "accordions"), ("clarinet", "clarinets"),
                            ("drum", "drums"), ("trumpet", "trumpets"), ("guitar", "guitars")),
    "fruits": (("apple", "apples"), ("banana", "bananas"), ("strawberry", "strawberries"), ("peach", "peaches"),
               ("orange", "oranges"), ("plum", "plums"), ("raspberry", "raspberries"), ("grape", "grapes"),
               ("nectarine", "nectarines"), ("blackberry", "blackberries")),
    "vegetables": (("carrot", "carrots"), ("potato", "potatoes"), ("onion", "onions"), ("yam", "yams"),
                   ("cabbage", "cabbages"), ("cauliflower", "cauliflowers"), ("garlic", "garlics"),
                   ("celery stalk", "celery stalks"), ("lettuce head", "lettuce heads"),
                   ("head of broccoli", "heads of broccoli")),
    "animals": (("cat", "cats"), ("dog", "dogs"), ("rabbit", "rabbits"), ("snake", "snakes"), ("pig", "pigs"),
                ("cow", "cows"), ("goat", "goats"), ("chicken", "chickens"), ("duck", "ducks"), ("frog", "frogs"),
                ("mouse", "mice"), ("bear", "bears"), ("snail", "snails"), ("donkey", "donkeys"), ("fish", "fish")),
    "objects": (("chair", "chairs"), ("table", "tables"), ("bed", "beds"), ("couch", "couches"), ("car", "cars"),
                ("microwave", "microwaves"), ("fridge", "fridges"), ("stove", "stoves"), ("lamp", "lamps"),
                ("oven", "ovens"), ("toaster", "toasters")),
}
COUNT_WORDS = {1: "a", 2: "two", 3: "three", 4: "four", 5: "five"}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def gen_object_counting(rng: random.Random) -> tuple[str, str, str]:
    target = rng.choice(tuple(OBJECT_CATEGORIES))
    others = [c for c in OBJECT_CATEGORIES if c != target]
    pool = [(target, it) for it in OBJECT_CATEGORIES[target]]
    distractor_cat = rng.choice(others)
    pool_other = [(distractor_cat, it) for it in OBJECT_CATEGORIES[distractor_cat]]
    # "objects" counts everything, as in BBH; other questions mix in one distractor category.
    n_target = rng.randint(1, min(7, len(pool)))
    n_other = 0 if target == "objects" else rng.randint(0, min(4, len(pool_other)))
    chosen = rng.sample(pool, n_target) + rng.sample(pool_other, n_other)
    rng.shuffle(chosen)
    mentions, lines, total = [], [], 0
    for cat, (sing, plur) in chosen:
        count = 1 if rng.random() < 0.65 else rng.randint(2, 5)
        mentions.append(f"{_article(sing)} {sing}" if count == 1 else f"{COUNT_WORDS[count]} {plur}")
        if cat == target:
            total += count
            lines.append(f"- {sing if count == 1 else plur} ({count}): total {total}")
    listing = mentions[0] if len(mentions) == 1 else ", ".join(mentions[:-1]) + f", and {mentions[-1]}"
    question = f"I have {listing}. How many {target} do I have?"
    cot = (f"We first identify the {target} on the list and keep a running total:\n" + "\n".join(lines)
           + f"\nSo the answer is {total}.")
    return question, cot, str(total)


# ----------------------------------------------------------------------------------------------------------
# synth_bbh: web_of_lies
# ----------------------------------------------------------------------------------------------------------
PEOPLE = ("Alma", "Boris", "Carla", "Dmitri", "Edith", "Felix", "Greta", "Hector", "Ingrid", "Jonas", "Karla",
          "Lorenzo", "Marta", "Nils", "Olga", "Pedro", "Quinn", "Rita", "Stefan", "Tilda", "Ulrich", "Vanya",
          "Walter", "Xenia", "Yusuf", "Zelda", "Agnes", "Bruno", "Celia", "Dario", "Elena", "Fabian", "Gloria",
          "Henrik", "Irma", "Jasper", "Katya", "Lionel", "Mirela", "Nadia", "Oskar", "Petra", "Rosalind",
          "Silas", "Tamsin", "Viggo", "Wanda", "Yvette")


def gen_web_of_lies(rng: random.Random) -> tuple[str, str, str]:
    people = rng.sample(PEOPLE, 5)
    truthful = rng.random() < 0.5
    first = f"{people[0]} {'tells the truth' if truthful else 'lies'}."
    statements, cot = [first], [first]
    for prev, cur in zip(people, people[1:]):
        claims_truth = rng.random() < 0.5
        statements.append(f"{cur} says {prev} {'tells the truth' if claims_truth else 'lies'}.")
        truthful = truthful if claims_truth else not truthful
        cot.append(f"{statements[-1]} So {cur} {'tells the truth' if truthful else 'lies'}.")
    question = "Question: " + " ".join(statements) + f" Does {people[-1]} tell the truth?"
    answer = "Yes" if truthful else "No"
    return question, "\n".join(cot) + f"\nSo the answer is {answer}.", answer


BBH_GENERATORS: dict[str, Callable[[random.Random], tuple[str, str, str]]] = {
    "boolean_expressions": gen_boolean_expressions,
    "multistep_arithmetic_two": gen_multistep_arithmetic_two,
    "object_counting": gen_object_counting,
    "web_of_lies": gen_web_of_lies,
}
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
