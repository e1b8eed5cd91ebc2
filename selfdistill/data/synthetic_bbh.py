"""``synth_bbh`` of the embedded world (:mod:`selfdistill.data.synthetic`): BIG-Bench-Hard subtasks written in
exactly BBH's *input* format, with step-by-step answers ending ``So the answer is X.``. Each generator maps a seeded
``random.Random`` to ``(question, solution, answer)``; :data:`BBH_GENERATORS` names them by BBH subtask. The
vocabularies are written by hand: no BBH item is used to build them."""

from __future__ import annotations

import random
from collections.abc import Callable

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
