"""Response bodies in OpenAI's formats, usage with tokens per forward, and incremental text for streaming.

:class:`TextStream` turns a request's tokens, as they arrive pass by pass, into text deltas whose concatenation is
exactly the non-streamed text: it withholds what a later token could still change (an incomplete UTF-8 character,
trailing whitespace that tokenizer clean-up may merge, a tail that could be the start of a stop string), and the
final delta is taken from the engine's own completion text.
"""

from __future__ import annotations

import time
import uuid

from selfdistill.decode.results import Completion, draft_precision

FINISH_REASONS = {"eos": "stop", "stop_string": "stop", "length": "length"}


class TextStream:
    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.stops = tokenizer, stops
        self.ids: list[int] = []
        self.sent = ""

    def push(self, new_ids: list[int]) -> str:
        """The text delta that is safe to send after ``new_ids`` (possibly empty)."""
        self.ids += new_ids
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        safe = len(text.rstrip("\ufffd").rstrip())
        for stop in self.stops:
            cut = text.find(stop)
            if cut >= 0:
                safe = min(safe, cut)
            for n in range(min(len(stop) - 1, safe), 0, -1):
                if text[:safe].endswith(stop[:n]):
                    safe -= n
                    break
        if safe <= len(self.sent) or not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent):safe], text[:safe]
        return delta

    def finish(self, final_text: str) -> str:
        """The last delta: the rest of the engine's completion text."""
        return final_text[len(self.sent):] if final_text.startswith(self.sent) else ""


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completions: list[Completion]) -> dict:
    """OpenAI usage plus ``forward_passes``, ``tokens_per_forward`` (all generated tokens over all passes) and
    ``draft_precision`` (:func:`selfdistill.decode.results.draft_precision`: of the emitted mask tokens a later pass
    checked, the share greedy decoding would have chosen; ``null`` when none was checked) with ``draft_checked``."""
    generated = sum(len(c.tokens) for c in completions)
    passes = sum(c.forward_passes for c in completions)
    precision = draft_precision([c.draft_checks for c in completions])
    checked = precision["draft_checked"]
    return {"prompt_tokens": prompt_tokens, "completion_tokens": generated, "total_tokens": prompt_tokens + generated,
            "forward_passes": passes, "tokens_per_forward": generated / passes if passes else 0.0,
            "draft_precision": precision["draft_precision"] if checked else None, "draft_checked": checked}


def completion_body(rid: str, model: str, completions: list[Completion], prompt_tokens: int, *, chat: bool) -> dict:
    """A whole (non-streamed) ``text_completion`` or ``chat.completion``."""
    choices = []
    for i, c in enumerate(completions):
        choice = {"index": i, "finish_reason": FINISH_REASONS[c.finish_reason], "logprobs": None}
        choice |= {"message": {"role": "assistant", "content": c.text}} if chat else {"text": c.text}
        choices.append(choice)
    return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": choices, "usage": usage(prompt_tokens, completions)}


def chunk_body(rid: str, model: str, index: int, *, chat: bool, text: str | None = None,
               finish_reason: str | None = None, role: bool = False) -> dict:
    """One streamed chunk of choice ``index``: a text delta, or (``finish_reason``) its last chunk."""
    if chat:
        delta = ({"role": "assistant", "content": ""} if role else {}) | ({"content": text} if text else {})
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    else:
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
    return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": [choice]}


def usage_chunk(rid: str, model: str, prompt_tokens: int, completions: list[Completion], *, chat: bool) -> dict:
    """The final chunk of ``stream_options.include_usage``: no choices, the usage."""
    return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": [], "usage": usage(prompt_tokens, completions)}
