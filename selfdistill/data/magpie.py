"""Self-generated prompts (Magpie, Xu et al. 2024; the seed paper's data idea): the model writes its own user turns.

Given only the chat template's text up to where a user message begins (:func:`user_turn_template`), an instruction
model continues with a plausible user message; sampled many times, that is a prompt set that needs no dataset and
follows the model's own distribution. Each message is then answered greedily like any on-policy question
(``scripts/onpolicy_data.py --dataset magpie``), and the answers train the student with ``dataset:
onpolicy:<folder>`` as the GSM8K ones do.

Pure pieces here (the template's split, which sampled messages are kept, ids, rows); the recipe
(:mod:`selfdistill.eval.onpolicy_data`) samples and decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

#: The ``--dataset`` name of self-generated prompts, the ``task`` of their rows and their ``subtask``.
MAGPIE, CHAT_TASK = "magpie", "chat"
_SENTINEL = "\u2063MAGPIE\u2063"  # text no template writes: where the user's message goes


class UserTurn(NamedTuple):
    """The chat template around one user message: ``prefix`` + message + ``end``."""

    prefix: str
    end: str


def user_turn_template(tokenizer) -> UserTurn:
    """Split the tokenizer's chat template at the user message of a one-turn chat: ``prefix`` is everything before
    it (BOS, a default system prompt, the user header), ``end`` the text that closes the turn (e.g. ``<|im_end|>``).
    Raises for a tokenizer without a chat template, or one whose end of turn is empty."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("Magpie prompts need a chat template: the model writes the user turn that the template "
                         "opens; this tokenizer has none")
    text = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], tokenize=False,
                                         add_generation_prompt=False)
    if text.count(_SENTINEL) != 1:
        raise ValueError("the chat template does not write the user message once and verbatim")
    prefix, after = text.split(_SENTINEL)
    if not after.strip():
        raise ValueError("the chat template closes a user turn with no text: a sampled message would never end")
    return UserTurn(prefix, after.strip())


def clean_message(text: str, *, end: str, min_chars: int = 8) -> str | None:
    """The sampled user message in ``text`` (cut at the turn's ``end``), or ``None`` when it never ended (no
    ``end``: cut off at the token limit), or is shorter than ``min_chars`` once stripped."""
    if end not in text:
        return None
    message = text.split(end, 1)[0].strip()
    return message if len(message) >= min_chars else None


def magpie_ids(first: int, count: int, *, seed: int) -> list[str]:
    """The ids of samples ``first`` .. ``first + count - 1`` of a run seeded by ``seed``: ``magpie-<seed>-<n>``."""
    return [f"{MAGPIE}-{seed}-{n:06d}" for n in range(first, first + count)]


def magpie_question_row(row_id: str, message: str) -> dict:
    """A sampled message as a row of the normalised schema (task ``chat``; no solution or answer yet)."""
    return {"id": row_id, "task": CHAT_TASK, "subtask": MAGPIE, "question": message, "solution": "", "answer": "",
            "group": row_id}


def magpie_rows(records: Sequence[dict]) -> list[dict]:
    """Training rows of a Magpie folder's records (each holds its ``question``, the model's own text): the finished
    ones, the first of each repeated question only (a small model repeats itself), in order."""
    seen: set[str] = set()
    out = []
    for rec in records:
        key = " ".join(rec["question"].lower().split())
        if rec["finished"] and key not in seen:
            seen.add(key)
            out.append(magpie_question_row(rec["id"], rec["question"]) | {"solution": rec["completion"]})
    return out
