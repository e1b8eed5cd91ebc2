"""Fidelity without task accuracy (METHOD.md section 5): how often a setting reproduces the same model's greedy
output, read against the ``generate`` baseline of the same sweep.

- ``answer_agreement``: the extracted answers are equal (what a task metric would see);
- ``exact_agreement``: the completions are identical up to the first stop string (the decoded text, which is what
  a user reads; lossless modes score 1.0 on both by construction).

For a small model whose accuracy is low in absolute terms, these show what the speed costs.
"""

from __future__ import annotations

from collections.abc import Sequence

BASELINE = "generate"


def agreement(records: Sequence[dict], reference: Sequence[dict]) -> dict[str, float | int]:
    """``{"answer_agreement", "exact_agreement", "agreement_n"}`` of ``records`` against ``reference``.

    Both are per-item records (``id``, ``extracted``, ``completion``) of the same items; they are paired by ``id``
    (order does not matter). Raises if the two do not hold the same items.
    """
    ref = {r["id"]: r for r in reference}
    if len(ref) != len(reference) or {r["id"] for r in records} != set(ref) or len(records) != len(ref):
        raise ValueError("agreement needs the same items on both sides (paired by id)")
    if not records:
        raise ValueError("agreement of no items is undefined")
    items = [item_agreement(r["completion"], ref[r["id"]]["completion"],
                            answers=(r["extracted"], ref[r["id"]]["extracted"])) for r in records]
    n = len(records)
    return {"answer_agreement": sum(i["answer_agreement"] for i in items) / n,
            "exact_agreement": sum(i["exact_agreement"] for i in items) / n, "agreement_n": n}


def item_agreement(completion: str, reference: str, *, answers: tuple | None = None) -> dict:
    """One item: ``{"exact_agreement": 1.0|0.0, "answer_agreement": 1.0|0.0|None}``. ``answers``: the two
    extracted answers (either may be ``None``, i.e. none found); ``None`` when the caller has no extractor."""
    same_answer = None if answers is None else float(answers[0] == answers[1])
    return {"exact_agreement": float(completion == reference), "answer_agreement": same_answer}


def add_agreement(summaries: dict[str, list[dict]], records_of) -> dict[str, list[dict]]:
    """Each summary gains its agreement with its task's ``generate`` row (none without that row).

    ``summaries``: ``{task: [summary per setting]}``, each with ``setting.name`` and ``setting.strategy``;
    ``records_of(task, summary) -> list[dict]`` reads that row's stored per-item records. Returns ``summaries``.
    """
    for task, rows in summaries.items():
        base = next((s for s in rows if s["setting"]["strategy"] == BASELINE), None)
        if base is None:
            continue
        reference = records_of(task, base)
        for s in rows:
            s.update(agreement(records_of(task, s), reference))
    return summaries
