"""What decoding returns: per request a :class:`Completion`, per engine step an :class:`Update`, per call of
``mtp_generate`` / ``generate_many`` an :class:`MTPOutput`; and the speed statistics every report uses."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Completion:
    """A finished request: generated ids (EOS kept, nothing after), passes it took part in, tokens per pass,
    ``finish_reason`` (``"eos"``, ``"stop_string"``, ``"length"``) and, with a tokenizer, the text (special
    tokens skipped, cut before the first stop string)."""

    request_id: int
    tokens: list[int]
    tokens_per_pass: list[int]
    finish_reason: str
    text: str | None = None
    #: ``[checked, agreed]`` per slot depth (index 0 = slot 2): emitted mask tokens that a later pass checked
    #: against the model's own greedy token at the same prefix, and how many of them it agreed with.
    draft_checks: list[list[int]] = field(default_factory=list)

    @property
    def forward_passes(self) -> int:
        return len(self.tokens_per_pass)


@dataclass
class Update:
    """What one engine step did for one request: the tokens it appended, and its completion once finished."""

    request_id: int
    new_tokens: list[int]
    completion: Completion | None = None

    @property
    def finished(self) -> bool:
        return self.completion is not None


@dataclass
class MTPOutput:
    """Result of :func:`selfdistill.decode.decoder.mtp_generate` / :func:`selfdistill.decode.engine.generate_many`,
    one entry per input row, in input order.

    ``sequences`` are the generated ids only (no prompt); an EOS token that ended a row is kept and nothing
    after it. ``texts`` (only with a tokenizer) are decoded without special tokens and cut right before the
    first stop string. ``tokens_per_pass[b]`` lists how many tokens row ``b`` emitted in each of its passes.
    ``finish_reasons`` are ``"eos"``, ``"stop_string"`` or ``"length"``. ``model_calls`` counts the batched
    forward calls (at batch 1 it equals the row's ``forward_passes``). ``timings`` holds seconds spent in model
    forwards vs. everything else (with ``profile=True``; device-synchronised).
    """

    sequences: list[list[int]]
    forward_passes: list[int]
    tokens_per_forward: list[float]
    finish_reasons: list[str]
    tokens_per_pass: list[list[int]] = field(default_factory=list)
    texts: list[str] | None = None
    model_calls: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    draft_checks: list[list[list[int]]] = field(default_factory=list)

    @classmethod
    def from_completions(cls, completions: list[Completion], *, model_calls: int = 0,
                         timings: dict | None = None) -> MTPOutput:
        texts = [c.text for c in completions]
        return cls(sequences=[c.tokens for c in completions], forward_passes=[c.forward_passes for c in completions],
                   tokens_per_forward=[len(c.tokens) / max(c.forward_passes, 1) for c in completions],
                   finish_reasons=[c.finish_reason for c in completions],
                   tokens_per_pass=[c.tokens_per_pass for c in completions],
                   texts=None if any(t is None for t in texts) else texts, model_calls=model_calls,
                   timings=dict(timings or {}), draft_checks=[c.draft_checks for c in completions])

    def precision(self) -> dict:
        """:func:`draft_precision` over every row."""
        return draft_precision(self.draft_checks)

    def speed(self, *, seconds: float | None = None) -> dict:
        """:func:`speed_stats` of this output."""
        return speed_stats([len(s) for s in self.sequences], self.forward_passes, seconds=seconds)


def speed_stats(new_tokens: list[int], forward_passes: list[int], *, seconds: float | None = None) -> dict:
    """Tokens per forward (METHOD.md: per-sample ``new_tokens / forward_passes``, then mean and std over samples;
    ``pooled``: all tokens over all row-passes, what wall time follows) and, with ``seconds``, tokens/s."""
    if not new_tokens or len(new_tokens) != len(forward_passes):
        raise ValueError("nothing to summarise: no samples (or mismatched lists)")
    tpf = [t / max(p, 1) for t, p in zip(new_tokens, forward_passes)]
    out = {"tokens_per_forward_mean": statistics.fmean(tpf),
           "tokens_per_forward_std": statistics.stdev(tpf) if len(tpf) > 1 else 0.0,
           "tokens_per_forward_pooled": sum(new_tokens) / max(sum(forward_passes), 1),
           "new_tokens": sum(new_tokens), "forward_passes": sum(forward_passes)}
    if seconds is not None:
        out |= {"seconds": seconds, "tokens_per_second": sum(new_tokens) / seconds if seconds > 0 else float("nan")}
    return out


def add_checks(total: list[list[int]], depth: int, *, checked: int, agreed: int) -> None:
    """Add to ``total`` (``[checked, agreed]`` per slot depth, index 0 = slot 2; grown as needed) in place."""
    while len(total) < depth - 1:
        total.append([0, 0])
    total[depth - 2][0] += checked
    total[depth - 2][1] += agreed


def draft_precision(rows: list[list[list[int]]]) -> dict:
    """Draft precision: of the emitted mask tokens that a later pass checked, the share the model's own greedy
    decoding would have chosen at the same prefix, overall and per slot depth (``draft_precision_slot{d}``, with
    ``draft_checked_slot{d}``). ``nan`` where nothing was checked. A completion's last chunk has no later pass and
    is not counted; lossless strategies count their accepted drafts, which their rule verified (precision 1).

    Args:
        rows: per completion, ``[checked, agreed]`` per slot depth (:attr:`Completion.draft_checks`).
    """
    total: list[list[int]] = []
    for row in rows:
        for i, (checked, agreed) in enumerate(row):
            add_checks(total, i + 2, checked=checked, agreed=agreed)
    checked, agreed = sum(c for c, _ in total), sum(a for _, a in total)
    out = {"draft_precision": agreed / checked if checked else float("nan"), "draft_checked": checked}
    for i, (c, a) in enumerate(total):
        out[f"draft_precision_slot{i + 2}"] = a / c if c else float("nan")
        out[f"draft_checked_slot{i + 2}"] = c
    return out
