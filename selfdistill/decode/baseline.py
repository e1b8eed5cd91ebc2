"""The ``model.generate`` baselines as :class:`~selfdistill.decode.results.MTPOutput`: greedy ``generate`` in static
batches (what users run today) and transformers' own continuous batching (``model.generate_batch``)."""

from __future__ import annotations

import torch

from selfdistill.decode.registry import Strategy
from selfdistill.decode.results import Completion, MTPOutput
from selfdistill.decode.rows import StopStrings, cut_at_eos, default_eos_ids, id_set


def generate_baseline(model, prompts: list[list[int]], strategy: Strategy, *, batch_size: int, max_new_tokens: int,
                      eos_token_id=None, stop_strings=None, tokenizer=None, pad_token_id: int | None = None
                      ) -> MTPOutput:
    """Greedy decoding of ``prompts`` by ``generate`` (left-padded batches of ``batch_size``, in input order) or,
    for ``generate_cb``, by ``generate_batch`` with ``batch_size`` requests in flight. One forward per token."""
    eos = id_set(eos_token_id) if eos_token_id is not None else default_eos_ids(model)
    pad = pad_token_id if pad_token_id is not None else (min(eos) if eos else 0)
    stopper = StopStrings(stop_strings, tokenizer) if stop_strings else None
    if strategy.name == "generate_cb":
        if stopper is not None:
            raise ValueError("transformers' continuous batching (generate_cb) takes no stop strings")
        rows, calls = _continuous(model, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens, eos=eos,
                                  pad=pad)
    else:
        rows, calls = _static_batches(model, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                      eos=eos, pad=pad, stopper=stopper, tokenizer=tokenizer)
    done = []
    for i, row in enumerate(rows):
        tokens, hit = cut_at_eos(row, eos)
        reason = "eos" if hit else "length"
        text = tokenizer.decode(tokens, skip_special_tokens=True) if tokenizer is not None else None
        if stopper is not None and not hit and any(s in text for s in stopper.strings):
            reason, text = "stop_string", stopper.cut_text(text)
        done.append(Completion(i, tokens, [1] * len(tokens), reason, text))
    return MTPOutput.from_completions(done, model_calls=calls)


@torch.no_grad()
def _static_batches(model, prompts, *, batch_size, max_new_tokens, eos, pad, stopper, tokenizer):
    device = model.get_input_embeddings().weight.device
    rows, calls = [], 0
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=pad, eos_token_id=sorted(eos) or None,
                             stop_strings=stopper.strings if stopper else None,
                             tokenizer=tokenizer if stopper else None)
        new = out[:, width:].tolist()
        calls += max(map(len, new), default=0)
        for row in new:  # generate pads rows that finished early (EOS or stop string) after their end
            end = len(row)
            while stopper is not None and end and row[end - 1] == pad and pad not in eos:
                end -= 1
            rows.append(row[:end])
    return rows, calls


@torch.no_grad()
def _continuous(model, prompts, *, batch_size, max_new_tokens, eos, pad):
    from transformers import ContinuousBatchingConfig, GenerationConfig

    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                              eos_token_id=sorted(eos) or None)
    out = model.generate_batch(inputs=[list(p) for p in prompts], generation_config=config,
                               continuous_batching_config=ContinuousBatchingConfig(max_requests_per_batch=batch_size),
                               progress_bar=False)
    rows = [list(out[f"req_{i}"].generated_tokens) for i in range(len(prompts))]
    return rows, 0  # its forward calls are not observable from outside
