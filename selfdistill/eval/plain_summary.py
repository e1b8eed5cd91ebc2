"""A finished sweep in plain words: what a person reads at the end of ``scripts/pareto.py`` (and ``summary.md``).

Per task, from the flat report rows (:func:`selfdistill.eval.reports.table_rows`): the lossless speed-up (tokens
per forward and measured tokens/s against ``generate``, and whether the text stayed greedy's), the best ConfAdapt
setting within one accuracy point of ``generate``, and where the table and plot are. Tokens/s are as measured:
where the multi-token settings are slower than ``generate`` in wall time, it says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from selfdistill.decode.registry import strategy_class

#: ConfAdapt counts as keeping ``generate``'s quality within this many accuracy points (absolute).
ACCURACY_MARGIN = 0.01
#: ... or as keeping greedy's answers on at least this share of prompts.
AGREEMENT = 0.95


def _lossless(row: dict) -> bool:
    return strategy_class(row["strategy"]).lossless


def _ok(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _speed(row: dict, base: dict | None) -> str:
    """``"2.44 tokens per forward, 1.31x generate's tokens/s"`` (the ratio only where both were measured)."""
    text = f"{row['tokens_per_forward_mean']:.2f} tokens per forward"
    if base is not None and _ok(row.get("tokens_per_second")) and _ok(base.get("tokens_per_second")):
        text += f", {row['tokens_per_second'] / base['tokens_per_second']:.2f}x generate's tokens/s"
    return text


def _lossless_line(row: dict, base: dict | None) -> str:
    n = row["n"]
    same = "" if not _ok(row.get("exact_agreement")) else (
        f"; the same text as greedy on {round(row['exact_agreement'] * n)} of {n} prompts")
    return f"- {row['setting']} (lossless): {_speed(row, base)}{same}."


def _conf_adapt_line(rows: Sequence[dict], base: dict | None) -> str:
    conf = [r for r in rows if r["strategy"] == "conf_adapt"]
    if not conf:
        return ""
    if base is None:
        best = max(conf, key=lambda r: r["tokens_per_forward_mean"])
        return f"- ConfAdapt, fastest: {best['setting']}, {_speed(best, None)}, accuracy {100 * best['accuracy']:.1f}%."
    floor = base["accuracy"] - ACCURACY_MARGIN
    kept = [r for r in conf if r["accuracy"] >= floor - 1e-12]
    if not kept:
        best = max(conf, key=lambda r: r["accuracy"])
        return (f"- ConfAdapt: no threshold stays within {100 * ACCURACY_MARGIN:.0f} point of generate's accuracy "
                f"({100 * base['accuracy']:.1f}%); the most accurate, {best['setting']}, scores "
                f"{100 * best['accuracy']:.1f}% at {_speed(best, base)}.")
    best = max(kept, key=lambda r: r["tokens_per_forward_mean"])
    return (f"- ConfAdapt, best within {100 * ACCURACY_MARGIN:.0f} point of generate's accuracy: {best['setting']}, "
            f"{_speed(best, base)}, accuracy {100 * best['accuracy']:.1f}% (generate {100 * base['accuracy']:.1f}%).")


def _agreement_line(rows: Sequence[dict]) -> str:
    """The fastest ConfAdapt setting that keeps :data:`AGREEMENT` of greedy's answers (the measure that counts
    where accuracy sits at the floor)."""
    conf = [r for r in rows if r["strategy"] == "conf_adapt" and _ok(r.get("answer_agreement"))]
    if not conf:
        return ""
    kept = [r for r in conf if r["answer_agreement"] >= AGREEMENT]
    if not kept:
        best = max(conf, key=lambda r: r["answer_agreement"])
        return (f"- ConfAdapt: none keeps {100 * AGREEMENT:.0f}% of greedy's answers; the closest, {best['setting']}, "
                f"keeps {100 * best['answer_agreement']:.1f}%.")
    best = max(kept, key=lambda r: r["tokens_per_forward_mean"])
    return (f"- ConfAdapt keeping at least {100 * AGREEMENT:.0f}% of greedy's answers: {best['setting']}, "
            f"{best['tokens_per_forward_mean']:.2f} tokens per forward ({100 * best['answer_agreement']:.1f}% kept).")


def _wall_time_note(rows: Sequence[dict], base: dict | None) -> str:
    if base is None or not _ok(base.get("tokens_per_second")):
        return ""
    multi = [r for r in rows if (r["strategy"] == "conf_adapt" or _lossless(r)) and _ok(r.get("tokens_per_second"))]
    slower = [r["setting"] for r in multi if r["tokens_per_second"] < base["tokens_per_second"]]
    if not slower:
        return ""
    which = (", ".join(slower) + (" is" if len(slower) == 1 else " are")) if len(slower) <= 3 else (
        f"{len(slower)} of the {len(multi)} ConfAdapt and lossless settings are")
    return (f"- Measured wall time: {which} slower than generate in tokens/s here, although they need fewer "
            "forwards: a pass with masks costs more than a one-token pass on this hardware.")


def plain_summary(rows_by_task: dict[str, list[dict]], *, root: str, model: str) -> str:
    """The plain-words summary of a sweep (see the module docstring); ``root`` is where its reports are."""
    lines = [f"Sweep of {model}: tables in {root}/frontier.md, plots in {root}/plots/."]
    for task, rows in rows_by_task.items():
        base = next((r for r in rows if r["strategy"] == "generate"), None)
        head = f"{task} (n = {rows[0]['n']})"
        if base is not None:
            head += (f": generate scores {100 * base['accuracy']:.1f}% at 1 token per forward"
                     + (f", {base['tokens_per_second']:.0f} tokens/s" if _ok(base.get("tokens_per_second")) else ""))
        lines += ["", head + "."]
        lines += [_lossless_line(r, base) for r in rows if _lossless(r)]
        lines += [line for line in (_conf_adapt_line(rows, base), _agreement_line(rows), _wall_time_note(rows, base))
                  if line]
        lines.append(f"- Plot: {root}/plots/{task}.png")
    return "\n".join(lines) + "\n"
