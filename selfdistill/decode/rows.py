"""Per-request state of the engine and the bookkeeping after each pass: EOS cut, stop strings, token budget."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from selfdistill.decode.results import Completion, add_checks
from selfdistill.decode.strategies import Outcome


def id_set(ids) -> set[int]:
    """An EOS spec (int, list, tensor or ``None``) as a set of ids."""
    if ids is None:
        return set()
    if isinstance(ids, int):
        return {ids}
    if isinstance(ids, torch.Tensor):
        return {int(i) for i in ids.flatten().tolist()}
    return {int(i) for i in ids}


def default_eos_ids(model) -> set[int]:
    """EOS ids from ``model.generation_config`` (else ``model.config``); an int or a list there."""
    for cfg in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(cfg, "eos_token_id", None) if cfg is not None else None
        if eos is not None:
            return id_set(eos)
    return set()


def cut_at_eos(tokens: list[int], eos_ids) -> tuple[list[int], bool]:
    """``tokens`` through the first EOS (kept) and whether there was one."""
    for j, tok in enumerate(tokens):
        if tok in eos_ids:
            return tokens[:j + 1], True
    return tokens, False


class StopStrings:
    """Detects stop strings in a row's generated text, cutting at token granularity.

    The row ends with the shortest token prefix whose decoded text contains a stop string (the tokens that
    complete it are kept, as ``generate(stop_strings=...)`` does); ``cut_text`` removes the text from the stop
    string on. Only a tail window is decoded each pass so the cost does not grow with the output.
    """

    def __init__(self, stop_strings, tokenizer):
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        self.strings = [s for s in stop_strings if s]
        if not self.strings:
            raise ValueError("stop_strings must contain at least one non-empty string")
        if tokenizer is None:
            raise ValueError("stop_strings need a tokenizer= to decode the generated tokens")
        self.tokenizer = tokenizer
        # A stop string of c characters ending in the new tokens starts at most c tokens before them (each
        # token decodes to >= 1 character); one more token of context keeps word-boundary decoding stable.
        self.window = max(len(s) for s in self.strings) + 1

    def _found(self, ids) -> bool:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return any(s in text for s in self.strings)

    def end_of(self, seq: list[int], prev_len: int) -> int | None:
        """Length of ``seq`` to keep if a stop string appeared in ``seq[prev_len:]``, else ``None``."""
        start = max(0, prev_len - self.window)
        if not self._found(seq[start:]):
            return None
        for n in range(prev_len + 1, len(seq) + 1):
            if self._found(seq[start:n]):
                return n
        return len(seq)

    def cut_text(self, text: str) -> str:
        cuts = [i for i in (text.find(s) for s in self.strings) if i >= 0]
        return text[:min(cuts)] if cuts else text


@dataclass
class RowState:
    """A request in flight: what it feeds next pass (``pending``, the last ``drafts`` provisional), the position
    of ``pending[0]`` (= real tokens cached), the masks it may use (``reach``) and its output so far."""

    request_id: int
    prompt: list[int]
    max_new_tokens: int
    eos_ids: set[int]
    reach: int
    stopper: StopStrings | None = None
    pending: list[int] = field(default_factory=list)
    drafts: int = 0
    pos: int = 0
    output: list[int] = field(default_factory=list)
    per_pass: list[int] = field(default_factory=list)
    reason: str | None = None
    #: slot depth of each pending token in the chunk it was emitted from (1: the real position's own prediction,
    #: >= 2: a mask's), for the draft-precision check of the next pass; empty: nothing to check
    depths: list[int] = field(default_factory=list)
    draft_checks: list[list[int]] = field(default_factory=list)

    def __post_init__(self):
        if not self.pending:
            self.pending = list(self.prompt)

    @property
    def remaining(self) -> int:
        return self.max_new_tokens - len(self.output)

    def check_columns(self) -> list[int]:
        """The pending columns whose logits check the next pending token (emitted from a mask, depth >= 2)."""
        return [j for j in range(len(self.depths) - 1) if self.depths[j + 1] >= 2]

    def record_checks(self, greedy: list[int]) -> None:
        """``greedy[i]``: the model's argmax at :meth:`check_columns` ``[i]``, against the token fed after it."""
        for j, token in zip(self.check_columns(), greedy):
            add_checks(self.draft_checks, self.depths[j + 1], checked=1, agreed=int(token == self.pending[j + 1]))

    def advance(self, outcome: Outcome, strategy) -> list[int]:
        """Apply one pass's outcome: emit (cut at EOS, stop string, budget), set up the next pass. Returns the
        tokens appended to the output."""
        self.pos += outcome.kept
        prev = len(self.output)
        chunk, eos = cut_at_eos(outcome.chunk[:self.remaining], self.eos_ids)
        self.output.extend(chunk)
        self.reason = "eos" if eos else None
        if self.stopper is not None and (end := self.stopper.end_of(self.output, prev)) is not None:
            del self.output[end:]
            self.reason = "stop_string"
        self.per_pass.append(len(self.output) - prev)
        if self.reason is None and self.remaining <= 0:
            self.reason = "length"
        # Drafts beyond the budget could never be emitted: drop them now.
        drafts = min(outcome.drafts, max(self.remaining - 1, 0))
        self.pending, self.drafts = outcome.pending[:len(outcome.pending) - outcome.drafts + drafts], drafts
        if strategy.lossless:  # emitted drafts were verified by the acceptance rule: checked and agreed
            for depth in range(2, min(len(outcome.chunk) - 1, len(self.output) - prev) + 2):
                add_checks(self.draft_checks, depth, checked=1, agreed=1)
            self.depths = []
        else:  # the chunk is fed again next pass, which checks its mask tokens
            self.depths = list(range(1, len(self.pending) + 1)) if self.reason is None else []
        margin = getattr(strategy, "mask_margin", None)
        if margin is not None:
            used = strategy.used_masks(replace(outcome, drafts=drafts))
            self.reach = min(strategy.num_masks, used + margin)
        return self.output[prev:]

    def completion(self, tokenizer=None) -> Completion:
        text = None
        if tokenizer is not None:
            text = tokenizer.decode(self.output, skip_special_tokens=True)
            if self.stopper is not None:
                text = self.stopper.cut_text(text)
        return Completion(self.request_id, list(self.output), list(self.per_pass), self.reason or "length", text,
                          [list(c) for c in self.draft_checks])
