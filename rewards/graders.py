"""Answer extraction and grading for GSM8K, MetaMathQA-style math and BIG-Bench Hard: pure string functions.

Extractors return the normalised answer string, or ``None`` when the completion has no answer in the expected
form. :func:`grade` compares an extracted answer with a gold answer normalised the same way. Completions should
already be cut at the task's stop strings (``selfdistill.data.prompts.stop_strings``), as lm-eval does, so that a
model that rambles into a new "Q:" is graded on its own answer only.

Choices (and where they differ from lm-eval 0.4.13, whose tables the paper reports):

- ``gsm8k_strict`` accepts both strict forms lm-eval uses: ``#### N`` (task ``gsm8k``, the zero-shot format the
  GSM8K solutions are written in) and ``The answer is N`` (task ``gsm8k_cot``, the few-shot chain-of-thought
  format); the earliest such marker in the completion wins, as lm-eval's ``take_first``. Unlike lm-eval's
  regex it also accepts ``$N`` and ``The answer is: N`` and never truncates the last digit of an answer at the
  very end of the text (lm-eval's ``The answer is (\\-?[0-9\\.\\,]+).`` needs one more character after N).
- ``gsm8k_flexible`` takes the last number of the completion (lm-eval's ``flexible-extract``), but with a real
  number pattern: ``"...."`` or ``","`` are not numbers, a hyphen between digits (``3-4``) is not a minus sign,
  and commas that are not thousands separators end a list (``1,2,3`` -> ``3``, where lm-eval reads ``123``).
- Numbers compare by value (``5.0 == 5``, ``.5 == 0.5``, ``1,000 == 1000``, ``$18 == 18``), where lm-eval
  compares strings after dropping ``,``, ``$`` and a trailing ``.``; the two differ only on answers such as
  ``5.00`` against gold ``5`` (we count it correct, lm-eval does not).
- ``metamath`` reads the text after the *last* ``The answer is:`` (MetaMathQA's own evaluation splits on it and
  takes the last piece) up to the end of that line, then normalises simple LaTeX (``\\boxed``, ``$...$``,
  ``\\dfrac``/``\\tfrac``/``\\frac``, ``\\text{unit}``, ``^\\circ``, ``\\%``) and ``x = 5`` forms; numbers and
  fractions compare by value, anything else as whitespace-free strings.
- ``bbh`` reads the text after the first ``the answer is`` (case-insensitive; lm-eval's ``get-answer`` filter),
  up to the end of the line, drops a trailing period and markdown emphasis, and writes multiple-choice answers
  as ``(A)`` whether the model wrote ``(A)``, ``A``, ``A)`` or ``(A) option text``. Comparison ignores case and
  repeated whitespace (lm-eval's BBH metric is case-sensitive; ``Yes``/``yes`` is the only difference seen).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Callable

# --- numbers -------------------------------------------------------------------------------------------------

# A number as written in text: optional minus (not a hyphen after a word/digit/closing bracket), optional "$",
# then either digits with optional thousands commas and decimals, or a bare ".5".
_NUMBER = re.compile(r"(?:(?<![\w)\]])-)?\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _clean_number(raw: str) -> str | None:
    """``"-$1,000.50"`` -> ``"-1000.50"``; ``None`` when ``raw`` is not a plain number after cleaning."""
    s = raw.replace("$", "").replace(" ", "").rstrip(",")
    if "," in s and not _THOUSANDS.fullmatch(s):
        # "1,2,3" is a list, not one thousand two hundred...: keep its last item.
        s = s.rsplit(",", 1)[1]
    s = s.replace(",", "")
    return s if re.fullmatch(r"-?(?:\d+(?:\.\d+)?|\.\d+)", s) else None


def _as_number(s: str) -> Fraction | None:
    """Exact value of a decimal or ``a/b`` string (``"-3"``, ``".5"``, ``"1000.50"``, ``"3/4"``); else ``None``."""
    s = s.strip()
    m = re.fullmatch(r"(-?)(\d+)/(\d+)", s)
    if m:
        num, den = int(m.group(2)), int(m.group(3))
        return None if den == 0 else Fraction(-num if m.group(1) else num, den)
    if not re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)", s):
        return None
    try:
        return Fraction(Decimal(s))
    except (InvalidOperation, ValueError):
        return None


def _answers_equal(pred: str | None, gold: str | None) -> bool:
    """Numeric equality when both parse as numbers, else exact string equality."""
    if not pred or not gold:  # nothing extracted (or an empty gold) is never a match
        return False
    a, b = _as_number(pred), _as_number(gold)
    if a is not None and b is not None:
        return a == b
    return pred == gold


# --- GSM8K ---------------------------------------------------------------------------------------------------

_GSM_STRICT = re.compile(r"(?:####|[Tt]he answer is:?)\s*(-?\$?\s?(?:\d[\d,]*(?:\.\d+)?|\.\d+))")


def extract_gsm8k_strict(text: str) -> str | None:
    """The number after the first ``#### `` or ``The answer is`` marker, cleaned (``"1,000"`` -> ``"1000"``)."""
    m = _GSM_STRICT.search(text)
    return _clean_number(m.group(1)) if m else None


def extract_gsm8k_flexible(text: str) -> str | None:
    """The last number anywhere in ``text``, cleaned of ``$`` and thousands commas (lm-eval flexible-extract)."""
    matches = _NUMBER.findall(text)
    for raw in reversed(matches):
        cleaned = _clean_number(raw)
        if cleaned is not None:
            return cleaned
    return None


def normalize_gsm8k_gold(gold: str) -> str | None:
    """Gold GSM8K answer: a bare number (``"1,080"``) or a whole solution ending ``#### N``."""
    if "####" in gold:
        gold = gold.rsplit("####", 1)[1]
    return _clean_number(gold.strip().rstrip("."))


# --- MetaMathQA / MATH-style ---------------------------------------------------------------------------------

_METAMATH_MARKER = "The answer is:"


def _strip_braced_command(s: str, command: str) -> str:
    """Replace every ``\\command{body}`` (balanced braces) by ``body``."""
    out, i, key = [], 0, "\\" + command + "{"
    while True:
        j = s.find(key, i)
        if j < 0:
            out.append(s[i:])
            return "".join(out)
        out.append(s[i:j])
        k, depth = j + len(key), 1
        start = k
        while k < len(s) and depth:
            depth += {"{": 1, "}": -1}.get(s[k], 0)
            k += 1
        out.append(s[start:k - 1] if depth == 0 else s[start:])
        i = k


def _frac_to_slash(s: str) -> str:
    """``\\frac{a}{b}`` and ``\\frac ab`` -> ``a/b`` when a and b are plain numbers; other fractions untouched."""
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    return re.sub(r"(-?)\\frac\{\s*(-?\d+)\s*\}\{\s*(\d+)\s*\}", lambda m: f"{m.group(1)}{m.group(2)}/{m.group(3)}", s)


def normalize_math_answer(ans: str) -> str:
    """Canonical form of a short math answer: ``"$\\boxed{\\dfrac{1}{2}}$."`` -> ``"1/2"``, ``"x = 5"`` -> ``"5"``."""
    s = ans.strip()
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", " ")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _strip_braced_command(s, "boxed")
    s = s.strip().rstrip(".").strip()
    s = s.strip("$").strip()
    # trailing units after a number: "5 \text{ cm}" -> "5" (a bare "\text{odd}" answer keeps its word)
    s = re.sub(r"(?<=[\d}])\s*\\text\{\s*[a-zA-Z ]*\}\s*$", "", s).strip()
    s = _strip_braced_command(s, "text")
    s = _strip_braced_command(s, "mbox")
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s).replace("°", "")
    s = s.replace("\\%", "").replace("%", "")
    s = s.strip().rstrip(".").strip()
    # "x = 5" / "y=-3": a single variable assignment keeps only the value (not "x+y=5", not equations).
    m = re.fullmatch(r"[a-zA-Z]\s*=\s*(.+)", s)
    if m:
        s = m.group(1).strip()
    s = _frac_to_slash(s)
    s = re.sub(r"\s+", "", s)
    if _THOUSANDS.fullmatch(s.replace("$", "")):
        s = s.replace(",", "")
    if re.fullmatch(r"-?\$?(?:\d+(?:\.\d+)?|\.\d+)", s):
        s = s.replace("$", "")
    return s


def extract_metamath(text: str) -> str | None:
    """The normalised answer after the last ``The answer is:`` (to the end of that line), else ``None``."""
    idx = text.rfind(_METAMATH_MARKER)
    if idx < 0:
        return None
    tail = text[idx + len(_METAMATH_MARKER):].strip()
    line = tail.split("\n", 1)[0].strip()
    if not line:
        return None
    return normalize_math_answer(line)


def normalize_metamath_gold(gold: str) -> str:
    """Gold MetaMathQA answer: bare (``"\\frac{1}{2}"``) or a whole response ending ``The answer is: X``."""
    if _METAMATH_MARKER in gold:
        return extract_metamath(gold) or ""
    return normalize_math_answer(gold)


# --- BIG-Bench Hard ------------------------------------------------------------------------------------------

_BBH_MARKER = re.compile(r"the answer is\s*:?\s*", re.IGNORECASE)
_MC_OPTION = re.compile(r"\(?([A-R])\)(?:\s.*)?|([A-R])(?:[.:]\s.*)?", re.DOTALL)


def normalize_bbh_answer(ans: str) -> str:
    """``"**(B) Frankenstein**."`` -> ``"(B)"``; free-form answers keep their text minus a trailing period."""
    s = ans.strip().replace("**", "").strip()
    s = s.rstrip(".").strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'`":  # 'So the answer is "yes".'
        s = s[1:-1].strip()
    m = _MC_OPTION.fullmatch(s)
    if m:
        return f"({m.group(1) or m.group(2)})"
    return " ".join(s.split())


def extract_bbh(text: str) -> str | None:
    """The normalised answer after the first ``So the answer is`` (to the end of that line), else ``None``."""
    m = _BBH_MARKER.search(text)
    if not m:
        return None
    line = text[m.end():].split("\n", 1)[0].strip()
    return normalize_bbh_answer(line) if line else None


# --- registry ------------------------------------------------------------------------------------------------


def grade_gsm8k_strict(completion: str, gold: str) -> bool:
    return _answers_equal(extract_gsm8k_strict(completion), normalize_gsm8k_gold(gold))


def grade_gsm8k_flexible(completion: str, gold: str) -> bool:
    return _answers_equal(extract_gsm8k_flexible(completion), normalize_gsm8k_gold(gold))


def grade_metamath(completion: str, gold: str) -> bool:
    return _answers_equal(extract_metamath(completion), normalize_metamath_gold(gold))


def grade_bbh(completion: str, gold: str) -> bool:
    pred = extract_bbh(completion)
    return pred is not None and pred.casefold() == normalize_bbh_answer(gold).casefold()


#: grader name -> ``fn(completion, gold) -> bool``.
GRADERS: dict[str, Callable[[str, str], bool]] = {
    "gsm8k_strict": grade_gsm8k_strict,
    "gsm8k_flexible": grade_gsm8k_flexible,
    "metamath": grade_metamath,
    "bbh": grade_bbh,
}

#: grader name -> ``fn(completion) -> str | None`` (the extracted, normalised answer).
EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "gsm8k_strict": extract_gsm8k_strict,
    "gsm8k_flexible": extract_gsm8k_flexible,
    "metamath": extract_metamath,
    "bbh": extract_bbh,
}

_TASK_GRADER = {"gsm8k": "gsm8k_flexible", "metamathqa": "metamath", "synth_gsm": "metamath",
                "bbh": "bbh", "synth_bbh": "bbh"}


def grader_for_task(task: str) -> str:
    """Default grader name of a task (``gsm8k`` -> ``gsm8k_flexible``; ``gsm8k_strict`` is also registered)."""
    if task not in _TASK_GRADER:
        raise ValueError(f"no grader for task {task!r}; known tasks: {sorted(_TASK_GRADER)}")
    return _TASK_GRADER[task]


def grade(name: str, completion: str, gold: str) -> bool:
    """Whether ``completion`` answers ``gold`` correctly under grader ``name`` (a key of :data:`GRADERS`)."""
    if name not in GRADERS:
        raise ValueError(f"unknown grader {name!r}; choose from {sorted(GRADERS)}")
    return GRADERS[name](completion, gold)
