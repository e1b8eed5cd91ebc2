"""Scoring a model on a normalised dataset under one decoding setting: the core shared by every evaluation.

One function, :func:`evaluate`, turns (model, tokenizer, rows, :class:`DecodeSetting`) into per-sample
records (completion, extracted answer, correctness, tokens, forward passes) and a summary with METHOD.md's
metric definitions: accuracy with its standard error, tokens per forward (per-sample ratio, then mean and
standard deviation across samples, the prefill pass counted) and measured tokens/s at the stated batch size.
The teacher evaluation, the Pareto sweep and the lm-eval adapter all go through it, so they cannot disagree.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property

from rewards import grade, grader_for_task
from rewards.graders import EXTRACTORS
from selfdistill.decode.engine import generate_many
from selfdistill.decode.registry import Strategy, make_strategy, with_options
from selfdistill.decode.results import draft_precision, speed_stats
from selfdistill.data.prompts import apply_chat_template, fewshot_prefix_for, render_prompt, stop_strings

@with_options()
@dataclass(frozen=True, kw_only=True)
class DecodeSetting:
    """How to decode: a strategy of the registry (:mod:`selfdistill.decode.registry`) and its options (one field
    per option the registry declares, added by :func:`~selfdistill.decode.registry.with_options`).

    ``generate`` (plain ``model.generate`` greedy) is the baseline. Options the strategy does not take stay ``None``
    (and are refused when given); those it takes are filled with its defaults and validated by the registry.
    """

    strategy: str = "generate"

    def __post_init__(self):
        for name, value in self.unit.values().items():
            object.__setattr__(self, name, value)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The option fields: one per option the registry declares (``declared_options``; a test checks)."""
        return tuple(f.name for f in fields(cls) if f.name != "strategy")

    def options(self) -> dict:
        """``{option: value}`` for every option field (``None`` where the strategy does not take it)."""
        return {name: getattr(self, name) for name in self.option_names()}

    @cached_property
    def unit(self) -> Strategy:
        """The validated :class:`~selfdistill.decode.registry.Strategy` of this setting (built once)."""
        return make_strategy(self.strategy, **self.options())

    @property
    def name(self) -> str:
        return self.unit.setting_name

    @classmethod
    def for_model(cls, model, strategy: str, **options) -> DecodeSetting:
        """The setting as ``model`` decodes it: an unset ``k_max`` is the one it was trained on, and ConfAdapt's
        ``calibrated`` says whether it has a confidence map (read in one place,
        :func:`selfdistill.decode.engine.strategy_for`), so the setting's name says what runs."""
        from selfdistill.decode.engine import strategy_for

        unit = strategy_for(model, strategy, **options)
        return cls(strategy=unit.name, **unit.values())


@dataclass(kw_only=True)
class Generation:
    """One decoded continuation (stop string and everything after it removed)."""

    text: str
    new_tokens: int
    forward_passes: int
    draft_checks: list[list[int]] = field(default_factory=list)


def truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest of ``stops``; unchanged when none occurs."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def decode_batch(model, tokenizer, prompts: Sequence[str], setting: DecodeSetting, *, max_new_tokens: int,
                 stops: Sequence[str] = (), chat: bool = False, batch_size: int | None = None) -> list[Generation]:
    """Decode prompt strings with ``setting``, greedy, ``batch_size`` rows in flight (default: all), in order.

    Goes through :func:`selfdistill.decode.engine.generate_many`: continuous batching for our strategies, static
    batches of ``model.generate`` for the baseline.
    """
    # A chat-templated prompt already starts with BOS; a plain one gets the tokenizer's usual specials (BOS for Llama).
    ids = tokenizer(list(prompts), add_special_tokens=not chat).input_ids
    out = generate_many(model, ids, setting.unit, batch_size=batch_size or max(len(ids), 1),
                        max_new_tokens=max_new_tokens, eos_token_id=model.generation_config.eos_token_id,
                        stop_strings=list(stops) or None, tokenizer=tokenizer, pad_token_id=tokenizer.pad_token_id)
    return [Generation(text=truncate_at_stop(text, stops), new_tokens=len(seq), forward_passes=passes,
                       draft_checks=checks)
            for text, seq, passes, checks in zip(out.texts, out.sequences, out.forward_passes,
                                                 out.draft_checks or [[]] * len(out.sequences))]


def build_prompt(row: dict, tokenizer, *, style: str, chat: bool) -> str:
    prefix = fewshot_prefix_for(row["task"], row["subtask"]) if style == "few_shot" else ""
    prompt = render_prompt(row, style=style, fewshot_prefix=prefix)
    return apply_chat_template(prompt, tokenizer) if chat else prompt


def summarize(records: list[dict], *, seconds: float, batch_size: int) -> dict:
    """Accuracy (+ standard error), tokens per forward (mean/std of per-sample ratios), tokens/s."""
    n = len(records)
    if n == 0:
        raise ValueError("nothing to summarise: no records")
    acc = sum(r["correct"] for r in records) / n
    return {
        "n": n,
        "accuracy": acc,
        "accuracy_stderr": math.sqrt(acc * (1 - acc) / (n - 1)) if n > 1 else float("nan"),
    } | speed_summary(records, seconds=seconds, batch_size=batch_size)


def speed_summary(records: list[dict], *, seconds: float, batch_size: int) -> dict:
    """Tokens per forward (:func:`selfdistill.decode.results.speed_stats`), tokens/s and, for records that carry
    their draft checks (sweeps from before they existed do not), draft precision
    (:func:`selfdistill.decode.results.draft_precision`) of ``records``."""
    stats = speed_stats([r["new_tokens"] for r in records], [r["forward_passes"] for r in records], seconds=seconds)
    if all("draft_checks" in r for r in records):
        stats |= draft_precision([r["draft_checks"] for r in records])
    return stats | {"batch_size": batch_size}


def evaluate(model, tokenizer, rows: Sequence[dict], setting: DecodeSetting, *, batch_size: int = 16,
             max_new_tokens: int = 256, style: str = "zero_shot", chat: bool = False,
             progress: bool = False) -> tuple[list[dict], dict]:
    """Decode and grade ``rows`` (normalised schema). Returns ``(records, summary)``; records keep row order.

    Each task's rows are decoded together with ``batch_size`` rows in flight (continuous batching; the
    ``generate`` baseline in static batches), in order of prompt length (less padding); only decoding time is
    counted in tokens/s.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = list(rows)
    prompts = [build_prompt(r, tokenizer, style=style, chat=chat) for r in rows]
    # A decode never mixes tasks (each task has its own stop strings); within a task, similar lengths go together.
    by_task: dict[str, list[int]] = {}
    for i in sorted(range(len(rows)), key=lambda i: len(prompts[i])):
        by_task.setdefault(rows[i]["task"], []).append(i)
    batches = list(by_task.values())
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=setting.name, leave=False)
    records: list[dict | None] = [None] * len(rows)
    seconds = 0.0
    for batch in batches:
        stops = stop_strings(rows[batch[0]]["task"], style=style)
        start = time.perf_counter()
        gens = decode_batch(model, tokenizer, [prompts[i] for i in batch], setting,
                            max_new_tokens=max_new_tokens, stops=stops, chat=chat, batch_size=batch_size)
        seconds += time.perf_counter() - start
        for i, gen in zip(batch, gens):
            row = rows[i]
            grader = grader_for_task(row["task"]) if row["answer"] else None  # no reference: decoded, not graded
            records[i] = {
                "id": row["id"], "task": row["task"], "subtask": row["subtask"], "setting": setting.name,
                "completion": gen.text,  # no gold answer: records are committed, benchmark labels are not
                "extracted": EXTRACTORS[grader](gen.text) if grader else None,
                "correct": bool(grader and grade(grader, gen.text, row["answer"])),
                "new_tokens": gen.new_tokens, "forward_passes": gen.forward_passes,
                "tokens_per_forward": gen.new_tokens / max(gen.forward_passes, 1),
                "draft_checks": gen.draft_checks,
            }
    summary = summarize(records, seconds=seconds, batch_size=batch_size)
    summary["setting"] = asdict(setting) | {"name": setting.name}
    return records, summary
