"""Scoring a model on a normalised dataset under one decoding setting: the core shared by every evaluation.

One function, :func:`evaluate`, turns (model, tokenizer, rows, :class:`DecodeSetting`) into per-sample
records (completion, extracted answer, correctness, tokens, forward passes) and a summary with METHOD.md's
metric definitions: accuracy with its standard error, tokens per forward (per-sample ratio, then mean and
standard deviation across samples, the prefill pass counted) and measured tokens/s at the stated batch size.
The teacher evaluation, the Pareto sweep and the lm-eval adapter all go through it, so they cannot disagree.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from rewards import grade, grader_for_task
from rewards.graders import EXTRACTORS
from selfdistill.decode.acceptance import check_mask_margin
from selfdistill.data.prompts import apply_chat_template, fewshot_prefix_for, render_prompt, stop_strings

STRATEGIES = ("generate", "static", "conf_adapt", "verify")


@dataclass(frozen=True, kw_only=True)
class DecodeSetting:
    """How to decode: ``generate`` (plain ``model.generate`` greedy, the baseline) or one of our strategies."""

    strategy: str = "generate"
    k: int = 1
    threshold: float = 0.9
    k_max: int = 16
    mask_margin: int | None = None  # conf_adapt/verify: adaptive mask count (see selfdistill.decode.decoder)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose from {STRATEGIES}")
        if self.k < 1 or self.k_max < 1:
            raise ValueError(f"k and k_max must be >= 1 (got k={self.k}, k_max={self.k_max})")
        check_mask_margin(self.strategy, self.mask_margin)

    @property
    def name(self) -> str:
        if self.strategy == "static":
            return f"static_k{self.k}"
        margin = "" if self.mask_margin is None else f"_margin{self.mask_margin}"
        if self.strategy == "conf_adapt":
            return f"conf_adapt_{self.threshold:g}_kmax{self.k_max}{margin}"
        if self.strategy == "verify":
            return f"verify_kmax{self.k_max}{margin}"
        return "generate"


@dataclass(kw_only=True)
class Generation:
    """One decoded continuation (stop string and everything after it removed)."""

    text: str
    new_tokens: int
    forward_passes: int


def truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest of ``stops``; unchanged when none occurs."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def decode_batch(model, tokenizer, prompts: Sequence[str], setting: DecodeSetting, *, max_new_tokens: int,
                 stops: Sequence[str] = (), chat: bool = False) -> list[Generation]:
    """Decode a batch of prompt strings (left-padded) with ``setting``; greedy throughout."""
    # A chat-templated prompt already starts with BOS; a plain one gets the tokenizer's usual specials (BOS for Llama).
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left",
                    add_special_tokens=not chat).to(model.device)
    eos = model.generation_config.eos_token_id
    if setting.strategy == "generate":
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                 stop_strings=list(stops) or None, tokenizer=tokenizer if stops else None,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
        gens = []
        for row in out[:, enc.input_ids.shape[1]:].tolist():
            ids = _until_eos(row, eos, tokenizer.pad_token_id)
            gens.append(Generation(text=tokenizer.decode(ids, skip_special_tokens=True), new_tokens=len(ids),
                                   forward_passes=len(ids)))
    else:
        from selfdistill.decode.decoder import mtp_generate

        out = mtp_generate(model, enc.input_ids, enc.attention_mask, strategy=setting.strategy, k=setting.k,
                           k_max=setting.k_max, threshold=setting.threshold, max_new_tokens=max_new_tokens,
                           mask_margin=setting.mask_margin, eos_token_id=eos, stop_strings=list(stops) or None,
                           tokenizer=tokenizer)
        gens = [Generation(text=tokenizer.decode(ids, skip_special_tokens=True), new_tokens=len(ids),
                           forward_passes=passes) for ids, passes in zip(out.sequences, out.forward_passes)]
    for g in gens:
        g.text = truncate_at_stop(g.text, stops)
    return gens


def _until_eos(ids: list[int], eos, pad: int | None) -> list[int]:
    """Generated ids up to and including the first EOS (``generate`` pads finished rows after it)."""
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[:i + 1]
    return [t for t in ids if t != pad] if pad is not None and pad not in eos_ids else ids


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
    """Tokens per forward (mean/std of per-sample ``new_tokens / forward_passes``) and tokens/s of ``records``."""
    n = len(records)
    if n == 0:
        raise ValueError("nothing to summarise: no records")
    tpf = [r["tokens_per_forward"] for r in records]
    new_tokens = sum(r["new_tokens"] for r in records)
    passes = sum(r["forward_passes"] for r in records)
    return {
        "tokens_per_forward_mean": statistics.fmean(tpf),
        "tokens_per_forward_std": statistics.stdev(tpf) if n > 1 else 0.0,
        "new_tokens": new_tokens,
        "forward_passes": passes,
        "seconds": seconds,
        "tokens_per_second": new_tokens / seconds if seconds > 0 else float("nan"),
        "batch_size": batch_size,
    }


def evaluate(model, tokenizer, rows: Sequence[dict], setting: DecodeSetting, *, batch_size: int = 16,
             max_new_tokens: int = 256, style: str = "zero_shot", chat: bool = False,
             progress: bool = False) -> tuple[list[dict], dict]:
    """Decode and grade ``rows`` (normalised schema). Returns ``(records, summary)``; records keep row order.

    Rows are batched in order of prompt length (less padding); only decoding time is counted in tokens/s.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = list(rows)
    prompts = [build_prompt(r, tokenizer, style=style, chat=chat) for r in rows]
    # Batches never mix tasks (each task has its own stop strings); within a task, similar lengths share a batch.
    by_task: dict[str, list[int]] = {}
    for i in sorted(range(len(rows)), key=lambda i: len(prompts[i])):
        by_task.setdefault(rows[i]["task"], []).append(i)
    batches = [idx[j:j + batch_size] for idx in by_task.values() for j in range(0, len(idx), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=setting.name, leave=False)
    records: list[dict | None] = [None] * len(rows)
    seconds = 0.0
    for batch in batches:
        stops = stop_strings(rows[batch[0]]["task"], style=style)
        start = time.perf_counter()
        gens = decode_batch(model, tokenizer, [prompts[i] for i in batch], setting,
                            max_new_tokens=max_new_tokens, stops=stops, chat=chat)
        seconds += time.perf_counter() - start
        for i, gen in zip(batch, gens):
            row = rows[i]
            grader = grader_for_task(row["task"])
            records[i] = {
                "id": row["id"], "task": row["task"], "subtask": row["subtask"], "setting": setting.name,
                "completion": gen.text, "gold": row["answer"],
                "extracted": EXTRACTORS[grader](gen.text), "correct": bool(grade(grader, gen.text, row["answer"])),
                "new_tokens": gen.new_tokens, "forward_passes": gen.forward_passes,
                "tokens_per_forward": gen.new_tokens / max(gen.forward_passes, 1),
            }
    summary = summarize(records, seconds=seconds, batch_size=batch_size)
    summary["setting"] = asdict(setting) | {"name": setting.name}
    return records, summary
